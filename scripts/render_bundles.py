#!/usr/bin/env python
"""Write the five MONAI bundles in ``bundles/`` from one shared structure and a small per-bundle spec.

Each bundle stays self-contained for the model zoo (every config is complete JSON), yet the five cannot drift apart
by hand-copying: everything that differs between them is in ``SPECS`` below and lands in a block of ids at the top of
``train.json`` and ``inference.json`` (``class_names``, ``image_size``, ``intensity_transform``, the Table S3
hyper-parameters...) and in ``adversarial.json``, the bundle's settings for monai_adv's overlays (eps grid, triage
range, Table S4). The robustness study is not a config of ours: it is monai_adv's overlays (``python -m monai_adv
overlay <name>``) appended to ``train.json`` + ``evaluate.json`` (attack sweep, comparison, triage), to
``train.json`` (adversarial training) or to ``inference.json`` (referral), then ``adversarial.json``. Everything else
is rendered identically. ``tests/test_bundles.py`` fails when a committed file differs from this output.

    python scripts/render_bundles.py          # rewrite bundles/* (and remove configs it no longer writes)
    python scripts/render_bundles.py --check  # exit 1 and list the files that differ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "bundle_template"
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
PAPER = (
    "Joel MZ, Umrao S, Chang E, et al. Using Adversarial Images to Assess the Robustness of Deep Learning Models "
    "Trained on Diagnostic Images in Oncology. JCO Clin Cancer Inform 2022;6:e2100170. doi:10.1200/CCI.21.00170"
)
VERSION = "0.1.0"

CT_WINDOW_HU = (-1000.0, 400.0)  # lung window: level -300 HU, width 1400 HU
PERCENTILES = (0.5, 99.5)
# Table 1 of the paper; the controls get the wider ranges of its Figure 2 (set in their specs).
MEDICAL_EPS_GRID = [0.001, 0.002, 0.004, 0.006]


def window(a_min: float, a_max: float, desc: str) -> dict[str, Any]:
    return {
        "_target_": "ScaleIntensityRanged",
        "_desc_": desc,
        "keys": "image",
        "a_min": a_min,
        "a_max": a_max,
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }


def percentiles(desc: str) -> dict[str, Any]:
    return {
        "_target_": "ScaleIntensityRangePercentilesd",
        "_desc_": desc,
        "keys": "image",
        "lower": PERCENTILES[0],
        "upper": PERCENTILES[1],
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }


# The demo profile of the three medical bundles, whose demo data have a fine (one-pixel) class cue: chosen by
# measurement on the CT demo (scripts/demo_seeds.py) and kept for mammography and MRI, whose cues are of the same scale.
TEXTURE_CUE_DEMO: dict[str, Any] = {
    "network_dropout": 0.0,
    "max_epochs": 50,
    "patience": 15,
    "adv_learning_rate": "$@learning_rate / 3",
    "adv_max_epochs": "$min(@max_epochs, 30)",
    # every training image replaced by its PGD example, as the paper's public code (ART's AdversarialTrainer with
    # ratio 1.0) did; the paper's text says half. Measured on CT seeds 0-4: +19 to +33 points of PGD accuracy at eps
    # 0.003 (20 or more in 4 seeds) instead of +12 to +23 with half (README, seeds table)
    "adv_ratio": 1.0,
    "augmentation": [
        {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0},
        {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 1},
        {"_target_": "RandRotate90d", "keys": "image", "prob": 0.75, "max_k": 3},
    ],
}


def texture_demo_profile(cue: str) -> dict[str, Any]:
    """The demo profile of the mammography and MRI bundles: CT's (:data:`TEXTURE_CUE_DEMO`) with more epochs."""
    return {
        "_desc_": (
            f"the CT demo profile (see the CT bundle) for the {cue} demo data, whose class cue has the CT texture's "
            "one-pixel scale, with more epochs: no dropout, at most 80 epochs with patience 40 (on this busier anatomy "
            "the network may stay near chance for up to 40 epochs, and its best checkpoint came as late as epoch 80 in "
            "the measured seeds), flips and 90-degree turns only, adversarial training at a third of the clean "
            "learning rate for at most 30 epochs, every training image adversarial (adv_ratio 1.0)"
        ),
        **TEXTURE_CUE_DEMO,
        "max_epochs": 80,
        "patience": 40,
    }


