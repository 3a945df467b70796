"""``python -m monai_adv overlay <name> <bundle configs...>``: the ``--config_file`` list of a bundle's configs
followed by an overlay's files, run from inside the bundle:

    python -m monai.bundle run --config_file "$(python -m monai_adv overlay attack_sweep configs/train.json configs/evaluate.json)" --bundle_root .

``python -m monai_adv overlay`` lists the overlays.
"""

from __future__ import annotations

import argparse
import os
import sys

from monai_adv.overlays import OVERLAYS, OverlayError, overlay_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_adv", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    overlay = commands.add_parser("overlay", help="print the --config_file list: bundle configs, then the overlay's")
    overlay.add_argument("name", nargs="?", help="; ".join(f"{k}: {v}" for k, v in OVERLAYS.items()))
    overlay.add_argument("configs", nargs="*", help="the bundle's own config files, in order (e.g. configs/train.json "
                         "configs/evaluate.json); each must exist")
    overlay.add_argument("--then", action="append", default=[], metavar="CONFIG",
                         help="a config file merged after the overlay (your settings of its ids); repeatable")
    args = parser.parse_args(argv)
    if args.name is None:
        for name, text in OVERLAYS.items():
            print(f"{name:<18} {text}")
        return 0
    missing = [c for c in [*args.configs, *args.then] if not os.path.isfile(c)]
    if missing:
        print(f"error: no such bundle config: {', '.join(missing)} (run from inside the bundle)", file=sys.stderr)
        return 2
    try:
        print(overlay_argument(args.name, args.configs, args.then))
    except OverlayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
