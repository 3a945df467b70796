"""Run the study: every bundle's stages in order, then the comparison of data sets and the report, skipping what is
already done and resuming what was interrupted.

Layout of the output folder::

    <output>/study_state.json                 ledger of the study stages (compare_datasets, report) and the run count
    <output>/<bundle>/study_state.json        ledger of the bundle's stages
    <output>/<bundle>/<stage>/                a completed stage: its outputs and <stage>.log
    <output>/<bundle>/.<stage>.partial/       a stage running, or interrupted (removed or resumed on the next run)
    <output>/compare_datasets/                susceptibility.json / .csv / .png
    <output>/report/                          report.md and its PNG figures

Every stage folder and working folder also holds the study's manifest (``.study_manifest.json``,
:mod:`~monai_adv.study.ownership`).

A stage runs into its ``.partial`` folder, which is renamed to ``<stage>/`` only when the stage has finished and
written everything it must; then the ledger records it. A study killed at any moment (SIGKILL included) therefore
leaves completed stages intact and at most one partial folder. On the next run a training stage whose partial
folder holds a resume file written with the same inputs continues after the last completed epoch
(:class:`~monai_adv.handlers.TrainingResume`); any other partial folder is discarded and its stage runs again.
The bundle runs are child processes that the kernel kills with the study (Linux ``PR_SET_PDEATHSIG``), and a lock
file keeps two studies out of the same output folder.

The study deletes only what it wrote. Before any stage runs, and again whenever it replaces or removes a folder, it
checks that everything there is its own (:func:`~monai_adv.study.ownership.foreign_files`); otherwise it stops with a
:class:`StudyError` naming the foreign files. It also removes the temporary files a killed ledger write left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_adv.study.ledger import LEDGER_NAME, Ledger, code_digest, fingerprint, library_versions, sha256_file
from monai_adv.study.ownership import (
    MANIFEST_NAME, Kind, describe, foreign_files, remove_stale_temporaries, start_working_folder, write_manifest,
)
from monai_adv.study.paper_figures import comparable_dataset
from monai_adv.study.schedule import run_with_dependencies
from monai_adv.study.setup import BundleSetup, ForeignBundle, prepare_bundle, prepare_foreign_bundle
from monai_adv.study.stages import BUNDLE_STAGES, RESUME_FILE, STUDY_STAGES, BundleStage
from monai_adv.utils import atomic_write_json

__all__ = ["StudyError", "StageOutcome", "StudyResult", "run_study"]

PACKAGE = Path(__file__).resolve().parents[1]
MARKER = "stage_inputs.json"
OVERRIDES = "study_overrides.json"


class StudyError(RuntimeError):
    """A stage failed or the study cannot start; the message names the bundle and stage."""


@dataclass
class StageOutcome:
    """What happened to one stage in this run: ``"skipped"`` (done before, inputs unchanged), ``"ran"`` or
    ``"resumed"`` (a training stage continued after ``resumed_after_epoch``)."""

    bundle: str | None
    stage: str
    status: str
    seconds: float = 0.0
    resumed_after_epoch: int | None = None


@dataclass
class StudyResult:
    """The report's path and what every stage did."""

    output: Path
    report: Path
    outcomes: list[StageOutcome] = field(default_factory=list)


@dataclass
class _Context:
    output: Path
    run: int
    code: str
    study_code: str
    versions: dict[str, str]
    log: Callable[[str], None]
    command: str
    threads: int | None = None
    # stages may run in worker threads: the ledgers and ownership manifests are read and written under this lock, and
    # the bundle runs under way are kept to be stopped on an interruption
    lock: threading.Lock = field(default_factory=threading.Lock)
    children: set[subprocess.Popen] = field(default_factory=set)

    def stop_children(self) -> None:
        with self.lock:
            for child in self.children:
                child.kill()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when the study process dies (also by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    parent = os.getpid()

    def set_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the study died before prctl took effect
            os._exit(1)

    return set_death_signal


@contextmanager
def _study_lock(output: Path) -> Iterator[None]:
    output.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    handle = open(output / ".study.lock", "w")  # noqa: SIM115 - held for the whole study
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"another study is running in {output}") from None
        yield
    finally:
        handle.close()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    """Delete ``path`` (a folder with everything in it); only for paths :func:`_check_own` accepted."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _partial(parent: Path, stage: str) -> Path:
    """A stage's working folder."""
    return parent / f".{stage}.partial"


def _aside(final: Path) -> Path:
    """Where a stage's published folder is moved while it is replaced."""
    return final.with_name(f".{final.name}.old")