# Everything that differs between the bundles. Training values are Table S3 of the paper (patience 0 for MNIST
# becomes 1: Ignite's early stopping needs at least one epoch of patience); adv_* are Table S4 (PGD-7, step eps/4,
# one random start, batch 128).
SPECS: dict[str, dict[str, Any]] = {
    "lung_nodule_ct_classification": {
        "title": "Lung nodule CT classification",
        "data_set": "LIDC-IDRI",
        "demo_dataset": "lung_nodule_ct",
        "modality": "CT",
        "data_type": "dicom",
        "class_names": ["benign", "malignant"],
        "in_channels": 1,
        "image_size": 224,
        "intensity_transform": window(*CT_WINDOW_HU, "CT lung window [-1000, 400] HU to [0, 1]"),
        "native_units": "HU",
        "native_per_unit": CT_WINDOW_HU[1] - CT_WINDOW_HU[0],
        "eps_grid": MEDICAL_EPS_GRID,
        "augment": True,
        "batch_size": 50, "max_epochs": 200, "patience": 50, "learning_rate": 0.0002, "lr_decay": 1e-6, "momentum": 0.9,
        "adv_eps": 0.003, "adv_max_epochs": 200,
        "triage_eps_max": 0.02,
        "demo": {
            "_desc_": (
                "the CT demo profile, chosen by measurement on the texture-cue demo data (scripts/demo_seeds.py): "
                "VGG16 at 1/8 width with BatchNorm (without it SGD sometimes sat at one class for epochs), its "
                "statistics recomputed on the training batches before each validation (precise_batch_norm: with the "
                "moving averages validation accuracy jumped between 0.5 and 0.9 from epoch to epoch and early "
                "stopping could end a run near chance), without "
                "dropout (with dropout 0.5 on its 64 features the narrow network rarely learns the fine texture cue), "
                "at most 50 epochs with patience 15, flips and 90-degree turns only (a "
                "20-degree bilinear rotation blurs the one-pixel cue); adversarial training (adv_learning_rate and "
                "adv_max_epochs, read through the bundle's adversarial.json) at a third of the clean learning rate "
                "(at the full rate it collapsed to one class) for at most 50 epochs (robust validation accuracy still rose "
                "after epoch 30 in two seeds of five; the main job stays within its 5-minute budget), "
                "every training image adversarial (adv_ratio 1.0, as the paper's public code; its text says half)"
            ),
            **TEXTURE_CUE_DEMO,
            "network_batch_norm": True,
            "precise_batch_norm": True,
            "adv_max_epochs": "$min(@max_epochs, 50)",
        },
        "prepare": "scripts/prepare_lidc.py",
        "paper": {"clean": 75.41, "pgd_0.004": 25.6, "table_s5_adv_pgd": 58.97, "triage_retained": 81.31},
    },
    "breast_lesion_mammography_classification": {
        "title": "Breast lesion mammography classification",
        "data_set": "CBIS-DDSM",
        "demo_dataset": "breast_lesion_mammography",
        "modality": "MG",
        "data_type": "dicom",
        "class_names": ["benign", "malignant"],
        "in_channels": 1,
        "image_size": 116,
        "intensity_transform": percentiles("robust scaling: 0.5th percentile to 0, 99.5th to 1, clipped"),
        "native_units": "gray levels of 255",
        "native_per_unit": 255.0,
        "eps_grid": MEDICAL_EPS_GRID,
        "augment": True,
        "batch_size": 50, "max_epochs": 100, "patience": 20, "learning_rate": 0.0002, "lr_decay": 1e-6, "momentum": 0.9,
        "adv_eps": 0.002, "adv_max_epochs": 100,
        "triage_eps_max": 0.02,
        "demo": texture_demo_profile("mass-texture"),
        "prepare": "scripts/prepare_cbis_ddsm.py",
        "paper": {"clean": 76.43, "pgd_0.004": 23.9, "table_s5_adv_pgd": 55.36, "triage_retained": 80.13},
    },
    "brain_lesion_mri_classification": {
        "title": "Brain lesion MRI classification",
        "data_set": "brain-metastasis MRI registry (institutional)",
        "demo_dataset": "brain_lesion_mri",
        "modality": "MR",
        "data_type": "nibabel",
        "class_names": ["no_tumor", "tumor"],
        "in_channels": 1,
        "image_size": 224,
        "intensity_transform": percentiles("robust scaling: 0.5th percentile to 0, 99.5th to 1, clipped"),
        "native_units": "gray levels of 255",
        "native_per_unit": 255.0,
        "eps_grid": MEDICAL_EPS_GRID,
        "augment": True,
        "batch_size": 50, "max_epochs": 100, "patience": 5, "learning_rate": 0.0002, "lr_decay": 1e-6, "momentum": 0.9,
        "adv_eps": 0.004, "adv_max_epochs": 200,
        "triage_eps_max": 0.02,
        "demo": texture_demo_profile("necrotic-core-texture"),
        "prepare": "scripts/prepare_brain_mri.py",
        "prepare_how": "The registry is private: list your own NIfTI volumes and lesions in a `lesions.csv` table "
                       "(`patient_id, image, x, y, z, label`; see `monai_adv.prepare.brain_mri`) and convert them with",
        "prepare_source": "folder of the volumes and lesions.csv",
        "paper": {"clean": 93.64, "pgd_0.004": 6.36, "table_s5_adv_pgd": 80.45, "triage_retained": 98.82},
    },
    "mnist_digit_classification": {
        "title": "MNIST digit classification (non-medical control)",
        "data_set": "MNIST",
        "demo_dataset": "mnist_digit",
        "modality": "none",
        "data_type": "png",
        "class_names": [str(d) for d in range(10)],
        "in_channels": 1,
        "image_size": 32,
        "intensity_transform": window(0.0, 255.0, "8-bit gray levels to [0, 1]"),
        "native_units": "gray levels of 255",
        "native_per_unit": 255.0,
        "eps_grid": [0.001, 0.002, 0.004, 0.006, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3],
        "augment": False,
        "batch_size": 64, "max_epochs": 20, "patience": 1, "learning_rate": 0.01, "lr_decay": 0.0, "momentum": 0.0,
        "adv_eps": 0.2, "adv_max_epochs": 50,
        "triage_eps_max": 0.5,
        "prepare": "scripts/prepare_mnist.py",
        "paper": {"clean": 99.1, "pgd_0.004": 99.0},
    },
    "cifar10_object_classification": {
        "title": "CIFAR-10 object classification (non-medical control)",
        "data_set": "CIFAR-10",
        "demo_dataset": "cifar10_object",
        "modality": "none",
        "data_type": "png",
        "class_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "in_channels": 3,
        "image_size": 32,
        "intensity_transform": window(0.0, 255.0, "8-bit RGB levels to [0, 1]"),
        "native_units": "gray levels of 255",
        "native_per_unit": 255.0,
        "eps_grid": [0.001, 0.002, 0.004, 0.006, 0.01, 0.02, 0.03, 0.05],
        "augment": False,
        "batch_size": 128, "max_epochs": 60, "patience": 10, "learning_rate": 0.001, "lr_decay": 1e-5, "momentum": 0.9,
        "adv_eps": 0.02, "adv_max_epochs": 100,
        "triage_eps_max": 0.05,
        "prepare": "scripts/prepare_cifar10.py",
        "paper": {"clean": 86.1, "pgd_0.004": 71.9},
    },
}

# The CPU demo profile shared by every bundle: small images, a VGG16 at 1/8 width, few epochs, generated data.
DEMO = {
    "image_size": 32,
    "network_width": 0.125,
    "learning_rate": 0.003,
    "lr_decay": 0.0,
    "momentum": 0.9,
    "batch_size": 32,
    "max_epochs": 40,
    "patience": 10,
    # the worst case's black-box budget on the CPU (the overlays' default is 1000): about 14 s per sweep of the CT
    # demo's 134 test images instead of 130 s
    "square_queries": 100,
    # APGD-T (10 classes: MNIST, CIFAR-10) on the 3 runner-up classes instead of AutoAttack's 9: on the CPU the
    # controls' worst case took most of the --bundles all study
    "apgdt_targets": 3,
}

IMPORTS = [
    "$import os",
    "$import sys",
    "$import torch",
    "$import monai_adv",
    "$import monai_adv.bundle_errors",  # a failed run ends with the DataError naming the bad file or item
]


