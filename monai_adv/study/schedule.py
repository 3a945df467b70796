"""Run tasks that depend on each other, up to ``jobs`` at a time: the study's bundle stages on a machine with cores to
spare (adversarial training beside the attack sweep and the triage, one bundle's training beside another's sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["run_with_dependencies"]

Task = TypeVar("Task", bound=Hashable)
Result = TypeVar("Result")


def run_with_dependencies(
    tasks: Sequence[Task],
    upstream: Callable[[Task], Iterable[Task]],
    run: Callable[[Task], Result],
    jobs: int = 1,
    on_interrupt: Callable[[], None] | None = None,
) -> list[Result]:
    """``run(task)`` for every task once its ``upstream`` tasks (among ``tasks``) have returned; results in the order
    of ``tasks``.

    With ``jobs`` 1 the tasks run one after another in the order given, in the calling thread. With more, up to
    ``jobs`` run at once in worker threads; a ready task that more tasks wait on (directly or not) starts first, ties
    in the order given. When a task raises, no further task starts; the running ones finish and the first error is
    raised. When the caller is interrupted (Ctrl-C, SIGTERM turned into an exception), ``on_interrupt`` is called
    (it should stop what the running tasks wait on, e.g. their child processes), the running tasks are waited for,
    and the interruption is raised.

    Raises:
        ValueError: ``jobs`` below 1, a task named twice, or dependencies that form a cycle.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if len(set(tasks)) != len(tasks):
        raise ValueError("a task is named twice")
    known = set(tasks)
    needs = {task: [u for u in upstream(task) if u in known] for task in tasks}
    order = _topological(tasks, needs)
    if jobs == 1:
        results = {task: run(task) for task in order}
        return [results[task] for task in tasks]

    waiting_on = {task: 0 for task in tasks}  # how many tasks wait on each, directly or not
    for task in reversed(order):
        for u in needs[task]:
            waiting_on[u] = max(waiting_on[u], waiting_on[task] + 1)
    rank = {task: (-waiting_on[task], i) for i, task in enumerate(tasks)}
    results: dict[Task, Result] = {}
    pending = list(tasks)
    running: dict[Future, Task] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while pending or running:
                if failure is None:
                    ready = sorted((t for t in pending if all(u in results for u in needs[t])), key=rank.get)
                    for task in ready[: jobs - len(running)]:
                        pending.remove(task)
                        running[pool.submit(run, task)] = task
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    error = future.exception()
                    if error is None:
                        results[task] = future.result()
                    elif failure is None:
                        failure = error
        except BaseException:
            if on_interrupt is not None:
                on_interrupt()
            wait(running)
            raise
    if failure is not None:
        raise failure
    return [results[task] for task in tasks]


def _topological(tasks: Sequence[Task], needs: dict[Task, list[Task]]) -> list[Task]:
    """The tasks in an order where each comes after its upstream tasks, else in the order given."""
    placed: list[Task] = []
    done: set[Task] = set()
    while len(placed) < len(tasks):
        ready = [t for t in tasks if t not in done and all(u in done for u in needs[t])]
        if not ready:
            raise ValueError(f"the dependencies of {[t for t in tasks if t not in done]} form a cycle")
        placed.append(ready[0])
        done.add(ready[0])
    return placed
