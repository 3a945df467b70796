"""Throughput of the paper profile (full VGG16, 224 x 224, CT bundle shapes) in images per second, on a GPU.

Measures, side by side in one run and for each numeric mode (fp32; bf16 autocast; bf16 autocast + channels-last):

* training: one SGD step (forward, backward, update) of a batch of 50 (Table S3), images/s;
* adversarial training: the same step with 50 % of the batch replaced by PGD-7 examples (Table S4), images/s;
* the PGD-10 sweep: FGSM + BIM + PGD over the medical grid (0.001, 0.002, 0.004, 0.006) with reuse, images/s;
* triage: the per-image minimal flipping eps (bisection to eps_max / 256, PGD-10 x 2 restarts per probe), images/s.

The model is trained for a few steps on synthetic bright-blob images first (an untrained VGG predicts one class for
every input, which makes attacks trivially fast). Attacks run through the same mode as the forward pass: autocast
wraps the model's forward and the logits are cast back to fp32, so the loss and the input gradient's sign are
computed as usual. Accuracies are printed beside the timings so that a mode which changes the results shows it.

Usage::

    python scripts/bench_gpu.py                          # CUDA, 224 px, full width
    python scripts/bench_gpu.py --device cpu --size 32 --width 0.125 --images 16   # the CPU smoke run of the test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench_attacks import blobs  # scripts/ is on sys.path when this file runs as a script
from monai_adv.attacks import BIM, FGSM, PGD
from monai_adv.handlers.adversarial_batches import adversarial_count, replace_with_adversarial
from monai_adv.networks import PaperVGG16
from monai_adv.sensitivity import minimal_flip_eps
from monai_adv.sweep import attack_sweep

MEDICAL_GRID = (0.001, 0.002, 0.004, 0.006)
MODES = ("fp32", "bf16", "bf16_channels_last")


class AutocastForward(nn.Module):
    """Runs ``model`` under ``torch.autocast(device_type, dtype)`` and returns fp32 logits ``(B, K)``."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype | None,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = (
            torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()
        )
        with context:
            return self.model(x).float()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotuning, autocast caches)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = PaperVGG16(spatial_dims=2, in_channels=1, num_classes=2, input_size=args.size, width=args.width,
                       dropout=0.0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(args.train_steps):
        x, y = blobs(args.batch, args.size, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x.to(device)).float(), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def measure(model: nn.Module, mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    channels_last = mode.endswith("channels_last")
    dtype = torch.bfloat16 if mode.startswith("bf16") else None
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    wrapped = AutocastForward(model, device.type, dtype, channels_last)
    gen = torch.Generator().manual_seed(1)
    x_train, y_train = (t.to(device) for t in blobs(args.batch, args.size, gen))
    x_eval, y_eval = (t.to(device) for t in blobs(args.images, args.size, gen))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, nesterov=True)

    def train_step(adversarial: bool) -> None:
        x = x_train
        if adversarial:
            index = torch.randperm(args.batch, device=device)[: adversarial_count(args.batch, 0.5)]
            x = replace_with_adversarial(x_train, y_train, index, PGD(wrapped, eps=0.003, steps=7))
        model.train()
        loss = F.cross_entropy(wrapped(x), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.eval()

    attacks = {"FGSM": FGSM, "BIM": BIM, "PGD": PGD}
    sweep = {}
    triage = {}

    def run_sweep() -> None:
        sweep["result"] = attack_sweep(wrapped, x_eval, y_eval, attacks, MEDICAL_GRID, seed=0)

    def run_triage() -> None:
        triage["result"] = minimal_flip_eps(wrapped, x_eval, eps_max=0.02, labels=y_eval, seed=0)

    r = args.repeats
    out = {
        "train_images_per_s": args.batch / median_seconds(lambda: train_step(False), device, r),
        "adversarial_train_images_per_s": args.batch / median_seconds(lambda: train_step(True), device, r),
        "sweep_images_per_s": args.images / median_seconds(run_sweep, device, max(1, r // 2)),
        "triage_images_per_s": args.images / median_seconds(run_triage, device, max(1, r // 2)),
    }
    result = sweep["result"]
    out["pgd_accuracy"] = {f"{e:g}": round(a, 3) for e, a in zip(result.eps, result.accuracy("PGD"))}
    out["triage_flipped"] = int(triage["result"].flipped.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224, the CT bundle)")
    parser.add_argument("--width", type=float, default=1.0, help="PaperVGG16 width (default 1.0, the paper)")
    parser.add_argument("--batch", type=int, default=50, help="training batch (default 50, Table S3)")
    parser.add_argument("--images", type=int, default=128, help="images attacked per sweep / triage call")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune every new shape")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    device = torch.device(args.device)
    # Off by default: batch compaction in the sweep and the triage makes many batch sizes, and cuDNN's autotuner
    # would re-tune for every one of them.
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"PaperVGG16(width={args.width}) on 1x{args.size}x{args.size}, {name}, torch {torch.__version__}")
    model = build_model(args, device)
    results = {}
    for mode in args.modes:
        results[mode] = measure(model, mode, args, device)
        row = results[mode]
        print(
            f"{mode:>20}: train {row['train_images_per_s']:8.1f} img/s | 50/50 PGD-7 train "
            f"{row['adversarial_train_images_per_s']:7.1f} img/s | PGD-10 sweep {row['sweep_images_per_s']:7.1f} "
            f"img/s | triage {row['triage_images_per_s']:7.1f} img/s | PGD acc {row['pgd_accuracy']} | "
            f"flipped {row['triage_flipped']}",
            flush=True,
        )
    base = results.get("fp32")
    if base:
        for mode, row in results.items():
            ratios = {k: round(row[k] / base[k], 2) for k in base if k.endswith("_per_s")}
            print(f"{mode:>20} / fp32: {ratios}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": name, "size": args.size, "width": args.width, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