# Before any work: the seed, the data list checked once (every problem at once, before anything is written), then
# the folders the run writes made and proved writable.
WRITABLE_OUTPUT = "$monai_adv.utils.ensure_writable_dir(@output_dir, 'output_dir')"
WRITABLE_CHECKPOINTS = (
    "$monai_adv.utils.ensure_writable_dir(@validate#checkpoint_saver#save_dir, 'validate#checkpoint_saver#save_dir')"
)
SEED = "$monai.utils.set_determinism(seed=@seed)"
TRAIN_INITIALIZE = [SEED, "$@data#items", WRITABLE_OUTPUT, WRITABLE_CHECKPOINTS]
EVALUATE_INITIALIZE = [SEED, "$@data#items", WRITABLE_OUTPUT]
INFERENCE_INITIALIZE = [SEED, "$@data", WRITABLE_OUTPUT]


def common_ids(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Paths, device and the per-bundle block: the top of every config."""
    return {
        "imports": IMPORTS,
        "bundle_name": name,
        "bundle_root": "$monai_adv.bundle_root.working_bundle_root(@bundle_name)",
        "dataset_dir": f"/workspace/data/{name}",
        "datalist_file": "$os.path.join(@dataset_dir, 'datalist.json')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "models_dir": "$os.path.join(@bundle_root, 'models')",
        "ckpt_path": "$os.path.join(@models_dir, 'model.pt')",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "seed": 0,
        "modality": spec["modality"],
        "native_units": spec["native_units"],
        "native_per_unit": spec["native_per_unit"],
        "class_names": "$monai_adv.datacheck.datalist_classes(@datalist_file)",
        "num_classes": "$len(@class_names)",
        "spatial_dims": 2,
        "in_channels": spec["in_channels"],
        "image_size": [spec["image_size"], spec["image_size"]],
        "intensity_transform": spec["intensity_transform"],
        "network_width": 1.0,
        "network_dropout": 0.5,
        "network_batch_norm": False,
        "pretrained_path": None,
        "network_def": {
            "_target_": "monai_adv.networks.PaperVGG16",
            "spatial_dims": "@spatial_dims",
            "in_channels": "@in_channels",
            "num_classes": "@num_classes",
            "input_size": "@image_size",
            "width": "@network_width",
            "dropout": "@network_dropout",
            "batch_norm": "@network_batch_norm",
            "norm_mean": 0.5,
            "norm_std": 0.25,
            "pretrained_path": "@pretrained_path",
        },
        "network": "$@network_def.to(@device)",
        "require_model_identity": True,
        "model_identity": {
            "_target_": "monai_adv.checkpoints.ModelIdentity",
            "_desc_": "saved with every checkpoint and compared on load: another bundle's model stops the run",
            "bundle": "@bundle_name",
            "network": "@network_def",
            "class_names": "@class_names",
            "required": "@require_model_identity",
            "settings": {
                "image_size": "@image_size",
                "network_width": "@network_width",
                "network_batch_norm": "@network_batch_norm",
            },
        },
    }


def check_data(sections: str, val_fraction: str = "None") -> str:
    """The expression checking the data list once, before any work (every problem reported at once)."""
    return (
        f"$monai_adv.datacheck.check_datalist(@datalist_file, {sections}, class_names=@class_names, "
        "spatial_dims=@spatial_dims, channels=@in_channels, native_units=@native_units, "
        f"val_fraction={val_fraction}, seed=@seed, dataset_dir=@dataset_dir)"
    )


def load_transforms(with_label: bool) -> list[dict[str, Any]]:
    """Loading and preprocessing; ``with_label`` for the data-list runs. Inference's own transforms keep every key:
    MONAI Label passes its request through them, and ``load_inference_items`` gives every item the same keys."""
    transforms: list[dict[str, Any]] = [
        {
            "_target_": "monai_adv.transforms.LoadCropd",
            "keys": "image",
            "spatial_dims": "@spatial_dims",
            "channels": "@in_channels",
        },
    ]
    if with_label:
        transforms += [
            {
                "_target_": "SelectItemsd",
                "_desc_": "only the keys the engines use: batches of items with other optional keys would not collate",
                "keys": ["image", "label", "id"],
            },
            {"_target_": "monai_adv.transforms.CheckLabeld", "keys": "label", "num_classes": "@num_classes"},
        ]
    transforms += [
        "@intensity_transform",
        {"_target_": "Resized", "keys": "image", "spatial_size": "@image_size", "mode": "area"},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": False},
    ]
    return transforms


POSTPROCESSING = {
    "_target_": "Compose",
    "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "CopyItemsd", "keys": "pred", "names": "prob"},
        {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False], "to_onehot": "$[@num_classes, @num_classes]"},
    ],
}


# weights_only=True, and one error naming the file when it is missing or of another architecture
CHECKPOINT_LOADER = {
    "_target_": "monai_adv.handlers.StrictCheckpointLoad",
    "load_path": "@ckpt_path",
    "load_dict": {"model": "@network", "identity": "@model_identity"},
    "map_location": "@device",
}


def accuracy_metric() -> dict[str, Any]:
    """Accuracy over images: per-class scores against class indices (two one-hot tensors would be scored per
    element)."""
    return {"_target_": "ignite.metrics.Accuracy", "output_transform": "$monai_adv.metrics.scores_and_class_indices"}


# the mean training loss of each epoch, printed and logged beside the training accuracy
LOSS_METRIC = {"_target_": "ignite.metrics.Average", "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}
# a progress bar on a terminal only: in a log file every refresh appends to one ever longer line
PROGRESS_BAR = {"_target_": "ignite.handlers.ProgressBar", "_disabled_": "$not sys.stderr.isatty()", "persist": False}


def train_config(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    random_transforms = []
    if spec["augment"]:
        random_transforms = [
            {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0},
            {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 1},
            {"_target_": "RandRotated", "keys": "image", "range_x": "$np.deg2rad(20.0)", "prob": 0.5, "padding_mode": "border"},
        ]
    config = common_ids(name, spec)
    config.update(
        {
            "batch_size": spec["batch_size"],
            "max_epochs": spec["max_epochs"],
            "patience": spec["patience"],
            "learning_rate": spec["learning_rate"],
            "optimizer_lr": "@learning_rate",
            "trainer_max_epochs": "@max_epochs",
            "augmentation": random_transforms,
            "lr_decay": spec["lr_decay"],
            "momentum": spec["momentum"],
            "val_fraction": 0.2,
            "val_interval": 1,
            "precise_batch_norm": False,
            "num_workers": 0,
            "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
            "optimizer": {
                "_target_": "torch.optim.SGD",
                "params": "$@network.parameters()",
                "lr": "@optimizer_lr",
                "momentum": "@momentum",
                "nesterov": "$@momentum > 0",
            },
            "lr_scheduler": {
                "_target_": "torch.optim.lr_scheduler.LambdaLR",
                "_desc_": "Keras-style time decay per iteration: lr / (1 + lr_decay * iteration)",
                "optimizer": "@optimizer",
                "lr_lambda": "$lambda iteration: 1.0 / (1.0 + @lr_decay * iteration)",
            },
            "data": {
                "sections": ["training"],
                "items": check_data("@data#sections", val_fraction="@val_fraction"),
                "training_items": "$@data#items['training']",
                "train_val_split": "$monai_adv.datalist.carve_validation(@data#training_items, fraction=@val_fraction, seed=@seed)",
            },
            "train": {
                "deterministic_transforms": load_transforms(with_label=True),
                "random_transforms": "@augmentation",
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": "$@train#deterministic_transforms + @train#random_transforms",
                },
                "dataset": {
                    "_target_": "CacheDataset",
                    "data": "$@data#train_val_split[0]",
                    "transform": "@train#preprocessing",
                    "cache_rate": 1.0,
                    "num_workers": "@num_workers",
                    "progress": False,
                },
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@train#dataset",
                    "batch_size": "@batch_size",
                    "shuffle": True,
                    "num_workers": "@num_workers",
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": POSTPROCESSING,
                "handlers": [
                    {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "epoch_level": False, "print_lr": False},
                    {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "epoch_level": True, "interval": "@val_interval"},
                    {
                        "_target_": "StatsHandler",
                        "tag_name": "train_loss",
                        "iteration_log": False,
                        "output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
                    },
                    {
                        "_target_": "TensorBoardStatsHandler",
                        "log_dir": "$os.path.join(@output_dir, 'tensorboard')",
                        "tag_name": "train_loss",
                        "output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
                    },
                    PROGRESS_BAR,
                ],
                "key_metric": {"train_accuracy": accuracy_metric()},
                "additional_metrics": {"train_loss": LOSS_METRIC},
                "trainer": {
                    "_target_": "SupervisedTrainer",
                    "max_epochs": "@trainer_max_epochs",
                    "device": "@device",
                    "train_data_loader": "@train#dataloader",
                    "network": "@network",
                    "loss_function": "@loss",
                    "optimizer": "@optimizer",
                    "inferer": "@train#inferer",
                    "postprocessing": "@train#postprocessing",
                    "key_train_metric": "@train#key_metric",
                    "additional_metrics": "@train#additional_metrics",
                    "train_handlers": "@train#handlers",
                    "amp": False,
                },
            },
            "validate": {
                "preprocessing": {"_target_": "Compose", "transforms": "%train#deterministic_transforms"},
                "dataset": {
                    "_target_": "CacheDataset",
                    "data": "$@data#train_val_split[1]",
                    "transform": "@validate#preprocessing",
                    "cache_rate": 1.0,
                    "num_workers": "@num_workers",
                    "progress": False,
                },
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@validate#dataset",
                    "batch_size": "@batch_size",
                    "shuffle": False,
                    "num_workers": "@num_workers",
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": "%train#postprocessing",
                "early_stop": {
                    "_target_": "EarlyStopHandler",
                    "_desc_": "patience in validation rounds without a better validation accuracy; trainer set in run",
                    "patience": "@patience",
                    "score_function": "$lambda engine: engine.state.metrics['val_accuracy']",
                    "epoch_level": True,
                },
                "handlers": [
                    "@validate#early_stop",
                    {"_target_": "StatsHandler", "iteration_log": False},
                    {
                        "_target_": "TensorBoardStatsHandler",
                        "log_dir": "$os.path.join(@output_dir, 'tensorboard')",
                        "iteration_log": False,
                    },
                    "@validate#checkpoint_saver",
                    "@validate#precise_batch_norm",
                ],
                "precise_batch_norm": {
                    "_target_": "monai_adv.handlers.PreciseBatchNorm",
                    "_desc_": (
                        "with precise_batch_norm: BatchNorm statistics averaged over the training batches before "
                        "each validation (no effect on a network without BatchNorm)"
                    ),
                    "network": "@network",
                    "data_loader": "@train#dataloader",
                    "device": "@device",
                    "enabled": "@precise_batch_norm",
                },
                "checkpoint_saver": {
                    "_target_": "monai_adv.handlers.AtomicCheckpointSaver",
                    "_desc_": "keeps the weights of the best validation accuracy at ckpt_path, written atomically",
                    "save_dir": "$os.path.dirname(@ckpt_path)",
                    "save_dict": {"model": "@network", "identity": "@model_identity"},
                    "save_key_metric": True,
                    "key_metric_filename": "$os.path.basename(@ckpt_path)",
                },
                "key_metric": {"val_accuracy": accuracy_metric()},
                "evaluator": {
                    "_target_": "SupervisedEvaluator",
                    "device": "@device",
                    "val_data_loader": "@validate#dataloader",
                    "network": "@network",
                    "inferer": "@validate#inferer",
                    "postprocessing": "@validate#postprocessing",
                    "key_val_metric": "@validate#key_metric",
                    "val_handlers": "@validate#handlers",
                    "amp": False,
                },
            },
            "initialize": TRAIN_INITIALIZE,
            "run": ["$@validate#early_stop.set_trainer(@train#trainer)", "$@train#trainer.run()"],
            "finalize": [],
        }
    )
    return config


def evaluate_config() -> dict[str, Any]:
    """Overlay on train.json: the test split, the trained checkpoint, metrics to ``output_dir/metrics.json``."""
    return {
        "data#sections": ["test"],
        "data#test_items": "$@data#items['test']",
        "validate#dataset#data": "@data#test_items",
        "validate#key_metric": {"test_accuracy": accuracy_metric()},
        "validate#handlers": [
            CHECKPOINT_LOADER,
            {"_target_": "StatsHandler", "iteration_log": False},
            {
                "_target_": "monai_adv.handlers.ClassificationMetricsWriter",
                "output_dir": "@output_dir",
                "class_names": "@class_names",
                "filename": "metrics.json",
            },
            {
                "_target_": "monai_adv.handlers.PredictionCSVWriter",
                "output_dir": "@output_dir",
                "class_names": "@class_names",
                "filename": "test_predictions.csv",
            },
        ],
        "initialize": EVALUATE_INITIALIZE,
        "run": ["$@validate#evaluator.run()"],
        "finalize": [],
    }


def inference_config(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Per-image class and probability to ``output_dir/predictions.csv`` for a folder or a data-list section; the
    referral (sensitivity bracket and refer flag) is monai_adv's ``referral`` overlay on top of this config."""
    config = common_ids(name, spec)
    config.update(
        {
            "input_path": "@datalist_file",
            "input_key": "test",
            "skip_unreadable": False,
            "input_units": None,
            "default_class_names": spec["class_names"],
            "class_names": "$monai_adv.checkpoints.checkpoint_class_names(@ckpt_path, default=@default_class_names)",
            "batch_size": 8,
            "num_workers": 0,
            "data": (
                "$monai_adv.inputs.load_inference_items(@input_path, @input_key, spatial_dims=@spatial_dims, "
                "channels=@in_channels, native_units=@native_units, skip_unreadable=@skip_unreadable, "
                "skipped_file=os.path.join(@output_dir, 'skipped.csv'), log=print, input_units=@input_units)"
            ),
            "preprocessing": {"_target_": "Compose", "transforms": load_transforms(with_label=False)},
            "dataset": {"_target_": "Dataset", "data": "@data", "transform": "@preprocessing"},
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@dataset",
                "batch_size": "@batch_size",
                "shuffle": False,
                "num_workers": "@num_workers",
            },
            "inferer": {"_target_": "SimpleInferer"},
            "postprocessing": {"_target_": "Compose", "transforms": POSTPROCESSING["transforms"][:2]},
            "handlers": [
                CHECKPOINT_LOADER,
                {"_target_": "StatsHandler", "iteration_log": False},
                {
                    "_target_": "monai_adv.handlers.PredictionCSVWriter",
                    "output_dir": "@output_dir",
                    "class_names": "@class_names",
                    "filename": "predictions.csv",
                },
            ],
            "evaluator": {
                "_target_": "SupervisedEvaluator",
                "device": "@device",
                "val_data_loader": "@dataloader",
                "network": "@network",
                "inferer": "@inferer",
                "postprocessing": "@postprocessing",
                "val_handlers": "@handlers",
                "amp": False,
            },
            "initialize": INFERENCE_INITIALIZE,
            "run": ["$@evaluator.run()"],
            "finalize": [],
        }
    )
    return config


