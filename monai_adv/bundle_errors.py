"""Make a bad-input error the last line a failed bundle run prints.

MONAI's ``python -m monai.bundle run`` evaluates every step as a config expression and wraps whatever it raises in
``RuntimeError: Failed to evaluate ConfigExpression ...``; the :class:`~monai_adv.io.DataError` (or
:class:`~monai_adv.checkpoints.CheckpointError`) naming the bad file or item is then buried in the middle of a long
chained traceback. Every bundle config imports this module (``"$import monai_adv.bundle_errors"`` among its
``imports``), which installs :func:`excepthook`: the full traceback is printed as before, then the monai_adv error
once more as the final line, e.g.::

    monai_adv.io.DataError: nodule-17 (/data/missing.dcm): image file not found

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
import sys
import threading
import time
from types import TracebackType

from monai_adv.io import DataError

__all__ = ["bad_input_error", "excepthook", "install", "finish_pool_workers", "POOL_WORKER_WAIT_S"]

# the longest the exit waits for thread-pool workers to finish their task (one image's transforms)
POOL_WORKER_WAIT_S = 300.0


def bad_input_error(error: BaseException | None) -> DataError | None:
    """The first :class:`~monai_adv.io.DataError` in ``error``'s chain (itself, its ``__cause__`` or
    ``__context__``, recursively), or ``None``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DataError):
            return error
        error = error.__cause__ or error.__context__
    return None


def excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, previous=None
) -> None:
    """Print the traceback with ``previous`` (default ``sys.__excepthook__``), then, when ``exc`` wraps a
    :class:`~monai_adv.io.DataError`, that error's type and message as the last line on stderr."""
    (previous or sys.__excepthook__)(exc_type, exc, tb)
    error = bad_input_error(exc)
    if error is not None and error is not exc:
        sys.stderr.write(f"\n{type(error).__module__}.{type(error).__qualname__}: {error}\n")
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