def _places(parent: Path, stage: str) -> list[tuple[Path, Kind, str]]:
    """Every folder of ``stage`` (under ``parent``) the study may replace or remove, with its kind."""
    final = parent / stage
    return [
        (final, "published", stage), (_aside(final), "published", stage), (_partial(parent, stage), "partial", stage),
    ]


def _check_own(places: Iterable[tuple[Path, Kind, str]], output: Path) -> None:
    """Raise a :class:`StudyError` naming every file in ``places`` that the study did not write."""
    foreign = [f for path, kind, stage in places for f in foreign_files(path, kind, stage)]
    if foreign:
        raise StudyError(
            f"{output} holds files the study did not write, in folders it replaces or removes: "
            f"{describe(foreign, output)}. The study deletes only what it wrote: move them out of {output}, or choose "
            "another --output."
        )


def _remove_working_folder(partial: Path, stage: str, output: Path) -> None:
    """Delete a stage's working folder after checking that it is the study's."""
    _check_own([(partial, "partial", stage)], output)
    _remove(partial)


def _publish(partial: Path, final: Path, stage: str, output: Path) -> None:
    """Replace ``final`` by ``partial`` with renames (the old folder is moved aside first, then deleted), after
    listing ``partial``'s files in its manifest and checking that ``final`` and a leftover aside folder hold only
    the study's files."""
    write_manifest(partial, stage)
    aside = _aside(final)
    _check_own([(final, "published", stage), (aside, "published", stage)], output)
    _remove(aside)
    if final.exists():
        os.rename(final, aside)
    os.rename(partial, final)
    _remove(aside)


_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt): \S")


def _first_errors(path: Path, shown: int = 3) -> list[str]:
    """The first distinct exception lines (``SomeError: message``) of a log: the cause, which MONAI's config parser
    wraps in ``RuntimeError: Failed to evaluate ConfigExpression`` at the end of the log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found = [line for line in dict.fromkeys(text.splitlines()) if _RAISED.match(line)]
    return [line if len(line) <= 600 else line[:600] + " ..." for line in found[:shown]]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# bundle stages ------------------------------------------------------------------------------------------------------


def _stage_inputs(setup: BundleSetup, stage: BundleStage, ledger: Ledger, ctx: _Context) -> tuple[str, dict[str, Any]]:
    reads = {}
    for config_id, (upstream, relative) in stage.reads.items():
        digest = ledger.output_hashes(upstream).get(f"{upstream}/{relative}")
        if digest is None:
            raise StudyError(f"{setup.name}: stage {stage.name} needs {upstream}/{relative}, which is not recorded")
        reads[config_id] = digest
    payload = {
        "stage": stage.name,
        "bundle": setup.name,
        "profile": setup.profile,
        "configs": [[f.name, sha256_file(f)] for f in setup.config_files(stage)],
        "overrides": setup.overrides_read_by(stage),
        "data": setup.data_digest,
        "reads": reads,
        "checkpoint": sha256_file(setup.checkpoint) if adopts_checkpoint(setup, stage) else None,
        # another bundle's own training and evaluation run none of monai_adv's code
        "code": ctx.code if setup.runs_package_code(stage) else None,
        "versions": ctx.versions,
        "threads": ctx.threads,
    }
    return fingerprint(payload), payload


def adopts_checkpoint(setup: BundleSetup, stage: BundleStage) -> bool:
    """Whether ``stage`` copies the user's trained model (``--checkpoint``) instead of running the bundle."""
    return setup.checkpoint is not None and "ckpt_path" in stage.writes


def _adopt_checkpoint(source: Path, target: Path, log_path: Path) -> int:
    """Copy a trained model into the stage's folder (the later stages read it there, as a trained one); 0."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(f"copied {source} (SHA-256 {sha256_file(source)}) instead of training\n")
    return 0


def _run_bundle(
    setup: BundleSetup, stage: BundleStage, partial: Path, resumed: int | None, log_path: Path, ctx: _Context
) -> int:
    """One ``python -m monai.bundle run`` of the stage's configs and the study's overrides, logged to ``log_path``,
    from the bundle's working folder; its exit status."""
    files = [str(f) for f in setup.config_files(stage)] + [str(partial / OVERRIDES)]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files)]
    what = "resuming" if resumed is not None else "running"
    ctx.log(f"[{setup.name}] {stage.name} ({stage.step}): {what}"
            + (f" after epoch {resumed}" if resumed is not None and resumed >= 0 else "") + " ...")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if ctx.threads:
        env.update(OMP_NUM_THREADS=str(ctx.threads), MKL_NUM_THREADS=str(ctx.threads))
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(f"=== study run {ctx.run}: {' '.join(command)}\n")
        handle.flush()
        with ctx.lock:
            child = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, cwd=setup.cwd, env=env, preexec_fn=_die_with_parent()
            )
            ctx.children.add(child)
        try:
            return child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            with ctx.lock:
                ctx.children.discard(child)


