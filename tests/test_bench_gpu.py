"""The GPU benchmark's code path, as far as the CPU allows: tiny model, bf16 autocast and channels-last on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_autocast_forward_returns_fp32_logits_close_to_fp32_model():
    from bench_gpu import AutocastForward

    from monai_adv.networks import PaperVGG16

    torch.manual_seed(0)
    model = PaperVGG16(spatial_dims=2, in_channels=1, num_classes=2, input_size=32, width=0.125, dropout=0.0).eval()
    x = torch.rand(4, 1, 32, 32)
    wrapped = AutocastForward(model, "cpu", torch.bfloat16, channels_last=True).eval()
    with torch.no_grad():
        reference, mixed = model(x), wrapped(x)
    assert mixed.dtype == torch.float32 and mixed.shape == (4, 2)
    assert torch.allclose(mixed, reference, rtol=0.1, atol=0.05 * reference.abs().max().item())


def test_bench_gpu_runs_every_mode_on_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--device", "cpu", "--size", "32", "--width", "0.125",
        "--batch", "8", "--images", "8", "--repeats", "1", "--train-steps", "2", "--json", str(out),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                                                                                     "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(figures["results"]) == {"fp32", "bf16", "bf16_channels_last"}
    for row in figures["results"].values():
        for key in ("train_images_per_s", "adversarial_train_images_per_s", "sweep_images_per_s",
                    "triage_images_per_s"):
            assert row[key] > 0
        assert set(row["pgd_accuracy"]) == {"0", "0.001", "0.002", "0.004", "0.006"}
        assert 0 <= row["triage_flipped"] <= 8
    assert "bf16_channels_last / fp32" in run.stdout