# Table S4 for every bundle: PGD-7 (step eps/4, one random start) on half of every batch of 128, from the clean
# model; only eps and the epoch budget differ (SPECS). The overlay's defaults are the attack, its steps and ratio.
ADVERSARIAL_BATCH_SIZE = 128


def overlay_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """``configs/adversarial.json``: this bundle's settings for monai_adv's overlays (``python -m monai_adv overlay
    <name>``), appended after the overlay's files. Everything else comes from the overlays and ``train.json``."""
    return {
        "_desc_": (
            "this bundle's settings for monai_adv's overlays (python -m monai_adv overlay <name>), appended after the "
            "overlay's files; demo.json, when used, comes after this file"
        ),
        "adv_class_names": "@class_names",
        "adv_input_space": {
            "_target_": "monai_adv.input_space.InputSpace",
            "_desc_": f"the network reads [0, 1] ({spec['intensity_transform']['_desc_']}); eps also in native units",
            "native_per_unit": "@native_per_unit",
            "native_units": "@native_units",
        },
        "adv_seed": "@seed",
        "adv_checkpoint_dict": {"model": "@network", "identity": "@model_identity"},
        "adv_init_ckpt": "$os.path.join(@models_dir, 'model.pt')",
        "robust_ckpt_path": "$os.path.join(@models_dir, 'model_adversarial.pt')",
        "eps_grid": spec["eps_grid"],
        "triage_eps_max": spec["triage_eps_max"],
        "adv_eps": spec["adv_eps"],
        "batch_size": ADVERSARIAL_BATCH_SIZE,
        "max_epochs": spec["adv_max_epochs"],
        "adv_learning_rate": "@learning_rate",
        "adv_max_epochs": "@max_epochs",
        "optimizer_lr": "@adv_learning_rate",
        "trainer_max_epochs": "@adv_max_epochs",
    }