def _run_bundle_stage(setup: BundleSetup, stage: BundleStage, ledger: Ledger, ctx: _Context) -> StageOutcome:
    with ctx.lock:
        started = _start_bundle_stage(setup, stage, ledger, ctx)
    if isinstance(started, StageOutcome):
        return started
    partial, inputs, resumed = started
    log_path = partial / f"{stage.name}.log"
    start = time.perf_counter()
    if adopts_checkpoint(setup, stage):
        ctx.log(f"[{setup.name}] {stage.name}: using the trained model {setup.checkpoint}")
        code = _adopt_checkpoint(setup.checkpoint, partial / stage.writes["ckpt_path"], log_path)
    else:
        code = _run_bundle(setup, stage, partial, resumed, log_path, ctx)
    seconds = time.perf_counter() - start
    if code:
        raise StudyError(
            f"{setup.name}: stage {stage.name} failed (exit {code}); end of {log_path}:\n{_tail(log_path)}"
            + "".join(f"\nraised in the run: {line}" for line in _first_errors(log_path))
        )
    products = setup.products(stage)
    missing = [p for p in products if not (partial / p).is_file()]
    if missing:
        raise StudyError(
            f"{setup.name}: stage {stage.name} finished without writing {', '.join(missing)} (see {log_path})"
        )
    with ctx.lock:
        for name in (RESUME_FILE, Path(RESUME_FILE).with_suffix(".json").name):
            _remove(partial / name)
        _publish(partial, ledger.folder / stage.name, stage.name, ctx.output)
        ledger.record(
            stage.name, inputs, [f"{stage.name}/{p}" for p in products], seconds=round(seconds, 1), run=ctx.run,
            resumed_after_epoch=resumed,
        )
    ctx.log(f"[{setup.name}] {stage.name}: done in {seconds:.0f} s")
    return StageOutcome(setup.name, stage.name, "resumed" if resumed is not None else "ran", seconds, resumed)


def _start_bundle_stage(
    setup: BundleSetup, stage: BundleStage, ledger: Ledger, ctx: _Context
) -> StageOutcome | tuple[Path, str, int | None]:
    """The skipped outcome of a stage done before with the same inputs; else its working folder made ready (a
    resumable one kept), with its inputs' fingerprint and the epoch it resumes after."""
    folder = ledger.folder
    inputs, payload = _stage_inputs(setup, stage, ledger, ctx)
    partial = _partial(folder, stage.name)
    if ledger.is_done(stage.name, inputs):
        _remove_working_folder(partial, stage.name, ctx.output)
        ctx.log(f"[{setup.name}] {stage.name}: done before, inputs unchanged: skipped")
        return StageOutcome(setup.name, stage.name, "skipped")
    ledger.forget(stage.name)
    resumed = None
    if partial.exists():
        marker = _read_json(partial / MARKER) or {}
        if setup.resumable(stage) and marker.get("inputs") == inputs and (partial / RESUME_FILE).is_file():
            from monai_adv.handlers.resume import resume_epoch

            resumed = resume_epoch(partial / RESUME_FILE)
            resumed = -1 if resumed is None else resumed
            remove_stale_temporaries(partial, [MARKER, OVERRIDES, MANIFEST_NAME])
        else:
            _remove_working_folder(partial, stage.name, ctx.output)
    start_working_folder(partial, stage.name)
    atomic_write_json(partial / MARKER, {"stage": stage.name, "inputs": inputs, "payload": payload})
    overrides = {
        **setup.data_overrides(),
        **setup.overrides_for(stage.name),
        "output_dir": str(partial),
        **{cid: str(folder / upstream / rel) for cid, (upstream, rel) in stage.reads.items()},
        **{cid: str(partial / rel) for cid, rel in stage.writes.items()},
    }
    atomic_write_json(partial / OVERRIDES, overrides)
    return partial, inputs, resumed


# study stages -------------------------------------------------------------------------------------------------------


