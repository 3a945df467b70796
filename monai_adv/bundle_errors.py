"""Make a bad-input or cannot-write error the last line a failed bundle run prints.

MONAI's ``python -m monai.bundle run`` evaluates every step as a config expression and wraps whatever it raises in
``RuntimeError: Failed to evaluate ConfigExpression ...``; the :class:`~monai_adv.io.DataError` (or
:class:`~monai_adv.checkpoints.CheckpointError`) naming the bad file or item, or the ``OSError`` of a full disk, is
then buried in the middle of a long chained traceback. Every bundle config imports this module
(``"$import monai_adv.bundle_errors"`` among its ``imports``), which installs :func:`excepthook`: the full traceback
is printed as before, then the buried error once more as the final line on stderr, e.g.::

    monai_adv.io.DataError: nodule-17 (/data/missing.dcm): image file not found
    error: cannot write /out/models/model.pt: No space left on device

It also makes such a run end with exit status 1 and that line last, instead of ``terminate called without an active
exception`` and SIGABRT (exit -6). MONAI's ``CacheDataset`` fills its cache with a thread pool; when one image fails,
the pool is terminated but its worker thread is not joined, and it goes on transforming the next image inside torch
with the GIL released. If the interpreter is finalizing when that torch call returns, CPython ends the daemon thread
with ``pthread_exit``, whose forced unwinding through torch's C++ frames (pybind11's ``gil_scoped_release``
destructor, ``noexcept``) calls ``std::terminate``. :func:`finish_pool_workers`, run at exit (before finalization,
for an uncaught exception and for ``sys.exit`` alike), waits for every thread-pool worker still inside a task.

Other programs are unaffected unless they import this module or call :func:`install`.
"""

from __future__ import annotations

import atexit
import errno
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

from monai_adv.io import DataError
from monai_adv.utils import WriteError

__all__ = [
    "bad_input_error", "write_error", "final_line", "excepthook", "install", "finish_pool_workers",
    "POOL_WORKER_WAIT_S",
]

# the longest the exit waits for thread-pool workers to finish their task (one image's transforms)
POOL_WORKER_WAIT_S = 300.0

WRITE_ONLY_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EFBIG) if code is not None
)
"""Error numbers only a write can raise (full disk, quota, read-only file system, file too large)."""

ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
"""Permission errors: raised by reads as well as writes, so reported as "cannot write" only from a
:class:`~monai_adv.utils.WriteError` (our writers), else as "cannot access"."""


def _chain(error: BaseException | None) -> list[BaseException]:
    """``error``, its ``__cause__`` or ``__context__``, recursively, outermost first (each once)."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _first(error: BaseException | None, accept: Callable[[BaseException], bool]) -> BaseException | None:
    return next((e for e in _chain(error) if accept(e)), None)


def bad_input_error(error: BaseException | None) -> DataError | None:
    """The first :class:`~monai_adv.io.DataError` in ``error``'s chain (itself, its ``__cause__`` or
    ``__context__``, recursively), or ``None``."""
    return _first(error, lambda e: isinstance(e, DataError))  # type: ignore[return-value]


def _is_write_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and (
        isinstance(error, WriteError) or error.errno in WRITE_ONLY_ERRNOS or error.errno in ACCESS_ERRNOS
    )


def write_error(error: BaseException | None) -> OSError | None:
    """The first ``OSError`` in ``error``'s chain that says a file could not be written or accessed: a
    :class:`~monai_adv.utils.WriteError` (raised by the project's writers, naming the output), or any ``OSError``
    whose errno is in :data:`WRITE_ONLY_ERRNOS` or :data:`ACCESS_ERRNOS`; ``None`` when there is none."""
    return _first(error, _is_write_error)  # type: ignore[return-value]


def _describe(error: OSError) -> str:
    """``error: cannot write <path>: <reason>`` (``cannot access`` for a permission error not known to be a write);
    the path is left out when the error names none."""
    reason = error.strerror or str(error)
    path = error.filename
    verb = "access" if error.errno in ACCESS_ERRNOS and not isinstance(error, WriteError) else "write"
    return f"error: cannot {verb} {path}: {reason}" if path is not None else f"error: cannot {verb}: {reason}"


def final_line(exc: BaseException) -> str | None:
    """The line :func:`excepthook` adds after the traceback of ``exc``, or ``None``.

    The first error of ``exc``'s chain (outermost first) that is a :class:`~monai_adv.io.DataError` or a write
    error (:func:`write_error`) decides: ``<module>.<class>: <message>`` for a bad input,
    ``error: cannot write <path>: <reason>`` for a write error. ``None`` when there is none, or when it is ``exc``
    itself (the traceback already ends with it).
    """
    error = _first(exc, lambda e: isinstance(e, DataError) or _is_write_error(e))
    if error is None or error is exc:
        return None
    if isinstance(error, DataError):
        return f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    return _describe(error)  # type: ignore[arg-type]


def excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, previous=None
) -> None:
    """Print the traceback with ``previous`` (default ``sys.__excepthook__``), then, when ``exc`` wraps a
    :class:`~monai_adv.io.DataError` or a write error, :func:`final_line` as the last line on stderr."""
    (previous or sys.__excepthook__)(exc_type, exc, tb)
    line = final_line(exc)
    if line is not None:
        sys.stderr.write(f"\n{line}\n")
        sys.stderr.flush()


def _busy_pool_workers() -> list[threading.Thread]:
    """Worker threads of ``multiprocessing.pool.ThreadPool`` s that are running a task: their innermost Python frame
    is the task's, not the pool's worker loop (which waits for the next task or has finished)."""
    pool = sys.modules.get("multiprocessing.pool")
    if pool is None:  # no pool was ever made
        return []
    frames = sys._current_frames()
    busy = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or getattr(thread, "_target", None) is not pool.worker:
            continue
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if frame is not None and frame.f_code is not pool.worker.__code__:
            busy.append(thread)
    return busy


def finish_pool_workers(timeout: float = POOL_WORKER_WAIT_S, poll: float = 0.01) -> list[str]:
    """Wait until no thread-pool worker thread is running a task, at most ``timeout`` seconds.

    A terminated pool's workers (MONAI's ``CacheDataset`` after a failed image) end after their current task; an
    idle worker of a pool still open waits in the pool's queue, in C code that CPython can end safely, and is not
    waited for. Registered with :mod:`atexit` by :func:`install`.

    Returns:
        the names of the workers still running a task when ``timeout`` ran out (empty when none was left).
    """
    deadline = time.monotonic() + timeout
    busy = _busy_pool_workers()
    while busy and time.monotonic() < deadline:
        time.sleep(poll)
        busy = _busy_pool_workers()
    return [thread.name for thread in busy]


_exit_wait_registered = False


def install() -> None:
    """Chain :func:`excepthook` in front of the current ``sys.excepthook`` and register :func:`finish_pool_workers`
    to run at exit; calling it again changes nothing."""
    global _exit_wait_registered
    if not _exit_wait_registered:
        atexit.register(finish_pool_workers)
        _exit_wait_registered = True
    if getattr(sys.excepthook, "_monai_adv_bad_input", False):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        excepthook(exc_type, exc, tb, previous=previous)

    hook._monai_adv_bad_input = True  # type: ignore[attr-defined]
    sys.excepthook = hook


install()