# Handlers that only log or write: under torchrun they run on rank 0 and are disabled (never built) elsewhere.
RANK_ZERO_TARGETS = {"StatsHandler", "TensorBoardStatsHandler", "ignite.handlers.ProgressBar"}
NOT_RANK_ZERO = "$dist.get_rank() != 0"
DISTRIBUTED_DEVICE = "$torch.device(f\"cuda:{os.environ['LOCAL_RANK']}\" if torch.cuda.is_available() else 'cpu')"
def distributed_initialize(single_process: list[str]) -> list[str]:
    """``initialize`` under torchrun: the process group and the device, then the single-process ``initialize``
    (writable folders, seed, data check)."""
    return [
        "$import torch.distributed as dist",
        "$dist.is_initialized() or dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo')",
        "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
        *single_process,
    ]

# every rank waits for the others before the process group goes: a rank that tore gloo down while rank 0 was still
# saving its checkpoint aborted ("terminate called without an active exception", SIGABRT) now and then
DISTRIBUTED_FINALIZE = [
    "$dist.is_initialized() and dist.barrier()",
    "$dist.is_initialized() and dist.destroy_process_group()",
]


def rank_zero_only(handlers: list[Any], list_id: str) -> dict[str, str]:
    """``<list_id>#<i>#_disabled_`` on ranks other than 0 for the logging handlers of a rendered handler list."""
    return {
        f"{list_id}#{i}#_disabled_": NOT_RANK_ZERO if "_disabled_" not in h else f"$({h['_disabled_'][1:]}) or {NOT_RANK_ZERO[1:]}"
        for i, h in enumerate(handlers)
        if isinstance(h, dict) and h.get("_target_") in RANK_ZERO_TARGETS
    }