def _run_study_stage(
    name: str, payload: Mapping[str, Any], products: Sequence[str], build: Callable[[Path], None], ledger: Ledger,
    ctx: _Context,
) -> StageOutcome:
    inputs = fingerprint(payload)
    partial = _partial(ctx.output, name)
    if ledger.is_done(name, inputs):
        _remove_working_folder(partial, name, ctx.output)
        ctx.log(f"[study] {name}: done before, inputs unchanged: skipped")
        return StageOutcome(None, name, "skipped")
    ledger.forget(name)
    _remove_working_folder(partial, name, ctx.output)
    start_working_folder(partial, name)
    start = time.perf_counter()
    try:
        build(partial)
    except Exception as error:
        raise StudyError(f"study stage {name} failed: {error}") from error
    _publish(partial, ctx.output / name, name, ctx.output)
    seconds = time.perf_counter() - start
    ledger.record(name, inputs, [f"{name}/{p}" for p in products], seconds=round(seconds, 1), run=ctx.run)
    ctx.log(f"[study] {name}: done in {seconds:.0f} s")
    return StageOutcome(None, name, "ran", seconds)


def _bundle_outputs(ledger: Ledger) -> dict[str, str]:
    return {path: digest for stage in BUNDLE_STAGES for path, digest in ledger.output_hashes(stage.name).items()}


def run_study(
    bundles: Sequence[str | ForeignBundle],
    output: str | os.PathLike,
    bundles_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = print,
    command: str = "scripts/run_study.py",
    threads: int | None = -1,
    jobs: int = -1,
) -> StudyResult:
    """Run (or finish) the study for ``bundles`` into ``output`` and write the report.

    Args:
        bundles: in report order, names of our bundles (in ``bundles_dir``) or another bundle
            (:class:`~monai_adv.study.setup.ForeignBundle`: run as it is, with the data folder its configs read).
        output: the output folder (created).
        bundles_dir: the folder holding our bundles.
        dataset_dir: a prepared data set for every bundle of ours (its ``datalist.json``), or the folder another
            bundle reads as ``dataset_dir``; ``None`` uses our demo data, or the other bundle's own ``dataset_dir``.
        profile: ``"demo"`` (``configs/demo.json``: the CPU profile) or ``"paper"``; default ``"demo"`` on the demo
            data and ``"paper"`` on a prepared data set. Another bundle has one profile, its own (``"bundle"``).
        overrides: ``--set`` values grouped by stage (``"*"`` for all), from
            :func:`~monai_adv.study.setup.parse_override`.
        log: where progress lines go.
        command: how the study was started, for the report's header.
        threads: CPU threads of each bundle run (``OMP_NUM_THREADS``); ``None`` leaves ``OMP_NUM_THREADS`` as it is
            (torch's default when unset, except that the demo profile's configs then run on one thread); the default
            ``-1`` means 1 in the demo profile (tiny models run fastest on one thread, and several threads on a
            shared machine can be ten times slower) and torch's default in the paper profile. Results can differ
            in the last bits between thread counts, so it is part of every stage's fingerprint.
        jobs: how many bundle stages may run at once (stages that do not read each other's outputs: adversarial
            training beside the attack sweep and the triage, another bundle's training); the default ``-1`` means
            one per CPU core available to the study, at most 4, in the demo profile (its stages run on one thread
            each), and 1 in the paper profile (one GPU, or torch's threads over every core). The results do not
            depend on it.

    Raises:
        StudyError: naming the bundle and stage that failed; or, before any stage runs, naming the files in the
            study's folders (stage folders, working folders) that it did not write and would delete.
    """
    if not bundles:
        raise StudyError("no bundle to study")
    if dataset_dir is not None and len(bundles) > 1:
        raise StudyError("--dataset_dir holds one data set: study one bundle at a time with it")
    if profile is not None and any(isinstance(b, ForeignBundle) for b in bundles):
        raise StudyError(f"--profile {profile}: profiles are monai-adv's bundles'; another bundle runs as it is")
    profile = profile or ("demo" if dataset_dir is None else "paper")
    if threads == -1:
        threads = 1 if profile == "demo" else None
    if jobs == -1:
        jobs = min(4, available_cores()) if profile == "demo" else 1
    if jobs < 1:
        raise StudyError(f"--jobs must be at least 1, got {jobs}")
    output = Path(output).resolve()
    setups: list[BundleSetup] = []
    for bundle in bundles:  # every bundle's data and configs are checked before anything is written or run
        label = bundle.root if isinstance(bundle, ForeignBundle) else bundle
        try:
            if isinstance(bundle, ForeignBundle):
                setup = prepare_foreign_bundle(bundle, dataset_dir, overrides)
            else:
                setup = prepare_bundle(bundle, bundles_dir, profile, dataset_dir, overrides)
            setup.check_data()
            setup.check_configs()
        except (OSError, ValueError) as error:
            raise StudyError(f"{label}: {error}") from error
        setups.append(setup)
    bundles = [s.name for s in setups]
    clash = sorted(set(bundles) & set(STUDY_STAGES)) + sorted({b for b in bundles if bundles.count(b) > 1})
    if clash:
        raise StudyError(f"bundle names {clash} clash with the study's own folders or with each other")
    with _study_lock(output):
        for stale in remove_stale_temporaries(output, [LEDGER_NAME]) + [
            path for name in bundles for path in remove_stale_temporaries(output / name, [LEDGER_NAME])
        ]:
            log(f"[study] removed {stale.relative_to(output)}: the temporary file of an interrupted ledger write")
        _check_own(
            [place for name in bundles for stage in BUNDLE_STAGES for place in _places(output / name, stage.name)]
            + [place for name in STUDY_STAGES for place in _places(output, name)],
            output,
        )
        study_ledger = Ledger(output)
        run = int(study_ledger.data.get("runs", 0)) + 1
        study_ledger.data["runs"] = run
        study_ledger.save()
        ctx = _Context(
            output=output, run=run,
            code=code_digest(PACKAGE, exclude=("study",)),
            study_code=code_digest(PACKAGE / "study") + sha256_file(PACKAGE / "reports.py"),
            versions=library_versions(), log=log, command=command, threads=threads,
        )
        ledgers: dict[str, Ledger] = {}
        for setup in setups:
            (output / setup.name).mkdir(parents=True, exist_ok=True)
            ledgers[setup.name] = Ledger(output / setup.name)
        if jobs > 1:
            log(f"[study] running up to {jobs} stages at a time (--jobs)")
        outcomes = _run_bundle_stages(setups, ledgers, ctx, jobs)
        outcomes += _study_stages(setups, ledgers, study_ledger, ctx)
        return StudyResult(output, output / "report" / "report.md", outcomes)


