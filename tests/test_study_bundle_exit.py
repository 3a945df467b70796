"""A bundle run that fails on a bad image while MONAI's CacheDataset is filling its cache ends with exit status 1 and
the monai_adv error as its last line, never with SIGABRT ("terminate called without an active exception", exit -6).

The cache is filled by a thread pool. When one image fails, the error reaches the main thread while the pool's worker
thread is already transforming the next image inside a torch operation; the interpreter then exits and, unless
``monai_adv.bundle_errors`` waits for that worker, CPython ends it with ``pthread_exit`` whose unwinding through
torch's C++ code calls ``std::terminate``. Here the first image transformed fails (it stands for an image that passes
the data list's checks and fails when loaded) and every later one spends about a second in torch (it stands for a
large image), so the worker is always inside torch when the main thread exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "lung_nodule_ct_classification" / "configs"

TRANSFORM = '''
import torch
from monai.transforms import Transform

from monai_adv.io import DataError


class FirstImageFailsd(Transform):
    """The first item it sees raises a DataError naming it; every later one spends about a second in torch. A
    deterministic Transform, so CacheDataset runs it while filling its cache."""

    calls = 0

    def __call__(self, data):
        FirstImageFailsd.calls += 1
        if FirstImageFailsd.calls == 1:
            raise DataError(f"{data['id']}: pixel data cannot be decoded (stand-in)")
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            torch.linalg.svd(torch.rand(1000, 1000, generator=generator))
        return data
'''


def test_a_bad_image_while_caching_ends_the_run_with_status_1_and_the_error_last(tmp_path):
    from monai_adv.demo import generate_demo_data

    datalist = generate_demo_data("lung_nodule_ct", tmp_path / "data", seed=0, n_patients=12)
    (tmp_path / "stand_in.py").write_text(TRANSFORM)
    overlay = tmp_path / "failing_load.json"
    overlay.write_text(json.dumps({"+train#deterministic_transforms": [{"_target_": "stand_in.FirstImageFailsd"}]}))
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "demo.json"), str(overlay)]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files),
               "--dataset_dir", str(datalist.parent), "--datalist_file", str(datalist),
               "--output_dir", str(tmp_path / "out"), "--max_epochs", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert "terminate called" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("monai_adv.io.DataError: "), result.stderr[-3000:]
    assert "pixel data cannot be decoded (stand-in)" in last_line