def multi_gpu_config(train: dict[str, Any]) -> dict[str, Any]:
    """Right after train.json for ``torchrun`` (before the ``adversarial_train`` overlay, whose ``+initialize``
    must follow this file's ``initialize``): DDP, distributed samplers, rank-0 logging and checkpoints.

    NCCL on GPUs, gloo on CPUs. Every rank keeps the LR schedule, validation, early stopping, the clean-checkpoint
    loader and the overfitting guard of adversarial training (validation accuracy is reduced across ranks by Ignite,
    so all ranks stop and roll back together); the logging handlers and the checkpoint saver are disabled on ranks
    other than 0, so only rank 0 logs and writes. The handler lists are not replaced, so the adversarial_train
    overlay appends to them (its attacks unwrap DDP and craft examples on each rank's shard).
    """
    return {
        "device": DISTRIBUTED_DEVICE,
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$@network_def.to(@device)",
            "device_ids": "$[@device] if torch.cuda.is_available() else None",
        },
        "train#sampler": {"_target_": "DistributedSampler", "dataset": "@train#dataset", "even_divisible": True, "shuffle": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        **rank_zero_only(train["train"]["handlers"], "train#handlers"),
        "validate#sampler": {"_target_": "DistributedSampler", "dataset": "@validate#dataset", "even_divisible": False, "shuffle": False},
        "validate#dataloader#sampler": "@validate#sampler",
        **rank_zero_only(train["validate"]["handlers"], "validate#handlers"),
        "validate#checkpoint_saver#_disabled_": NOT_RANK_ZERO,
        "validate#evaluator#val_handlers": "$[h for h in @validate#handlers if h is not None]",
        "initialize": distributed_initialize(TRAIN_INITIALIZE),
        "finalize": DISTRIBUTED_FINALIZE,
    }


def multi_gpu_evaluate_config(sweep: bool) -> dict[str, Any]:
    """For ``torchrun``, after train.json, evaluate.json, the ``attack_sweep`` (``sweep``) or ``triage`` overlay and
    ``adversarial.json``: each rank attacks whole batches of the test split
    (``monai_adv.distributed.BatchShardSampler``: batch k on rank k mod N, so every batch equals one of the
    single-process run), the handlers gather per-image results by id and rank 0 writes. Results equal the
    single-process run's for the same seed and batch size."""
    config = {
        "device": DISTRIBUTED_DEVICE,
        "validate#sampler": {
            "_target_": "monai_adv.distributed.BatchShardSampler",
            "_desc_": "batch k of the single-process order on rank k mod world size; no padding",
            "dataset": "@validate#dataset",
            "batch_size": "@batch_size",
        },
        "validate#dataloader#sampler": "@validate#sampler",
        **rank_zero_only(evaluate_config()["validate#handlers"], "validate#handlers"),
        "initialize": distributed_initialize(EVALUATE_INITIALIZE),
        "finalize": DISTRIBUTED_FINALIZE,
    }
    if sweep:  # the attack_sweep overlay's TensorBoard writer: one file, from rank 0
        config["attack_sweep#summary_writer#_disabled_"] = NOT_RANK_ZERO
    return config


def demo_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Last on top of any of the bundle's configs (overlays included): generated demo data, the CPU profile, the
    checkpoints kept in ``output_dir/models`` (``models_dir``, which ``ckpt_path``, ``adv_init_ckpt`` and
    ``robust_ckpt_path`` follow)."""
    return {
        "demo_cache_dir": None,
        "demo_seed": 0,
        "dataset_dir": (
            f"$os.path.dirname(monai_adv.demo.ensure_demo_data('{spec['demo_dataset']}', @demo_cache_dir, "
            "seed=@demo_seed))"
        ),
        "models_dir": "$os.path.join(@output_dir, 'models')",
        # the thread count is part of the profile: on the CPU one thread and two train different models
        "demo_threads": "$monai_adv.threads.threads_from_environment()",
        "+initialize": ["$torch.set_num_threads(@demo_threads)"],
        **DEMO,
        "image_size": [DEMO["image_size"], DEMO["image_size"]],
        **spec.get("demo", {}),
    }


def metadata(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    size = [spec["image_size"], spec["image_size"]]
    intensity = spec["intensity_transform"]["_desc_"]
    return {
        "schema": SCHEMA_URL,
        "version": VERSION,
        "changelog": {VERSION: "initial release: the VGG16 of Joel et al. 2022 with a CPU demo profile on generated data"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        # the model zoo's field for the packages a bundle needs beyond MONAI (MONAI 1.6.1 reads the older name,
        # optional_packages_version, as this one); monai_adv builds the network, checks the data and holds the
        # overlays (python -m monai_adv overlay <name>) that the robustness study appends to these configs
        "required_packages_version": {
            "monai_adv": VERSION,
            "pytorch-ignite": "0.5.5",
            "torchattacks": "3.5.1",
            "pydicom": "3.0.2",
            "nibabel": "5.4.2",
            "tensorboard": "2.20.0",
        },
        "name": spec["title"],
        "task": f"{spec['title']}: {' vs '.join(spec['class_names'])}, with adversarial-robustness evaluation",
        "description": (
            f"VGG16 classifier of Joel et al. (2022) for {spec['data_set']} crops, trained with SGD as in the paper's "
            f"Table S3. Inputs are scaled to [0, 1] ({intensity}) and normalised inside the network, so attack "
            "epsilons are in [0, 1] units for every bundle. configs/demo.json runs everything on generated demo data "
            "on a CPU."
        ),
        "authors": "monai-adv contributors",
        "copyright": "Copyright (c) monai-adv contributors",
        "data_source": f"{spec['data_set']}; prepare it with monai-adv's {spec['prepare']} (see docs/README.md)",
        "data_type": spec["data_type"],
        "image_classes": f"one channel per input channel ({spec['in_channels']}), intensity in [0, 1]",
        "label_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(spec["class_names"])),
        "pred_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(spec["class_names"])),
        "intended_use": (
            "Research on adversarial robustness of medical image classifiers. Not a medical device; not for "
            "clinical diagnosis."
        ),
        "references": [PAPER],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if spec["native_units"] == "HU" else "magnitude",
                    "modality": spec["modality"],
                    "num_channels": spec["in_channels"],
                    "spatial_shape": size,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {str(i): intensity for i in range(spec["in_channels"])},
                }
            },
            "outputs": {
                "pred": {
                    "type": "logits",
                    "format": "classes",
                    "num_channels": len(spec["class_names"]),
                    "spatial_shape": [len(spec["class_names"])],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): c for i, c in enumerate(spec["class_names"])},
                }
            },
        },
    }


def large_files() -> str:
    return (
        "# Large files of this bundle, fetched with\n"
        "#   python -m monai.bundle download_large_files --bundle_path <this bundle>\n"
        "# No trained weights are published: train with configs/train.json. The entry below is torchvision's ImageNet\n"
        "# VGG16, the paper's starting point; use it with --pretrained_path models/vgg16_imagenet.pth (2-D bundles at\n"
        "# full width only; only the convolutions are loaded).\n"
        "large_files:\n"
        '  - path: "models/vgg16_imagenet.pth"\n'
        '    url: "https://download.pytorch.org/models/vgg16-397923af.pth"\n'
    )


def docs_readme(name: str, spec: dict[str, Any]) -> str:
    paper = spec["paper"]
    classes = ", ".join(f"`{i}` {c}" for i, c in enumerate(spec["class_names"]))
    rows = [f"| clean test accuracy (Table S5 / Results) | {paper['clean']} |"]
    rows.append(f"| accuracy under PGD, epsilon 0.004 (Table 1) | {paper['pgd_0.004']} |")
    if "table_s5_adv_pgd" in paper:
        rows.append(f"| adversarially trained, PGD at epsilon 0.003 (Table S5) | {paper['table_s5_adv_pgd']} |")
        rows.append(f"| accuracy after referring the 20% most sensitive images (Table 2) | {paper['triage_retained']} |")
    table = "\n".join(rows)
    s = spec
    return f"""# {s['title']}

