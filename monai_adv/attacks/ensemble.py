"""The default worst-case ensemble: the attacks that follow the paper's FGSM, BIM and PGD in a sweep's worst case."""

from __future__ import annotations

from functools import partial

from .apgd import APGD
from .apgdt import APGDT, MIN_CLASSES as APGDT_MIN_CLASSES
from .checks import positive_int
from .config import AttackFactory
from .square import Square

__all__ = ["APGDT_MIN_CLASSES", "worst_case_ensemble"]


def worst_case_ensemble(
    num_classes: int, apgd_steps: int = 10, square_queries: int = 1000, apgdt_targets: int = 9
) -> dict[str, AttackFactory]:
    """Name -> factory, in the order the sweep runs them on the samples every earlier attack left correct.

    AutoAttack's order at a lower budget: ``APGD-CE`` and ``APGD-margin`` (:class:`APGD`, ``apgd_steps`` steps each;
    the margin loss is DLR for ``num_classes >= 3``, the logit margin below), for ``num_classes >= 4`` ``APGD-T``
    (:class:`APGDT` on up to ``apgdt_targets`` runner-up classes, AutoAttack's 9 by default), then the black-box
    ``Square`` (``square_queries`` queries), which is last so that it measures what the gradient attacks missed (the
    gradient-masking check).
    """
    num_classes = positive_int(num_classes, "num_classes")
    apgd_steps = positive_int(apgd_steps, "apgd_steps")
    apgdt_targets = positive_int(apgdt_targets, "apgdt_targets")
    ensemble: dict[str, AttackFactory] = {
        "APGD-CE": partial(APGD, steps=apgd_steps, loss="ce"),
        "APGD-margin": partial(APGD, steps=apgd_steps, loss="margin"),
    }
    if num_classes >= APGDT_MIN_CLASSES:
        ensemble["APGD-T"] = partial(APGDT, steps=apgd_steps, targets=min(apgdt_targets, num_classes - 1))
    ensemble["Square"] = partial(Square, queries=positive_int(square_queries, "square_queries"))
    return ensemble
