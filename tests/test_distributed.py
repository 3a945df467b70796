"""Distributed sweeps and triage: per-sample randomness, batch-aligned shards, gathering by id, and the bundles under
``torchrun --nproc_per_node=2`` with gloo on the CPU giving the single-process results."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from monai_adv.attacks import BIM, FGSM, PGD
from monai_adv.attacks.seeding import key_of, mix_seed, per_sample_uniform
from monai_adv.distributed import BatchShardSampler, all_reduce_ints, batch_ids, gather_by_id
from monai_adv.overlays import overlay_files
from monai_adv.sensitivity import SensitivityResult, minimal_flip_eps
from monai_adv.sweep import attack_sweep

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "lung_nodule_ct_classification"
CONFIGS = ROOT / "bundles" / BUNDLE / "configs"
SPLITS = [(0, 1), (1, 8), (8, 13), (13, 20)]  # uneven batches, one of a single image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lesions(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class images in [0, 1]: noisy background; class 1 has a blob of random contrast."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.45 + 0.04 * torch.randn((n, 1, size, size), generator=g)
    ii, jj = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    for i in range(n):
        c = torch.randint(4, size - 4, (2,), generator=g).float()
        blob = torch.exp(-((ii - c[0]) ** 2 + (jj - c[1]) ** 2) / 6.0)
        x[i, 0] += y[i] * (0.08 + 0.2 * torch.rand(1, generator=g).item()) * blob
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def toy() -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[int]]:
    """A small CNN trained for a fraction of a second (flipping eps vary over the images), 20 test images, keys."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )
    x, y = lesions(256, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(100):
        idx = torch.arange(step * 32, step * 32 + 32) % 256
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = lesions(20, seed=2)
    return model.eval(), x, y, [key_of(f"item-{i:02d}") for i in range(20)]


# ---------------------------------------------------------------------------------------------------------------------
# per-sample randomness


def test_mix_seed_and_key_of_are_stable_and_spread():
    assert mix_seed(0, 1, 2) == mix_seed(0, 1, 2) and 0 <= mix_seed(0, 1, 2) < 2**63
    assert len({mix_seed(0, k, r) for k in range(50) for r in range(4)}) == 200
    assert key_of("a") == key_of("a") != key_of("b") and key_of(7) == key_of("7")
    # fixed values: the same in every process and on every machine (a salted hash would differ between runs)
    assert mix_seed(1, 2, 3) == 7510213797696614745
    assert key_of("nodule-17") == 3703841393329396888


def test_per_sample_noise_is_the_samples_own():
    x = torch.zeros(6, 1, 4, 4)
    seeds = [11, 12, 13, 14, 15, 16]
    state = torch.get_rng_state()
    full = per_sample_uniform(x, seeds, stream=0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    assert torch.equal(per_sample_uniform(x[2:5], seeds[2:5], stream=0), full[2:5])
    assert torch.equal(per_sample_uniform(x[:1], seeds[3:4], stream=0)[0], full[3])
    assert not torch.equal(per_sample_uniform(x, seeds, stream=1), full)
    assert full.min() >= -1 and full.max() < 1 and full.std() > 0.5


def test_seeded_pgd_gives_every_sample_the_same_result_in_any_batch(toy):
    model, x, y, keys = toy
    whole = PGD(model, 0.05, restarts=3, sample_seeds=keys).run(x, y)
    parts = [PGD(model, 0.05, restarts=3, sample_seeds=keys[a:b]).run(x[a:b], y[a:b]) for a, b in SPLITS]
    assert torch.equal(whole.fooled, torch.cat([p.fooled for p in parts]))
    assert torch.allclose(whole.adv, torch.cat([p.adv for p in parts]), atol=1e-6)
    assert 0 < int(whole.fooled.sum()) < len(x)
    # another batch order gives each sample its own result too
    perm = torch.arange(len(x)).flip(0)
    flipped = PGD(model, 0.05, restarts=3, sample_seeds=[keys[i] for i in perm]).run(x[perm], y[perm])
    assert torch.equal(flipped.fooled, whole.fooled[perm])
    with pytest.raises(ValueError, match="one seed per sample"):
        PGD(model, 0.05, sample_seeds=keys[:3]).run(x, y)


def test_unseeded_pgd_still_draws_from_the_global_rng(toy):
    model, x, y, _ = toy
    torch.manual_seed(5)
    a = PGD(model, 0.05)(x, y)
    torch.manual_seed(5)
    b = PGD(model, 0.05)(x, y)
    torch.manual_seed(6)
    c = PGD(model, 0.05)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sweep_with_keys_does_not_depend_on_the_batching(toy):
    model, x, y, keys = toy
    attacks = {"FGSM": FGSM, "BIM": BIM, "PGD": functools.partial(PGD, restarts=2)}
    grid = [0.01, 0.02, 0.04, 0.08]
    whole = attack_sweep(model, x, y, attacks, grid, keys=keys, seed=3)
    split = sum(attack_sweep(model, x[a:b], y[a:b], attacks, grid, keys=keys[a:b], seed=3) for a, b in SPLITS)
    assert split.correct == whole.correct
    for name in attacks:
        assert torch.equal(split.per_sample[name], whole.per_sample[name])
    assert split.work == whole.work  # compaction depends only on each sample's own results
    assert whole.correct["PGD"][0] > whole.correct["PGD"][-1]  # the attack does something
    other_seed = attack_sweep(model, x, y, {"PGD": attacks["PGD"]}, grid, keys=keys, seed=4)
    assert other_seed.correct["PGD"][0] == whole.correct["PGD"][0]


def test_sensitivity_with_keys_does_not_depend_on_the_batching(toy):
    model, x, y, keys = toy
    whole = minimal_flip_eps(model, x, eps_max=0.1, labels=y, seed=3, keys=keys)
    split = SensitivityResult.cat(
        [minimal_flip_eps(model, x[a:b], eps_max=0.1, labels=y[a:b], seed=3, keys=keys[a:b]) for a, b in SPLITS]
    )
    assert torch.equal(split.eps_lo, whole.eps_lo) and torch.equal(split.eps_hi, whole.eps_hi)
    assert torch.equal(split.probes, whole.probes) and split.grad_passes == whole.grad_passes
    assert torch.allclose(split.adversarial, whole.adversarial, atol=1e-6)
    assert len(set(whole.eps_hi.tolist())) > 5  # brackets vary over the images


# ---------------------------------------------------------------------------------------------------------------------
# sharding and gathering


def test_batch_shard_sampler_hands_out_whole_batches_of_the_single_process_order():
    n, batch, world = 37, 8, 3
    batches = [list(range(k, min(k + batch, n))) for k in range(0, n, batch)]
    seen = []
    for rank in range(world):
        sampler = BatchShardSampler(range(n), batch, num_replicas=world, rank=rank)
        indices = list(sampler)
        assert len(sampler) == len(indices)
        mine = [indices[i : i + batch] for i in range(0, len(indices), batch)]
        assert mine == batches[rank::world]  # a loader with the same batch size cuts the same batches
        seen += indices
    assert sorted(seen) == list(range(n))  # every item once, no padding
    assert list(BatchShardSampler(range(n), batch)) == list(range(n))  # not distributed: everything, in order
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        BatchShardSampler(range(20), 8, num_replicas=4, rank=0)


def test_gather_by_id_sorts_by_id_and_refuses_duplicates_in_one_process():
    values = {"x": torch.tensor([3.0, 1.0, 2.0]), "flags": np.array([[1, 0], [0, 1], [1, 1]], bool)}
    unique, out = gather_by_id(["c", "a", "b"], values)
    assert unique == ["a", "b", "c"]
    assert out["x"].tolist() == [1.0, 2.0, 3.0]
    assert out["flags"].dtype == bool and out["flags"].tolist() == [[False, True], [True, True], [True, False]]
    # without torchrun no shard is padded: a repeated id is two images sharing it, never merged silently
    with pytest.raises(ValueError, match=r"used by more than one image, e\.g\. \['a'\]"):
        gather_by_id(["c", "a", "b", "a"], {"x": torch.tensor([3.0, 1.0, 2.0, 9.0])})
    assert gather_by_id([], {"x": torch.zeros(0, 2)})[1]["x"].shape == (0, 2)
    with pytest.raises(ValueError, match="rows"):
        gather_by_id(["a"], {"x": torch.zeros(2)})
    assert all_reduce_ints([3, None, 0]) == [3, None, 0]


def test_batch_ids_reads_ids_or_stands_in_positions():
    assert batch_ids({"id": ["p1_0", "p1_1"]}, 2) == (["p1_0", "p1_1"], True)
    assert batch_ids({"id": torch.tensor([4, 5])}, 2) == (["4", "5"], True)
    assert batch_ids({"image": None}, 3, offset=10) == (["10", "11", "12"], False)
    with pytest.raises(ValueError, match="2 values"):
        batch_ids({"id": ["a", "b"]}, 3)


# ---------------------------------------------------------------------------------------------------------------------
# the bundles under torchrun


@pytest.fixture(scope="module")
def bundle_data(tmp_path_factory) -> dict[str, Path]:
    """Demo CT data cut to 22 test images (5 batches of 5: uneven shards and a short batch), and a checkpoint trained
    on the whole training section for about 10 s: its predictions must depend on the image (the texture-cue demo data
    leave a shorter training constant, and a constant model flips under no eps)."""
    from monai.bundle import ConfigParser
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose

    root = tmp_path_factory.mktemp("distributed")
    demo = root / "demo_cache"
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")])
    parser["demo_cache_dir"] = str(demo)
    source = Path(parser.get_parsed_content("datalist_file"))
    datalist = json.loads(source.read_text())
    for part in ("training", "test"):
        for item in datalist[part]:
            item["image"] = str(source.parent / item["image"])
    datalist["test"] = datalist["test"][:22]
    (root / "datalist.json").write_text(json.dumps(datalist))

    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    transforms = Compose(parser.get_parsed_content("train#deterministic_transforms"))
    data = CacheDataset(datalist["training"], transforms, progress=False)
    opt = torch.optim.SGD(net.parameters(), lr=parser.get_parsed_content("learning_rate"), momentum=0.9, nesterov=True)
    for _ in range(20):
        for batch in DataLoader(data, batch_size=16, shuffle=True):
            loss = nn.functional.cross_entropy(net(batch["image"]), batch["label"].long().reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    (root / "models").mkdir()
    identity = parser.get_parsed_content("model_identity").state_dict()  # saved as the bundle saves it
    torch.save({"model": net.state_dict(), "identity": identity}, root / "models" / "model.pt")
    return {"root": root, "demo": demo, "datalist": root / "datalist.json", "ckpt": root / "models" / "model.pt"}


def run_bundle(config_names: list[str], output_dir: Path, data: dict[str, Path], nproc: int, *extra: str) -> str:
    """``python -m monai.bundle run`` (or under ``torchrun --standalone --nproc_per_node=nproc``) with the demo
    overlay, the cut data list and a checkpoint copied into ``output_dir/models``; returns the log."""
    (output_dir / "models").mkdir(parents=True, exist_ok=True)
    (output_dir / "models" / "model.pt").write_bytes(data["ckpt"].read_bytes())
    files = []
    for n in config_names:  # a config of the bundle, "overlay:<name>" (monai_adv's files), or a path
        if n.startswith("overlay:"):
            files += [str(f) for f in overlay_files(n.split(":", 1)[1])]
        else:
            files.append(str(CONFIGS / f"{n}.json") if not n.endswith(".json") else n)
    command = [sys.executable]
    if nproc > 1:
        command += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
    command += ["-m", "monai.bundle", "run", "--config_file", str(files), "--output_dir", str(output_dir)]
    command += ["--dataset_dir", str(data["datalist"].parent), *extra]
    env = dict(os.environ, MONAI_ADV_DEMO_DIR=str(data["demo"]), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def writers(folder: Path) -> set[str]:
    """Process ids that wrote TensorBoard event files in ``folder``
    (``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    return {p.name.split(".")[-2] for p in folder.iterdir() if p.name.startswith("events.out.tfevents")}


def test_sweep_and_triage_under_torchrun_equal_the_single_process_run(bundle_data, tmp_path):
    """The attack_sweep and triage overlays in one evaluator run (both handlers attached, to start Python twice
    instead of four times), once in one process and once under torchrun with 2 gloo processes and the multi-GPU
    configs: every output file is byte-identical, the worst case of the default ensemble included."""
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"run": ["$@attack_sweep.attach(@adv_evaluator)", "$@triage.attach(@adv_evaluator)",
                                        "$@adv_evaluator.run()"]}))
    single, multi = tmp_path / "single", tmp_path / "multi"
    # eps ranges wide enough for this model (robust at the bundle's 0.001-0.006) that most images flip somewhere
    extra = ("--batch_size", "5", "--attack_sweep#large_eps_samples", "8", "--eps_grid", "[0.01,0.03,0.1]",
             "--triage_eps_max", "0.2")
    study = ["train", "evaluate", "overlay:attack_sweep", "overlay:triage", "adversarial"]
    run_bundle([*study, "demo", str(both)], single, bundle_data, 1, *extra)
    run_bundle([*study, "multi_gpu_attack", "multi_gpu_triage", "demo", str(both)], multi, bundle_data, 2, *extra)
    outputs = ["attack_sweep.csv", "attack_sweep.json", "sensitivity.csv", "triage.json"]
    for name in outputs:
        assert (multi / name).read_bytes() == (single / name).read_bytes(), name
    for name in ("attack_sweep.png", "adversarial_examples.png", "triage.png"):
        assert (multi / name).is_file()
    assert len(writers(multi / "tensorboard")) == 1  # rank 0 alone logs

    sweep = json.loads((single / "attack_sweep.json").read_text())
    assert sweep["sweep"]["n"] == 22 and sweep["all_checks_passed"], sweep["checks"]
    accuracy = sweep["sweep"]["accuracy"]["PGD"]
    assert accuracy[0] > accuracy[-1]  # the sweep is not trivial
    # the default worst case (APGD-CE, APGD-margin, Square) ran on what the paper's attacks left, in both runs alike
    assert list(sweep["sweep"]["ensemble_broken"]) == ["APGD-CE", "APGD-margin", "Square"]
    assert all(w <= p for w, p in zip(sweep["sweep"]["accuracy"]["worst case"], accuracy))
    rows = (single / "sensitivity.csv").read_text().splitlines()
    ids = [r.split(",")[0] for r in rows[1:]]
    assert len(ids) == 22 and ids == sorted(ids)
    eps_hi = [float(r.split(",")[5]) for r in rows[1:]]
    # brackets vary (equality is not that of constant columns): the bisection's points are a fixed set, so several
    # images share one
    assert len(set(eps_hi)) >= 6 and math.isfinite(min(eps_hi))


def test_adversarial_training_under_torchrun(bundle_data, tmp_path):
    """train.json + multi_gpu_train.json + the adversarial_train overlay with 2 gloo processes: every rank starts
    from the clean checkpoint, rank 0 alone saves the robust checkpoint (loadable into the plain network) and logs."""
    run_bundle(
        ["train", "multi_gpu_train", "overlay:adversarial_train", "adversarial", "demo"], tmp_path, bundle_data, 2,
        "--max_epochs", "1", "--batch_size", "16",
    )
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "demo.json")])
    parser["output_dir"] = str(tmp_path)
    net = parser.get_parsed_content("network_def")
    robust = torch.load(tmp_path / "models" / "model_adversarial.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(robust.get("model", robust))
    clean = torch.load(bundle_data["ckpt"], map_location="cpu", weights_only=True)["model"]
    assert not torch.equal(net.state_dict()["features.0.weight"], clean["features.0.weight"])
    assert len(writers(tmp_path / "tensorboard")) == 1