A MONAI bundle of monai-adv (the `monai_adv` package): the VGG16 classifier of Joel et al. (JCO Clinical Cancer
Informatics 2022) for {s['data_set']}, trained, evaluated and run in inference with MONAI, ready for monai_adv's
overlays: adversarial attack sweeps, adversarial training, the before/after comparison and sensitivity triage.

## Data
- Source: {s['data_set']}. {s.get('prepare_how', 'Convert the publisher' + chr(39) + 's files with')} monai-adv's `python {s['prepare']} --source <{s.get('prepare_source', 'downloaded folder')}> --output <dataset_dir>`;
  it writes `datalist.json` (a MONAI data list of crops with label and pseudonymised patient id) and the crops. The
  split is 2:1 train:test **by patient**, classes balanced, seeded. A validation split (20 %) is carved from the
  training side, by patient, for early stopping and checkpoint choice; the test split is never used for either.
- Classes of the prepared {s['data_set']} data: {classes}. Every run takes its class names from the data list's `classes`.
- Demo data: `configs/demo.json` generates a small data set in the real file formats on first use (cached under
  `$MONAI_ADV_DEMO_DIR` or `~/.cache/monai_adv/demo`; override with `--demo_cache_dir`).

## Preprocessing
- Loading: `monai_adv.transforms.LoadCropd` reads DICOM (rescale slope/intercept applied), NIfTI or PNG; a missing
  or corrupt file, an image of the wrong dimensionality or channel count, NaN pixels or a label outside the classes
  raise one `monai_adv.io.DataError` naming the item. Checkpoints are read with `weights_only=True`
  (`monai_adv.handlers.StrictCheckpointLoad`); a missing file or one of another architecture stops the run with
  one error naming the file and what differs.
- Intensity to [0, 1]: {s['intensity_transform']['_desc_']}. Native units: {s['native_units']}.
- Resized to {s['image_size']} x {s['image_size']} (`image_size`); {'training augmentation as the paper: flips on both axes and rotations within +-20 degrees.' if s['augment'] else 'no augmentation (as the paper for this control).'}
- The network normalises its [0, 1] input itself (mean 0.5, std 0.25), so attacks and their epsilon work in [0, 1].

## Model and training
`monai_adv.networks.PaperVGG16` (Table S2: 13 conv layers, FC 4096 -> 1024 -> {len(s['class_names'])}). SGD as Table S3:
lr {s['learning_rate']}, decay {s['lr_decay']}, momentum {s['momentum']} (Nesterov when > 0), batch {s['batch_size']},
at most {s['max_epochs']} epochs, early stopping with patience {s['patience']} on validation accuracy; the best
validation checkpoint is kept at `ckpt_path`.

## Commands
Run from inside this bundle (`cd` into it), with `monai_adv` installed (`metadata.json`, `required_packages_version`).
Outputs go to `eval/` and checkpoints to `models/` under `bundle_root`; run from anywhere else, pass
`--bundle_root <this folder>` (the configs stop with an error naming `bundle_root` rather than share `./eval` and
`./models` with another bundle).

    python -m monai.bundle run --config_file configs/train.json --dataset_dir <dataset_dir>
    python -m monai.bundle run --config_file "['configs/train.json','configs/evaluate.json']" --dataset_dir <dataset_dir>
    python -m monai.bundle run --config_file configs/inference.json --input_path <image file, folder or datalist.json>
    torchrun --standalone --nnodes=1 --nproc_per_node=<N> -m monai.bundle run --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir <dataset_dir>

