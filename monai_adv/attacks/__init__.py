"""L-infinity adversarial attacks in the [0, 1] input space (FGSM, BIM, PGD, APGD, APGD-T, Square) and a torchattacks
adapter.

All attacks are callables ``attack(images, labels=None) -> adversarial images`` with torchattacks 3.5.1 semantics;
see :mod:`monai_adv.attacks.base` for the shared conventions. One module per job: ``base`` (the call protocol,
:class:`LinfAttack`), ``fgsm``, ``bim``, ``pgd``, ``apgd``, ``apgdt``, ``square`` (each attack's whole loop),
``checks`` (input checks), ``loss`` (losses and prediction), ``seeding`` (per-sample seeds), ``model_state`` (eval
mode, parameter gradients), ``library`` (any torchattacks attack by name), ``config`` (:class:`AttackConfig`,
:data:`AttackFactory`) and ``ensemble`` (the default worst-case ensemble).
"""

from .apgd import APGD
from .apgdt import APGDT
from .base import AttackResult, LinfAttack
from .bim import BIM
from .checks import RANGE_TOLERANCE, check_images, check_labels
from .config import AttackConfig, AttackFactory
from .ensemble import APGDT_MIN_CLASSES, worst_case_ensemble
from .fgsm import FGSM
from .library import LibraryAttack, TwoLogits, UnsupportedAttackError, library_attack_names
from .loss import classification_loss, predict
from .model_state import eval_mode
from .pgd import PGD
from .square import Square

__all__ = [
    "RANGE_TOLERANCE",
    "AttackResult",
    "LinfAttack",
    "FGSM",
    "BIM",
    "PGD",
    "APGD",
    "APGDT",
    "Square",
    "AttackConfig",
    "AttackFactory",
    "APGDT_MIN_CLASSES",
    "worst_case_ensemble",
    "LibraryAttack",
    "TwoLogits",
    "UnsupportedAttackError",
    "library_attack_names",
    "check_images",
    "check_labels",
    "classification_loss",
    "eval_mode",
    "predict",
]
