"""``python -m monai_adv overlay <name>``: the config files to append to a bundle's ``--config_file``.

    python -m monai.bundle run --config_file "configs/train.json,configs/evaluate.json,$(python -m monai_adv overlay attack_sweep)"

``python -m monai_adv overlay`` lists the overlays.
"""

from __future__ import annotations

import argparse
import sys

from monai_adv.overlays import OVERLAYS, OverlayError, overlay_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_adv", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    overlay = commands.add_parser("overlay", help="print the config files of an overlay, comma-separated")
    overlay.add_argument("name", nargs="?", help="; ".join(f"{k}: {v}" for k, v in OVERLAYS.items()))
    args = parser.parse_args(argv)
    if args.name is None:
        for name, text in OVERLAYS.items():
            print(f"{name:<18} {text}")
        return 0
    try:
        print(overlay_argument(args.name))
    except OverlayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
