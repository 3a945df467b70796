"""Command line of the study (``scripts/run_study.py``, or the ``monai-adv-study`` console script).

    python scripts/run_study.py                                   # the CT bundle on its demo data -> study/
    python scripts/run_study.py --bundles all                     # all five bundles and the susceptibility ratio
    python scripts/run_study.py --bundles lung_nodule_ct_classification --dataset_dir <prepared LIDC> --output lidc
    python scripts/run_study.py --set max_epochs=5 --set adversarial_train:max_epochs=3
    python scripts/run_study.py --images <class folders or table.csv> --profile demo --output mine   # your own images
    python scripts/run_study.py --bundle_root <any zoo-style bundle> --dataset_dir <its data> --output theirs

It runs, per bundle, train, evaluate, attack (sweep), adversarial_train, compare_original and compare (sweep again,
the original model beside adversarial training, then the adversarially trained one) and triage, then compares the
data sets and writes ``<output>/report/report.md`` with its figures. Run it again after an
interruption (even SIGKILL): completed stages are skipped, an interrupted training continues after its last epoch,
and a stage whose inputs changed (configs, overrides, data, an upstream checkpoint, the code) runs again.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_adv.io import DataError
from monai_adv.study.runner import StudyError, run_study
from monai_adv.study.setup import ForeignBundle, available_bundles, default_bundles_dir, parse_override

__all__ = ["main", "build_parser"]

DEFAULT_BUNDLE = "lung_nodule_ct_classification"


# argparse formats help with %: a literal percent sign is written %%
SET_HELP = (
    "override a config id for every stage or for one (value read as JSON when it parses); repeatable, e.g. --set "
    "max_epochs=5 --set adversarial_train:max_epochs=3. Values are MONAI config syntax, read by the study and by "
    "every bundle run. TRUST WARNING: a string starting with '$' is executed as Python code, a string that is "
    "exactly '@ID' is a reference to another config id, a string starting with '%%' is a macro (a copy of another "
    "id, also from another file), and a JSON object with '_target_' is instantiated (the callable it names is "
    "called); only use values you trust. MONAI has no escape character: to pass a literal string starting with '$', "
    "'%%' or '@', write it as a Python string expression, e.g. --set 'tag=$\"$abc\"' gives $abc, '$\"%%abc\"' "
    "gives %%abc and '$\"\\x40abc\"' gives @abc (inside an expression '@' starts a reference)"
)


def prepare_images(source: Path, dataset_dir: Path) -> Path:
    """``source`` (class folders or a table of images) prepared into ``dataset_dir`` with
    :func:`monai_adv.prepare.folder.prepare_folder`'s defaults; returns ``dataset_dir``."""
    from monai_adv.prepare.folder import prepare_folder

    try:
        path = prepare_folder(source, dataset_dir)
    except DataError as error:
        raise DataError(
            f"{error}\n(--images prepares with the defaults; options such as --grayscale, --skip_unreadable, "
            "--class_names or --native_units are scripts/prepare_folder.py's: run it yourself, then pass its output "
            "as --dataset_dir)"
        ) from error
    print(f"[study] prepared {source} -> {path}", flush=True)
    return dataset_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=None,
                        help=f"bundle names (space- or comma-separated) or 'all' (default: {DEFAULT_BUNDLE})")
    other = parser.add_argument_group(
        "another bundle", "study a classification bundle that is not one of ours, in the model zoo's layout (ids "
        "network, device, bundle_root, output_dir, ckpt_path, dataset_dir; engines validate#evaluator and "
        "train#trainer unless --set adv_evaluator=@ID adv_trainer=@ID say otherwise)")
    other.add_argument("--bundle_root", type=Path, default=None, help="the bundle's folder (holding configs/)")
    other.add_argument("--train_config", default=None,
                       help="its training config in configs/, .json or .yaml (default: train)")
    other.add_argument("--evaluate_config", default=None,
                       help="its evaluation config, merged over the training config (default: evaluate)")
    other.add_argument("--checkpoint", type=Path, default=None,
                       help="a trained model to study instead of training one with the bundle's train config")
    parser.add_argument("--output", type=Path, default=Path("study"), help="output folder (default: %(default)s)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--dataset_dir", type=Path, default=None,
                      help="a prepared data set (its datalist.json) instead of the demo data, one bundle at a time; "
                           "with --bundle_root, the folder that bundle reads as dataset_dir")
    data.add_argument("--images", type=Path, default=None, metavar="FOLDER_OR_TABLE",
                      help="your own images: a folder <FOLDER>/<class>/... or a table path,label[,patient_id], "
                           "prepared into <output>/dataset by scripts/prepare_folder.py's defaults, then studied "
                           "(for its options, run scripts/prepare_folder.py yourself and pass --dataset_dir)")
    parser.add_argument("--profile", choices=("demo", "paper"), default=None,
                        help="demo: configs/demo.json on top (32 x 32, VGG16 at 1/8 width, CPU); paper: the bundle "
                             "as shipped (Table S3). Default: demo on the demo data, paper with --dataset_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[STAGE:]ID=VALUE",
                        help=SET_HELP)
    parser.add_argument("--threads", type=int, default=-1,
                        help="CPU threads per bundle run (OMP_NUM_THREADS); default 1 in the demo profile, torch's "
                             "default in the paper profile; 0 leaves OMP_NUM_THREADS as it is (unset: torch's "
                             "default, but one thread in the demo profile's configs)")
    parser.add_argument("--jobs", type=int, default=-1,
                        help="bundle stages run at once when they do not depend on each other (adversarial training "
                             "beside the attack sweep and triage); default one per CPU core, at most 4, in the demo "
                             "profile and 1 in the paper profile. Results do not depend on it")
    parser.add_argument("--bundles_dir", type=Path, default=None, help="folder of the bundles (default: ./bundles of "
                        "this checkout)")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: the running bundle is stopped and the study says how to continue."""


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`_Terminated` (in the main thread); the previous handler, or ``None``."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _our_bundles(parser: argparse.ArgumentParser, requested: Sequence[str], bundles_dir: Path) -> list[str]:
    """``--bundles`` as names of our bundles (``all``: every one), or a parser error naming the unknown ones."""
    known = available_bundles(bundles_dir)
    names = [b for item in requested for b in item.split(",") if b]
    bundles = known if names == ["all"] else names
    unknown = sorted(set(bundles) - set(known))
    if unknown or not bundles:
        parser.error(f"unknown bundles {unknown}; choose from {known} or 'all' (another bundle: --bundle_root)")
    return list(dict.fromkeys(bundles))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    bundles_dir = args.bundles_dir or default_bundles_dir()
    if args.bundle_root is None:
        for option in ("train_config", "evaluate_config", "checkpoint"):
            if getattr(args, option) is not None:
                parser.error(f"--{option} is for another bundle: give its folder with --bundle_root")
        bundles = _our_bundles(parser, args.bundles or [DEFAULT_BUNDLE], bundles_dir)
    elif args.bundles is not None:
        parser.error("--bundle_root studies one bundle: leave out --bundles")
    elif args.images is not None:
        parser.error("--images prepares a data list for monai-adv's bundles; another bundle reads its own data from "
                     "--dataset_dir")
    else:
        bundles = [ForeignBundle(args.bundle_root, args.train_config or "train", args.evaluate_config or "evaluate",
                                 args.checkpoint)]
    overrides: dict[str, dict[str, object]] = {}
    for text in args.overrides:
        try:
            stage, key, value = parse_override(text)
        except ValueError as error:
            parser.error(str(error))
        overrides.setdefault(stage, {})[key] = value
    if args.bundle_root is not None:  # the report quotes the bundle's folder name only: no paths
        where = [f"--bundle_root <{args.bundle_root.resolve().name}>"] + [
            f"--{o} {getattr(args, o)}" for o in ("train_config", "evaluate_config") if getattr(args, o) is not None
        ] + (["--checkpoint <model>"] if args.checkpoint else [])
    else:
        where = ["--bundles", ",".join(bundles)]
    command = " ".join(
        ["scripts/run_study.py", *where]
        + ([f"--dataset_dir {args.dataset_dir}"] if args.dataset_dir else [])
        + ([f"--images {args.images}"] if args.images else [])
        + ([f"--profile {args.profile}"] if args.profile else [])
        + [f"--set {text}" for text in args.overrides]
    )  # the report quotes it: no output folder, so the same study gives the same report anywhere
    dataset_dir = args.dataset_dir
    previous = _stop_on_sigterm()
    try:
        if args.images is not None:
            dataset_dir = prepare_images(args.images, args.output / "dataset")
        result = run_study(
            bundles, args.output, bundles_dir, dataset_dir, args.profile, overrides,
            log=lambda line: print(line, flush=True), command=command,
            threads=None if args.threads == 0 else args.threads, jobs=args.jobs,
        )
    except (StudyError, DataError) as error:
        print(f"study stopped: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt as stop:
        print("study interrupted: run the same command again to continue where it stopped", file=sys.stderr, flush=True)
        return 143 if isinstance(stop, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    ran = sum(o.status != "skipped" for o in result.outcomes)
    print(f"report: {result.report} ({ran} stages run, {len(result.outcomes) - ran} skipped)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
