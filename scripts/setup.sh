#!/usr/bin/env bash
# One-command set-up on a fresh machine: a virtual environment (.venv, or $VENV) holding monai_adv and everything it
# needs, for the CPU by default.
#
#   bash scripts/setup.sh
#
# MONAI_ADV_TORCH picks the torch to install when the environment has none (default torch==2.13.0, which on this
# project's CPU machines resolves to a local CPU wheel). A GPU user installs the CUDA build instead, e.g.
#   MONAI_ADV_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/setup.sh
# and a CPU-only machine elsewhere the CPU build:
#   MONAI_ADV_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
# It then builds the separate MONAI Label environment (.venv-label, scripts/setup_label_env.sh; several GB, a few
# minutes) that tests/test_monailabel.py runs in; MONAI_ADV_SKIP_LABEL=1 skips it (and that test).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${MONAI_ADV_TORCH:-torch==2.13.0}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
# torch first and pinned: an unpinned torch (or torchattacks's metadata, via torchvision) pulls a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" $TORCH_SPEC
# torchattacks declares torchvision and requests~=2.25.1, neither of which it imports: install it alone.
"${PIP[@]}" --no-deps torchattacks==3.5.1
"${PIP[@]}" -e ".[test]"
"$VENV/bin/python" - <<'PY'
import monai, torch, torchattacks, monai_adv
print(f"monai_adv {monai_adv.__version__} ready: torch {torch.__version__} (CUDA {torch.cuda.is_available()}), "
      f"monai {monai.__version__}, torchattacks {torchattacks.__version__}")
PY
if [ "${MONAI_ADV_SKIP_LABEL:-0}" = "1" ]; then
    echo "MONAI_ADV_SKIP_LABEL=1: MONAI Label environment not built (tests/test_monailabel.py will skip)"
else
    bash scripts/setup_label_env.sh
fi