The robustness study is monai_adv's overlays on these configs: `python -m monai_adv overlay <name> <configs>
--then configs/adversarial.json` prints the `--config_file` list: the bundle's configs, the overlay's files, then
`configs/adversarial.json`, this bundle's settings for them: eps grid {s['eps_grid']}, triage up to eps
{s['triage_eps_max']}, adversarial training at eps {s['adv_eps']} for at most {s['adv_max_epochs']} epochs with batch {ADVERSARIAL_BATCH_SIZE} (also the batch
of the sweeps); eps in [0, 1] units, also reported in {s['native_units']}.

    python -m monai.bundle run --config_file "$(python -m monai_adv overlay attack_sweep configs/train.json configs/evaluate.json --then configs/adversarial.json)" --dataset_dir <dataset_dir>
    python -m monai.bundle run --config_file "$(python -m monai_adv overlay adversarial_train configs/train.json --then configs/adversarial.json)" --dataset_dir <dataset_dir>
    python -m monai.bundle run --config_file "$(python -m monai_adv overlay compare configs/train.json configs/evaluate.json --then configs/adversarial.json)" --dataset_dir <dataset_dir>
    python -m monai.bundle run --config_file "$(python -m monai_adv overlay triage configs/train.json configs/evaluate.json --then configs/adversarial.json)" --dataset_dir <dataset_dir>
    python -m monai.bundle run --config_file "$(python -m monai_adv overlay referral configs/inference.json --then configs/adversarial.json)" --input_path <image file, folder or datalist.json>
    torchrun --standalone --nnodes=1 --nproc_per_node=<N> -m monai.bundle run --config_file "$(python -m monai_adv overlay adversarial_train configs/train.json configs/multi_gpu_train.json --then configs/adversarial.json)" --dataset_dir <dataset_dir>
    torchrun --standalone --nnodes=1 --nproc_per_node=<N> -m monai.bundle run --config_file "$(python -m monai_adv overlay attack_sweep configs/train.json configs/evaluate.json --then configs/adversarial.json --then configs/multi_gpu_attack.json)" --dataset_dir <dataset_dir>
    torchrun --standalone --nnodes=1 --nproc_per_node=<N> -m monai.bundle run --config_file "$(python -m monai_adv overlay triage configs/train.json configs/evaluate.json --then configs/adversarial.json --then configs/multi_gpu_triage.json)" --dataset_dir <dataset_dir>

The sweep, the comparison and the triage run on the test split (`evaluate.json`), and also write its
`metrics.json` and `test_predictions.csv`. Adversarial training starts from `models/model.pt` (`adv_init_ckpt`) and
keeps the checkpoint with the best white-box PGD accuracy on the validation split at `models/model_adversarial.pt`
(`robust_ckpt_path`), which the comparison sweeps beside the original model. The referral reads the threshold from
`eval/triage.json` of a triage run (`--triage_file` to choose another) and writes `referral.csv`. Under `torchrun`
`multi_gpu_train.json` comes right after `train.json`, and `multi_gpu_attack.json` and `multi_gpu_triage.json` after
`adversarial.json`.

Before any work, every run checks its data list once (sections, ids, labels against `classes`, the validation
split, every image's header) and stops with one error listing every problem. The class names are the data list's
`classes`; a checkpoint records its bundle, network and classes, and loading it into another bundle (or with other
classes) stops the run. Inference takes the class names from the checkpoint; a file it cannot use (unreadable, or
not an image: a DICOM SEG, RTSTRUCT, DICOMDIR...) stops it, unless `--skip_unreadable true`, which leaves such
files out and lists them with the reason in `output_dir/skipped.csv`.

Under `torchrun` the attack sweep and the triage give the same results as one process with the same seed and batch
size: every image's PGD randomness is keyed by its id, each process attacks whole batches of the single-process order,
and rank 0 gathers the per-image results by id and writes.

Add `configs/demo.json` as the last config file (and `--output_dir <dir>`) to run on the demo data with the CPU
profile (32 x 32 images, VGG16 at 1/8 width, batch {DEMO['batch_size']}, at most {s.get('demo', {}).get('max_epochs', DEMO['max_epochs'])} epochs, adversarial
training included); checkpoints then go to `<output_dir>/models`, and `--dataset_dir` still wins over the demo data.
The demo profile runs torch on `OMP_NUM_THREADS` CPU threads, or on one when that is unset (`demo_threads`): on the
CPU one thread and two train different models, and the profile was measured on one.
Outputs: `metrics.json` (accuracy, ROC AUC, confusion matrix) and `test_predictions.csv` from evaluate,
`predictions.csv` from inference, `attack_sweep.*` and `adversarial_examples.png` from the sweep,
`robustness_comparison.*` from the comparison, `sensitivity.csv`, `triage.json` and `triage.png` from the triage,
TensorBoard logs in `output_dir/tensorboard`.

## Intended use
Research on the adversarial robustness of medical image classifiers. Not a medical device. Bundle configs execute
code (MONAI `$` expressions): run only bundles you trust.

## The paper's figures ({s['data_set']}, full VGG16; ours depend on your data)
| quantity | paper (%) |
|---|---|
{table}

## Reference
{PAPER}
"""


def render(root: Path = ROOT) -> dict[Path, str]:
    """All bundle files as ``{path: text}``."""
    files: dict[Path, str] = {}

    def dump(obj: Any) -> str:
        return json.dumps(obj, indent=4) + "\n"

    for name, spec in SPECS.items():
        base = root / "bundles" / name
        configs = base / "configs"
        files[configs / "metadata.json"] = dump(metadata(name, spec))
        files[configs / "train.json"] = dump(train_config(name, spec))
        files[configs / "evaluate.json"] = dump(evaluate_config())
        files[configs / "inference.json"] = dump(inference_config(name, spec))
        files[configs / "adversarial.json"] = dump(overlay_settings(spec))
        files[configs / "multi_gpu_train.json"] = dump(multi_gpu_config(train_config(name, spec)))
        files[configs / "multi_gpu_attack.json"] = dump(multi_gpu_evaluate_config(sweep=True))
        files[configs / "multi_gpu_triage.json"] = dump(multi_gpu_evaluate_config(sweep=False))
        files[configs / "demo.json"] = dump(demo_config(spec))
        files[configs / "logging.conf"] = (TEMPLATE / "logging.conf").read_text()
        files[base / "LICENSE"] = (TEMPLATE / "LICENSE").read_text()
        files[base / "large_files.yml"] = large_files()
        files[base / "docs" / "README.md"] = docs_readme(name, spec)
    return files


def unrendered(files: dict[Path, str], root: Path = ROOT) -> list[Path]:
    """Config files in the bundles' ``configs/`` folders that the renderer no longer writes (a config it dropped)."""
    folders = {p.parent for p in files if p.parent.name == "configs"}
    found = (p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.is_file())
    return sorted(p for p in found if p not in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a bundle file differs")
    args = parser.parse_args(argv)
    files = render()
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    extra = unrendered(files)
    if args.check:
        for p in stale:
            print(f"differs from scripts/render_bundles.py: {p.relative_to(ROOT)}")
        for p in extra:
            print(f"not written by scripts/render_bundles.py: {p.relative_to(ROOT)}")
        return 1 if stale or extra else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[p])
    for p in extra:
        p.unlink()
    print(f"wrote {len(stale)} of {len(files)} bundle files" + (f", removed {len(extra)}" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
