"""``run_with_dependencies``: the study's stages in dependency order, several at a time when asked."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from monai_adv.study.schedule import run_with_dependencies

# a -> b, a -> c -> d: the shape of one bundle's stages (train -> attack, train -> adversarial training -> compare)
NEEDS = {"a": [], "b": ["a"], "c": ["a"], "d": ["c"]}


def recorder():
    events: list[str] = []
    lock = threading.Lock()

    def run(task: str) -> str:
        with lock:
            events.append(f"start {task}")
        with lock:
            events.append(f"end {task}")
        return task.upper()

    return events, run


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_every_task_runs_once_after_its_upstream_and_results_keep_the_given_order(jobs):
    events, run = recorder()
    assert run_with_dependencies(list(NEEDS), NEEDS.get, run, jobs) == ["A", "B", "C", "D"]
    assert sorted(e for e in events if e.startswith("start")) == ["start a", "start b", "start c", "start d"]
    for task, upstream in NEEDS.items():
        for u in upstream:
            assert events.index(f"end {u}") < events.index(f"start {task}"), (u, task)


def test_one_job_runs_in_the_given_order_in_the_calling_thread():
    threads = []
    run_with_dependencies(["b", "a", "c", "d"], NEEDS.get, lambda t: threads.append((t, threading.get_ident())), 1)
    assert threads == [(t, threading.get_ident()) for t in ("a", "b", "c", "d")]  # b waits for a


def test_two_jobs_run_independent_tasks_at_the_same_time_longest_chain_first():
    """After a, both c (on the chain to d) and b run at once: each waits at a barrier only the other can pass."""
    barrier = threading.Barrier(2, timeout=30)
    started: list[str] = []

    def run(task: str) -> str:
        started.append(task)
        if task in ("b", "c"):
            barrier.wait()  # raises BrokenBarrierError unless the other one runs at the same time
        return task

    assert run_with_dependencies(list(NEEDS), NEEDS.get, run, 2) == ["a", "b", "c", "d"]
    assert started[0] == "a" and set(started[1:3]) == {"b", "c"} and started[3] == "d"
    # with one free worker, the task more tasks wait on starts first
    started.clear()
    run_with_dependencies(["x", "y", "z", "w"], {"x": [], "y": [], "z": [], "w": ["z"]}.get,
                          lambda t: started.append(t), 2)
    assert set(started[:2]) == {"z", "x"}


def test_a_failure_starts_nothing_more_lets_the_running_finish_and_is_raised():
    finished: list[str] = []
    release = threading.Event()

    def run(task: str) -> str:
        if task == "b":
            release.wait(30)
            finished.append(task)
            return task
        if task == "c":
            release.set()
            raise RuntimeError("c failed")
        finished.append(task)
        return task

    with pytest.raises(RuntimeError, match="c failed"):
        run_with_dependencies(list(NEEDS), NEEDS.get, run, 2)
    assert finished == ["a", "b"]  # b (running) finished; d (after c) never started


def test_an_interruption_stops_the_running_tasks_through_the_callback_and_is_raised():
    stop = threading.Event()
    running = threading.Barrier(3, timeout=30)  # two tasks and the interrupter

    def run(task: str) -> str:
        running.wait()
        stop.wait(30)
        return task

    def interrupt() -> None:
        running.wait()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the main thread, waiting for the tasks, raises

    # Ctrl-C's own handler: pytest started with '&' from a non-interactive shell inherits SIGINT ignored (so CI's
    # runs did, twice)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_with_dependencies(["p", "q", "r"], lambda t: [], run, 2, on_interrupt=stop.set)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.is_set()  # the tasks would have waited 30 s for it


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="jobs must be at least 1, got 0"):
        run_with_dependencies(["a"], lambda t: [], str, 0)
    with pytest.raises(ValueError, match="a task is named twice"):
        run_with_dependencies(["a", "a"], lambda t: [], str, 2)
    with pytest.raises(ValueError, match=r"\['a', 'b'\] form a cycle"):
        run_with_dependencies(["a", "b"], {"a": ["b"], "b": ["a"]}.get, str, 2)