def _run_bundle_stages(
    setups: Sequence[BundleSetup], ledgers: Mapping[str, Ledger], ctx: _Context, jobs: int
) -> list[StageOutcome]:
    """Every bundle's stages, each once the stages it reads from are done, up to ``jobs`` at a time."""
    by_name = {setup.name: setup for setup in setups}
    stages = {stage.name: stage for stage in BUNDLE_STAGES}
    tasks = [(setup.name, stage.name) for setup in setups for stage in BUNDLE_STAGES]

    def upstream(task: tuple[str, str]) -> list[tuple[str, str]]:
        return [(task[0], name) for name, _ in stages[task[1]].reads.values()]

    def run(task: tuple[str, str]) -> StageOutcome:
        return _run_bundle_stage(by_name[task[0]], stages[task[1]], ledgers[task[0]], ctx)

    return run_with_dependencies(tasks, upstream, run, jobs, on_interrupt=ctx.stop_children)


def _study_stages(
    setups: Sequence[BundleSetup], ledgers: Mapping[str, Ledger], study_ledger: Ledger, ctx: _Context
) -> list[StageOutcome]:
    from monai_adv.study.compare_datasets import FILES, compare_datasets
    from monai_adv.study.report import FIGURES, BundleReport, write_report

    sweeps = {s.name: "attack/attack_sweep.json" for s in setups}
    # the paper's column beside ours only where our data is the paper's data set
    columns = {s.name: getattr(comparable_dataset(s.name, s.data), "column", None) for s in setups}
    payload = {
        "stage": "compare_datasets",
        "bundles": [[s.name, s.medical, ledgers[s.name].output_hashes("attack")[sweeps[s.name]], columns[s.name]]
                    for s in setups],
        "code": ctx.study_code,
    }

    def compare(folder: Path) -> None:
        rows = {s.name: json.loads((ctx.output / s.name / sweeps[s.name]).read_text(encoding="utf-8"))["rows"]
                for s in setups}
        medical = {s.name: s.medical for s in setups}
        compare_datasets(rows, medical, columns, folder)

    outcomes = [_run_study_stage("compare_datasets", payload, FILES, compare, study_ledger, ctx)]
    payload = {
        "stage": "report",
        "bundles": [[s.name, s.data, s.settings, s.medical, _bundle_outputs(ledgers[s.name])] for s in setups],
        "compare_datasets": study_ledger.output_hashes("compare_datasets"),
        "command": ctx.command,
        "code": ctx.study_code,
    }
    reports = [BundleReport(s.name, ctx.output / s.name, s.data, s.settings, s.medical) for s in setups]
    products = ["report.md", "susceptibility.png"] + [f"{s.name}-{suffix}" for s in setups for suffix in FIGURES]

    def report(folder: Path) -> None:
        write_report(folder, reports, ctx.output / "compare_datasets", ctx.command)

    outcomes.append(_run_study_stage("report", payload, products, report, study_ledger, ctx))
    return outcomes
