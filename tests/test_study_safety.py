"""The study's safety rules, without training: it deletes only what it wrote, it cleans up after a killed ledger
write, and ``--set`` warns that its values are code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from monai_adv.study.cli import build_parser
from monai_adv.study.ledger import LEDGER_NAME
from monai_adv.study.ownership import MANIFEST_NAME, files_in, foreign_files, start_working_folder
from monai_adv.study.runner import StudyError, _publish, run_study
from monai_adv.study.setup import parse_override
from monai_adv.utils import temporary_file_pattern

ROOT = Path(__file__).resolve().parents[1]


def _help() -> str:
    return " ".join(build_parser().format_help().split())


def test_set_help_warns_that_values_are_executed_and_says_how_to_pass_a_literal():
    text = _help()
    for phrase in ("TRUST WARNING: a string starting with '$' is executed as Python code",
                   "exactly '@ID' is a reference", "starting with '%' is a macro", "'_target_' is instantiated",
                   "only use values you trust", "MONAI has no escape character",
                   """--set 'tag=$"$abc"' gives $abc"""):
        assert phrase in text, phrase


@pytest.mark.parametrize("text, literal", [('tag=$"$abc"', "$abc"), ('tag=$"%abc"', "%abc"),
                                           ('tag=$"\\x40abc"', "@abc")])
def test_the_literal_string_recipe_of_the_help_gives_the_literal(text, literal):
    from monai.bundle import ConfigParser

    stage, key, value = parse_override(text)
    assert ConfigParser({key: value}).get_parsed_content(key) == literal


# the study deletes only what it wrote ---------------------------------------------------------------------------------

BUNDLE = "lung_nodule_ct_classification"


def published(folder: Path, stage: str, files: dict[str, str]) -> Path:
    """A stage folder as the study publishes it: its files, then renamed into place with the study's manifest."""
    partial = folder.parent / f".{folder.name}.partial"
    start_working_folder(partial, stage)
    for name, text in files.items():
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        (partial / name).write_text(text)
    _publish(partial, folder, stage, folder.parent)
    return folder


