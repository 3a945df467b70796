"""MONAI Label inference task for this project's classification bundles: the prediction plus the referral flag.

:class:`SensitivityReferralInferTask` is a thin subclass of MONAI Label's ``BundleInferTask``
(``monailabel.tasks.infer.bundle``, monailabel 0.8.5). For one image it returns what MONAI Label returns for a
classification bundle, ``{"prediction": [{"idx", "label", "score"}, ...]}`` with the softmax probability of every
class, and adds the image's adversarial sensitivity and the referral decision of the paper's Table 2:

- ``class``, ``probability``: the predicted class (its name) and its probability.
- ``eps_lo``, ``eps_hi``: the bracket of the smallest L-infinity eps, in the network's [0, 1] input units, at which
  PGD changes the prediction (:func:`monai_adv.sensitivity.minimal_flip_eps`, bisection to ``eps_max / 256``).
  ``eps_hi`` is ``None`` (JSON ``null``) when no example was found up to ``eps_max``; then ``flipped`` is false and
  ``eps_lo`` equals ``eps_max``.
- ``eps_hi_native`` and ``native_units``: ``eps_hi`` in the bundle's native units (HU through the CT window), when
  its input space (``adv_input_space``) states them.
- ``refer``: ``eps_hi <= threshold`` (:func:`monai_adv.triage.flag_threshold`), with the threshold of a sensitivity
  triage run on labelled data (``triage.json``, read by :func:`monai_adv.handlers.triage.load_threshold`); never
  flipped images are not referred. ``threshold`` and ``triage_file`` say which threshold was used.

The search costs at most 9 probes x (``restarts`` + 1 warm start) x ``steps`` forward+backward passes of the image
(270 with the defaults; fewer when PGD flips early): about half a second for the demo profile on a 2-core CPU.

The bundle is read as ``monai.bundle run`` reads the referral: ``configs/inference.json``, then monai_adv's ``referral``
overlay (:func:`monai_adv.overlays.overlay_files`), then the bundle's settings for the overlays
(``configs/adversarial.json``, when it has one), then ``config_files`` and ``overrides``. The search takes its range
(``triage_eps_max``), its seed (``adv_seed``), the input space of the attacks (``adv_input_space``: the image in
[0, 1] units of the intensity window, whatever the network reads) and the default threshold file
(``triage_file``) from there.

This module is the only one of ``monai_adv`` that imports ``monailabel``; it needs the ``label`` extra, installed in
its own environment by ``bash scripts/setup_label_env.sh`` (``.venv-label``): monailabel 0.8.5 pins numpy<2 and
imports torchvision, and its server needs pydicom<3.

Use in a MONAI Label app (the app's ``main.py``; the bundle folder, e.g. ``<app>/model/lung_nodule_ct_classification``,
holds ``configs/`` and the trained ``models/model.pt``)::

    import os
    from monailabel.interfaces.app import MONAILabelApp
    from monai_adv.monailabel_task import SensitivityReferralInferTask

    class AdversarialTriageApp(MONAILabelApp):
        def init_infers(self):
            bundle = os.path.join(self.app_dir, "model", "lung_nodule_ct_classification")
            # the threshold comes from conf["triage_file"], else <bundle>/eval/triage.json (or pass triage_file=...)
            return {"lung_nodule_ct_classification": SensitivityReferralInferTask(bundle, self.conf)}

    # monailabel start_server --app <app> --studies <images> --conf triage_file <output_dir>/triage.json
    # POST /infer/lung_nodule_ct_classification?image=<id>  ->  {..., "class": "benign", "refer": true, ...}

A checkpoint trained with the demo overlay is served with ``config_files=["configs/demo.json"]`` (its 32 x 32 input
and 1/8 width); ``overrides`` sets single ids the same way (``{"triage_eps_max": 0.01}``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

try:
    from monailabel.interfaces.tasks.infer_v2 import InferType
    from monailabel.tasks.infer.bundle import BundleInferTask
except ImportError as e:  # the main environment has no monailabel (numpy<2, torchvision): it lives in .venv-label
    raise ImportError(
        f"monai_adv.monailabel_task needs monailabel 0.8.5 ({e}): install monai_adv[label] into its own environment, "
        "e.g. `bash scripts/setup_label_env.sh` (.venv-label)"
    ) from e

from monai_adv.handlers.triage import load_threshold
from monai_adv.input_space import InputSpace, as_input_space
from monai_adv.overlays import overlay_files
from monai_adv.sensitivity import minimal_flip_eps
from monai_adv.triage import flag_threshold

__all__ = ["SensitivityReferralInferTask", "REFERRAL_KEYS", "SETTINGS_FILE"]

SETTINGS_FILE = os.path.join("configs", "adversarial.json")
"""A bundle's settings for monai_adv's overlays, merged after the referral overlay when the bundle has the file."""

REFERRAL_KEYS = ("class", "probability", "eps_lo", "eps_hi", "eps_hi_native", "native_units", "flipped", "refer",
                 "threshold")
"""Keys this task adds to MONAI Label's classification result (and to the data dictionary)."""

