"""Make a bad-input error the last line a failed bundle run prints.

MONAI's ``python -m monai.bundle run`` evaluates every step as a config expression and wraps whatever it raises in
``RuntimeError: Failed to evaluate ConfigExpression ...``; the :class:`~monai_adv.io.DataError` (or
:class:`~monai_adv.checkpoints.CheckpointError`) naming the bad file or item is then buried in the middle of a long
chained traceback. Every bundle config imports this module (``"$import monai_adv.bundle_errors"`` among its
``imports``), which installs :func:`excepthook`: the full traceback is printed as before, then the monai_adv error
once more as the final line, e.g.::

    monai_adv.io.DataError: nodule-17 (/data/missing.dcm): image file not found

Other programs are unaffected unless they import this module or call :func:`install`.
"""

from __future__ import annotations

import sys
from types import TracebackType

from monai_adv.io import DataError

__all__ = ["bad_input_error", "excepthook", "install"]


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


def install() -> None:
    """Chain :func:`excepthook` in front of the current ``sys.excepthook``; calling it again changes nothing."""
    if getattr(sys.excepthook, "_monai_adv_bad_input", False):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        excepthook(exc_type, exc, tb, previous=previous)

    hook._monai_adv_bad_input = True  # type: ignore[attr-defined]
    sys.excepthook = hook


install()