def stop_early(output: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """Run the study on ``output`` (the CT bundle on its demo data) with every bundle stage replaced by a stop, so
    that it gets through its checks at the start and no further; return the error and the log lines."""
    import monai_adv.study.runner as runner

    def no_stage(*args, **kwargs):
        raise StudyError("stopped by the test before the first stage")

    monkeypatch.setattr(runner, "_run_bundle_stage", no_stage)
    lines: list[str] = []
    with pytest.raises(StudyError) as error:
        run_study([BUNDLE], output, ROOT / "bundles", log=lines.append)
    return str(error.value), lines


def test_foreign_files_stop_the_study_before_any_stage_and_are_kept(tmp_path, monkeypatch):
    output = tmp_path / "study"
    notes = output / "report" / "notes.txt"  # a folder the study did not make
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    train = published(output / BUNDLE / "train", "train", {"models/model.pt": "weights", "train.log": "log"})
    extra = train / "models" / "my_model.pt"  # added to a folder the study made
    extra.write_text("mine")
    own = published(output / "compare_datasets", "compare_datasets", {"susceptibility.json": "{}"})
    (own / "susceptibility.json").write_text("{} edited by hand")  # still the study's file: not named
    working = output / BUNDLE / ".attack.partial" / "draft.csv"  # a working folder the study did not make
    working.parent.mkdir()
    working.write_text("mine")
    message, lines = stop_early(output, monkeypatch)
    for name in ("report/notes.txt", f"{BUNDLE}/train/models/my_model.pt", f"{BUNDLE}/.attack.partial/draft.csv"):
        assert name in message, message
    assert "susceptibility.json" not in message and "train/models/model.pt" not in message, message
    assert "move them out of" in message and "or choose another --output" in message
    assert not any("running" in line for line in lines)  # no stage ran
    for path in (notes, extra, working, train / "models" / "model.pt", own / "susceptibility.json"):
        assert path.is_file(), path


def test_a_folder_of_the_study_is_replaced_and_a_foreign_file_found_while_replacing_stops_it(tmp_path):
    final = published(tmp_path / "attack", "attack", {"attack_sweep.csv": "old", "attack.log": "old log"})
    (final / "attack_sweep.csv").write_text("edited by hand")  # the study's own file: replaced with the rest
    published(final, "attack", {"attack_sweep.csv": "new"})
    assert files_in(final) == [MANIFEST_NAME, "attack_sweep.csv"]
    assert (final / "attack_sweep.csv").read_text() == "new" and not (tmp_path / ".attack.old").exists()
    # a file that appears after the check at the start: the replacement stops, and nothing is lost
    (final / "notes.txt").write_text("mine")
    with pytest.raises(StudyError, match=r"did not write.*attack/notes.txt.*move them out"):
        published(final, "attack", {"attack_sweep.csv": "newer"})
    assert (final / "notes.txt").read_text() == "mine" and (final / "attack_sweep.csv").read_text() == "new"
    assert (tmp_path / ".attack.partial" / "attack_sweep.csv").read_text() == "newer"  # kept to look at
    # a leftover aside folder that is not the study's is not deleted either
    (final / "notes.txt").unlink()
    aside = tmp_path / ".attack.old"
    aside.mkdir()
    (aside / "keep.txt").write_text("mine")
    with pytest.raises(StudyError, match=r"\.attack\.old/keep\.txt"):
        published(final, "attack", {"attack_sweep.csv": "newer"})
    assert (aside / "keep.txt").is_file()


def test_which_working_folders_are_the_studys(tmp_path):
    own = tmp_path / ".train.partial"
    start_working_folder(own, "train")
    (own / "tensorboard").mkdir()
    (own / "tensorboard" / "events").write_text("written by the bundle run")
    assert foreign_files(own, "partial", "train") == []
    assert foreign_files(own, "partial", "evaluate") != []  # the manifest names another stage
    interrupted = tmp_path / ".evaluate.partial"  # made, killed before its manifest was renamed into place
    interrupted.mkdir()
    (interrupted / f".{MANIFEST_NAME}.abcd_123.tmp.json")  # atomic_write's name.write_text("{")
    assert foreign_files(interrupted, "partial", "evaluate") == []
    (interrupted / "notes.txt").write_text("mine")
    assert foreign_files(interrupted, "partial", "evaluate") == [interrupted / "notes.txt"]
    link = tmp_path / ".attack.partial"
    link.symlink_to(tmp_path / "elsewhere")
    assert foreign_files(link, "partial", "attack") == [link]
    assert foreign_files(tmp_path / ".triage.partial", "partial", "triage") == []  # nothing there


# a killed ledger write leaves a temporary file: the next run removes it -----------------------------------------------


def killed_ledger_write(folder: Path) -> Path:
    """A ledger write killed (SIGKILL) between writing its temporary file and renaming it: return that file."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import os, signal, sys; from monai_adv.utils import atomic_write; "
            "atomic_write(sys.argv[1], lambda tmp: (open(tmp, 'w').write('{'), os.kill(os.getpid(), signal.SIGKILL)))")
    result = subprocess.run([sys.executable, "-c", code, str(folder / LEDGER_NAME)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == -signal.SIGKILL
    (left,) = folder.glob(f".{LEDGER_NAME}.*")
    return left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")
def test_the_next_run_removes_the_temporary_files_of_a_killed_ledger_write_and_nothing_else(tmp_path, monkeypatch):
    output = tmp_path / "study"
    stale = [killed_ledger_write(output), killed_ledger_write(output / BUNDLE)]
    assert all(temporary_file_pattern(LEDGER_NAME).fullmatch(p.name) for p in stale)
    kept = [output / ".study_state.json.abc.tmp.json", output / ".study_state.json.ABCDEF012345.tmp.json",
            output / ".other.json.abcdef012345.tmp.json", output / "x.study_state.json.abcdef012345.tmp.json",
            output / BUNDLE / "models" / ".study_state.json.abcdef012345.tmp.json",
            output / "notes" / ".study_state.json.abcdef012345.tmp.json"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not the study's")
    folder = output / ".study_state.json.abcdefg1.tmp.json"  # the pattern, but a folder
    folder.mkdir()
    _, lines = stop_early(output, monkeypatch)
    assert not any(p.exists() for p in stale)
    assert all(p.is_file() for p in kept) and folder.is_dir()
    assert sum("temporary file of an interrupted ledger write" in line for line in lines) == 2