_MIN_TORCH = (2, 6)  # from 2.6 on, torch.load (MONAI Label's checkpoint reader) defaults to weights_only=True


class SensitivityReferralInferTask(BundleInferTask):
    """``BundleInferTask`` for a classification bundle that adds the sensitivity bracket and the referral flag.

    Args:
        path: the bundle folder (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``; and
            ``configs/adversarial.json``, its settings for the overlays, when it has them).
        conf: the MONAI Label app's ``conf`` (strings); ``conf["triage_file"]`` is used when ``triage_file`` is not
            given, and ``conf["preload"]`` as by MONAI Label. Default: empty.
        triage_file: ``triage.json`` of a sensitivity triage run (monai_adv's ``triage`` overlay); its ``threshold``
            (eps, [0, 1] units) decides ``refer``. Default: the config's ``triage_file``, which the referral overlay
            sets to ``<output_dir>/triage.json``, ``output_dir`` being the bundle's (``<bundle>/eval``). Read once,
            here; a missing file raises ``FileNotFoundError``.
        eps_max: top of the sensitivity search in [0, 1] units. Default: the config's ``triage_eps_max`` (the
            bundle's settings, else the overlay's 0.02).
        tol: bracket width. Default ``eps_max / 256``.
        restarts: PGD random starts per probe. Default 2, as the triage and referral overlays.
        steps: PGD steps per probe (step eps/4). Default 10 (Table S1).
        seed: seed of the PGD random starts (the global RNG is left untouched). Default: the config's ``adv_seed``.
        config_files: more config files merged over the others, paths relative to ``path`` or absolute (e.g.
            ``["configs/demo.json"]`` for a checkpoint of the demo profile). Default none.
        overrides: config ids set last, ``{id: value}`` (``"#"`` for nesting). Default none.
        kwargs: passed to ``BundleInferTask``. Defaults set here: ``type="classification"``,
            ``add_post_restore=False`` (MONAI Label's ``Restored`` breaks a class-score output) and
            ``load_strict=True`` (a checkpoint of another architecture fails instead of loading partially).

    Raises:
        FileNotFoundError: no triage file at the resolved path (its path is in the message).
        ValueError: the triage file holds no threshold, or ``eps_max`` is not positive.
        RuntimeError: torch older than 2.6 (checkpoints must be read with ``weights_only=True``).
    """

    def __init__(
        self,
        path: str,
        conf: Mapping[str, str] | None = None,
        triage_file: str | os.PathLike | None = None,
        eps_max: float | None = None,
        tol: float | None = None,
        restarts: int = 2,
        steps: int = 10,
        seed: int | None = None,
        config_files: Sequence[str | os.PathLike] = (),
        overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < _MIN_TORCH:
            raise RuntimeError(
                f"SensitivityReferralInferTask needs torch >= 2.6 (found {torch.__version__}): MONAI Label reads the "
                "checkpoint with torch.load's default, which is weights_only=True only from 2.6 on"
            )
        conf = dict(conf or {})
        self._extra_config_files = [f if os.path.isabs(f) else os.path.join(path, f) for f in map(str, config_files)]
        for f in self._extra_config_files:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"config file not found: {f} (bundle {path})")
        self._overrides = dict(overrides or {})
        self.triage_file: str | None = None
        self.threshold: float = math.nan
        self.eps_max = math.nan
        self.tol, self.restarts, self.steps = tol, int(restarts), int(steps)
        self.seed = 0
        self.input_space: InputSpace = InputSpace()
        self.native_per_unit: float | None = None
        self.native_units: str | None = None
        kwargs.setdefault("type", InferType.CLASSIFICATION)
        kwargs.setdefault("add_post_restore", False)
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        if not self.is_valid():
            return  # MONAI Label logged why (no inference config or no model) and skips this bundle; so do we

        cfg = self.bundle_config
        # MONAI Label names the classes after metadata.json's channel_def (the bundle's published classes); a model
        # trained on other data means the classes its checkpoint records, and a checkpoint of another bundle is refused
        if "model_identity" in cfg.config:
            from monai_adv.checkpoints import read_checkpoint

            cfg.get_parsed_content("model_identity").check(read_checkpoint(self.path[0]), self.path[0])
        if "class_names" in cfg.config:
            self.labels = {str(name): index for index, name in enumerate(cfg.get_parsed_content("class_names"))}
        self.eps_max = float(eps_max if eps_max is not None else self._bundle_value("triage_eps_max", 0.02))
        if not self.eps_max > 0:
            raise ValueError(f"{path}: eps_max must be positive, got {self.eps_max}")
        self.seed = int(seed if seed is not None else self._bundle_value("adv_seed", 0))
        self.input_space = as_input_space(self._bundle_value("adv_input_space", None))
        self.native_per_unit = self.input_space.native_per_unit
        self.native_units = self.input_space.native_units if self.native_per_unit is not None else None
        if triage_file is None:
            triage_file = conf.get("triage_file") or self._bundle_value("triage_file", None) or os.path.join(
                cfg.get_parsed_content("output_dir"), "triage.json"
            )
        self.triage_file = os.path.abspath(str(triage_file))
        self.threshold = load_threshold(self.triage_file)

    def _bundle_value(self, key: str, default: Any) -> Any:
        return self.bundle_config.get_parsed_content(key) if key in self.bundle_config.config else default

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        """MONAI Label's parser of ``config`` with the referral overlay, the bundle's settings for it and
        ``config_files`` merged over it (as ``--config_file`` merges them: ``+`` keys append), ``overrides`` set,
        ``bundle_root`` set to ``path`` and ``ckpt_path`` to the checkpoint MONAI Label loads."""
        files = [config, *map(str, overlay_files("referral"))]
        settings = os.path.join(path, SETTINGS_FILE)
        if os.path.isfile(settings):
            files.append(settings)
        parser = ConfigParser()
        parser.read_config([*files, *self._extra_config_files])
        parser.update(self._overrides)
        parser.config.update({self.const.key_bundle_root(): path})  # type: ignore[union-attr]
        # the checkpoint MONAI Label loads (<bundle>/models/model.pt), so that the classes and the identity the
        # config reads from ckpt_path are that checkpoint's
        parser.config["ckpt_path"] = os.path.join(path, "models", self.const.model_pytorch())  # type: ignore[index]
        return parser

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info plus ``referral``: the threshold, its file and the search settings."""
        i = super().info()
        i["referral"] = {
            "threshold": self.threshold, "triage_file": self.triage_file, "eps_max": self.eps_max,
            "tol": self.tol if self.tol is not None else self.eps_max / 256, "restarts": self.restarts,
            "steps": self.steps, "native_units": self.native_units,
        }
        return i

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict[str, Any]:
        """MONAI Label's inference, then the sensitivity search on the same pre-processed image and network.

        ``data[input_key]`` is the pre-processed image ``(C, *spatial)`` (``(B, C, *spatial)`` with
        ``convert_to_batch=False``, then only the first image is scored), the network's input; PGD searches in its
        [0, 1] units of the input space. Adds :data:`REFERRAL_KEYS` except ``class`` and ``probability`` (the writer
        adds those from the post-processed scores).
        """
        data = super().run_inferer(data, convert_to_batch=convert_to_batch, device=device)
        network = self._get_network(device, data)
        images = data[self.input_key]
        images = images if torch.is_tensor(images) else torch.as_tensor(images)
        images = (images[None] if convert_to_batch else images[:1]).to(torch.device(device))
        res = minimal_flip_eps(
            self.input_space.wrap(network), self.input_space.to_unit(images), eps_max=self.eps_max, tol=self.tol,
            restarts=self.restarts, steps=self.steps, seed=self.seed,
        )
        eps_hi = float(res.eps_hi[0])
        flipped = bool(res.flipped[0])
        data.update({
            "eps_lo": float(res.eps_lo[0]),
            "eps_hi": eps_hi if flipped else None,  # JSON has no infinity
            "eps_hi_native": eps_hi * self.native_per_unit if flipped and self.native_per_unit else None,
            "native_units": self.native_units,
            "flipped": flipped,
            "refer": bool(flag_threshold([eps_hi], self.threshold)[0]),
            "threshold": self.threshold,
        })
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, dict]:
        """MONAI Label's classification result (``prediction``: one ``{idx, label, score}`` per class) plus
        :data:`REFERRAL_KEYS`. Returns ``(None, result)``: a classification writes no file."""
        pred = data[self.output_label_key]
        if not isinstance(pred, MetaTensor):  # MONAI Label's ClassificationWriter logs ``pred.array``
            data[self.output_label_key] = MetaTensor(torch.as_tensor(pred))
        result_file, result = super().writer(data, extension=extension, dtype=dtype)
        scores = result.get("prediction") or []
        if scores:
            best = max(scores, key=lambda s: s["score"])
            result["class"], result["probability"] = best["label"], best["score"]
        result.update({k: data[k] for k in REFERRAL_KEYS if k in data and k not in ("class", "probability")})
        return result_file, result
