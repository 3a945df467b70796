#!/usr/bin/env bash
# The separate environment for the MONAI Label integration (monai_adv.monailabel_task): .venv-label, or
# $MONAI_ADV_LABEL_VENV, holding monailabel 0.8.5 and monai_adv (editable) with the `label` extra.
#
#   bash scripts/setup_label_env.sh          # scripts/setup.sh calls it; MONAI_ADV_SKIP_LABEL=1 skips it there
#
# Why a second environment: monailabel 0.8.5 pins numpy<2 and jsonschema<4, its server needs pydicom<3 (see the
# `label` extra in setup.cfg), and BundleInferTask imports torchvision. PyPI's torchvision does not import beside the
# CPU-only torch of the main environment ("operator torchvision::nms does not exist"), so this one takes a matching
# torch + torchvision pair, by default torch 2.14.1 + torchvision 0.29.1 on x86_64 (a CUDA build, several GB; it runs
# on the CPU too) and torch 2.9.1 + torchvision 0.24.1 (CPU) on aarch64. MONAI_ADV_LABEL_TORCH picks another pair, e.g.
#   MONAI_ADV_LABEL_TORCH="torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu"
#
# Idempotent: an environment that already imports monailabel's app and inference task and monai_adv's task is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL_VENV="${MONAI_ADV_LABEL_VENV:-.venv-label}"
PYTHON="${PYTHON:-python3}"
case "$(uname -m)" in
    aarch64|arm64) DEFAULT_TORCH="torch==2.9.1 torchvision==0.24.1" ;;
    *) DEFAULT_TORCH="torch==2.14.1 torchvision==0.29.1" ;;
esac
TORCH_SPEC="${MONAI_ADV_LABEL_TORCH:-$DEFAULT_TORCH}"
CHECK='import monailabel, monailabel.interfaces.app, monailabel.tasks.infer.bundle, monai_adv.monailabel_task'

if [ -x "$LABEL_VENV/bin/python" ] && "$LABEL_VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    echo "MONAI Label environment $LABEL_VENV already set up"
    exit 0
fi

start=$(date +%s)
[ -x "$LABEL_VENV/bin/python" ] || "$PYTHON" -m venv "$LABEL_VENV"
PIP=("$LABEL_VENV/bin/python" -m pip install --disable-pip-version-check)
# torch and torchvision first, as a pair; repeated below so that resolving monailabel keeps them.
"${PIP[@]}" $TORCH_SPEC
# torchattacks declares torchvision and requests~=2.25.1, neither of which it imports: install it alone.
"${PIP[@]}" --no-deps torchattacks==3.5.1
"${PIP[@]}" -e ".[label]" $TORCH_SPEC
"$LABEL_VENV/bin/python" -c "$CHECK"
"$LABEL_VENV/bin/python" - <<'PY'
import monai, monailabel, numpy, pydicom, torch, torchvision
print(f"MONAI Label environment ready: monailabel {monailabel.__version__}, monai {monai.__version__}, "
      f"torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}, "
      f"pydicom {pydicom.__version__}")
PY
echo "set up $LABEL_VENV in $(( $(date +%s) - start )) s, $(du -sh "$LABEL_VENV" | cut -f1) on disk"
