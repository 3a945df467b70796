"""The torch CPU thread count of a bundle run in the demo profile.

On the CPU, torch's float sums (convolutions, matrix products) split their work by thread, so the same training on one
thread and on two ends in different models; on the demo's fine texture cue that can be the difference between a model
that learns the cue and one that does not. The demo profile therefore runs on a stated thread count: ``OMP_NUM_THREADS``
when it is set (the study runner sets it from ``--threads``), else one thread, the count at which the demo profile was
measured (``scripts/demo_seeds.py``) and at which its tiny models also run fastest.
"""

from __future__ import annotations

import os

__all__ = ["DEMO_THREADS", "threads_from_environment"]

DEMO_THREADS = 1
"""Threads of a demo-profile bundle run when ``OMP_NUM_THREADS`` is not set."""


def threads_from_environment(default: int = DEMO_THREADS) -> int:
    """``OMP_NUM_THREADS`` as a positive integer when it is set and not empty, else ``default``.

    Raises ``ValueError`` naming the variable when it is set to anything else (``0``, ``-2``, ``4,2``, ``all``).
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"OMP_NUM_THREADS={value!r}: expected a positive whole number of CPU threads (or unset it: "
                         f"the demo profile then runs on {default})")
    return int(value)
