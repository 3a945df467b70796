"""Projected Gradient Descent with random start and restarts: the whole iterative loop (signed-gradient steps with
projection, scoring of every iterate with ``any_iterate``, restarts), which :class:`~monai_adv.attacks.bim.BIM` runs
without the random start."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import AttackResult, LinfAttack
from .checks import check_eps, per_sample, positive_int, take
from .loss import classification_loss, predict
from .seeding import per_sample_uniform

__all__ = ["PGD"]


class PGD(LinfAttack):
    r"""PGD, Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018
    (arXiv:1706.06083).

    From a uniform random point of the eps-ball (clipped to [0, 1]), ``steps`` signed-gradient steps of
    ``step_size``, each projected back onto the ball and [0, 1]. Defaults follow the paper's Table S1 (10 steps of
    eps/4, random start). With ``restarts=1`` and a float ``eps``, ``torch.manual_seed(s)`` before the call gives
    exactly ``torchattacks.PGD(model, eps, alpha=step_size, steps, random_start)`` (same single
    ``torch.empty_like(x).uniform_(-eps, eps)`` draw).

    A ``(B,)`` tensor ``eps`` works with the random start too (torchattacks raises there): the start is then
    ``uniform_(-1, 1) * eps``, the same random numbers scaled, equal to torchattacks' start only up to round-off.

    With ``sample_seeds`` the start of sample ``j`` at restart ``r`` is ``uniform(-1, 1) * eps`` drawn from a generator
    seeded with ``mix_seed(sample_seeds[j], r)``, and the loss is summed over the batch: a sample's result is then the
    same in any batch (and in any process of a distributed run), but no longer equal to torchattacks'.

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
        eps: L-infinity radius in [0, 1] units, a float or a ``(B,)`` tensor.
        steps: number of steps (default 10).
        step_size: float or ``(B,)`` tensor; ``None`` (default) gives ``eps / 4``.
        random_start: start from a uniform random point of the ball (default) or from the clean image.
        restarts: number of random starts. Per sample the result is the first restart whose last iterate (or, with
            ``any_iterate``, any iterate) is misclassified, else the restart with the highest final loss. Samples
            already fooled are not attacked again. Every restart draws the random start for the whole batch, so a
            sample's start does not depend on the others and ``restarts=R`` picks among exactly the results of R
            consecutive ``restarts=1`` calls after the same seed (with ``sample_seeds``: restarts ``0..R-1`` of each
            sample's own streams).
        any_iterate: score every iterate (start included); a sample's result is its first misclassified iterate.
        use_predicted_labels: attack the clean predictions instead of the given labels.
        sample_seeds: ``None`` (default, the global RNG) or one integer seed per sample (see above and
            :class:`~monai_adv.attacks.base.LinfAttack`).

    Shapes: images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1]; labels ``(B,)`` or ``None``; output like images.

    Example::

        >>> adv = PGD(model, eps=0.004, restarts=5)(images, labels)
    """

    name = "PGD"
    step_divisor = 4
    """``step_size=None`` gives ``eps / step_divisor`` (PGD: eps/4, BIM: eps/10, as in the paper's Table S1)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor,
        steps: int = 10,
        step_size: float | torch.Tensor | None = None,
        random_start: bool = True,
        restarts: int = 1,
        any_iterate: bool = False,
        use_predicted_labels: bool = False,
        sample_seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, eps, use_predicted_labels, sample_seeds)
        positive_int(steps, "steps")
        if step_size is not None:
            check_eps(step_size, "step_size")
        positive_int(restarts, "restarts")
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True (every restart would be the same)")
        self.steps = int(steps)
        self.step_size = step_size
        self.any_iterate = any_iterate
        self.random_start = random_start
        self.restarts = int(restarts)

    def _repr_extra(self) -> str:
        return self._loop_repr() + f", random_start={self.random_start}, restarts={self.restarts}"

    def _loop_repr(self) -> str:
        """The loop's settings in :meth:`__repr__`: ``, steps=..., step_size=..., any_iterate=...``."""
        step = "eps/%d" % self.step_divisor if self.step_size is None else self.step_size
        return f", steps={self.steps}, step_size={step}, any_iterate={self.any_iterate}"

    def passes_per_sample(self) -> tuple[int, int]:
        scored = self.restarts > 1 or self.any_iterate
        return self.steps * self.restarts, int(self.use_predicted_labels) + self.restarts * int(scored)

    def _start(self, images: torch.Tensor, eps: float | torch.Tensor, restart: int = 0) -> torch.Tensor:
        """Random start of restart ``restart`` for the batch ``images`` (the batch :meth:`run` was called with)."""
        if self._seeds is not None:
            noise = per_sample_uniform(images, self._seeds, restart) * eps
        elif not isinstance(eps, torch.Tensor):
            noise = torch.empty_like(images).uniform_(-eps, eps)  # torchattacks' draw, for equal results
        else:
            noise = torch.empty_like(images).uniform_(-1, 1) * eps
        return torch.clamp(images + noise, min=0, max=1)

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, eps: float | torch.Tensor) -> AttackResult:
        step = self._step(eps, images)
        if self.restarts == 1:
            start = self._start(images, eps) if self.random_start else images
            return self._iterate(images, labels, eps, step, start)

        best: AttackResult | None = None
        todo = torch.arange(images.shape[0], device=images.device)  # samples not fooled yet
        for restart in range(self.restarts):
            if todo.numel() == 0:
                if self._seeds is not None:
                    break  # per-sample streams: nothing else depends on these draws
                self._start(images, eps, restart)  # keep drawing, so the RNG ends where R single-start calls would
                continue
            start = self._start(images, eps, restart)
            res = self._iterate(images[todo], labels[todo], take(eps, todo), take(step, todo), start[todo], score=True)
            if best is None:
                best = res
            else:
                better = res.fooled | (res.loss > best.loss[todo])
                idx = todo[better]
                best.adv[idx], best.fooled[idx], best.loss[idx] = res.adv[better], res.fooled[better], res.loss[better]
            todo = todo[~best.fooled[todo]]
        best.labels = labels
        return best

    def _step(self, eps: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
        """The step size for the batch ``like``: ``eps / step_divisor`` or ``step_size`` shaped by
        :func:`~monai_adv.attacks.checks.per_sample`."""
        if self.step_size is None:
            return eps / self.step_divisor
        return per_sample(self.step_size, like, "step_size")

    def _iterate(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        eps: float | torch.Tensor,
        step: float | torch.Tensor,
        start: torch.Tensor,
        score: bool = False,
    ) -> AttackResult:
        """Run ``self.steps`` steps ``x <- project(x + step * sign(grad))`` from ``start``.

        With ``score`` (or ``any_iterate``) the result also carries ``fooled`` and ``loss``; scoring the last iterate
        costs one more forward pass.
        """
        if not self.any_iterate:
            adv = start
            for _ in range(self.steps):
                grad, _ = self._gradient(adv, labels)
                adv = self._ascent_step(adv, grad, step, images, eps)
            if not score:
                return AttackResult(adv, labels)
            fooled, loss = self._score(adv, labels)
            return AttackResult(adv, labels, fooled, loss)

        # any_iterate: samples leave the batch at their first misclassified iterate (batch compaction).
        out = start.clone()
        fooled = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        loss = torch.zeros(images.shape[0], dtype=images.dtype, device=images.device)
        live = torch.arange(images.shape[0], device=images.device)
        adv, y, x0 = start, labels, images
        for t in range(self.steps + 1):
            if t < self.steps:
                grad, logits = self._gradient(adv, y)
            else:
                with torch.no_grad():
                    logits = self._logits(adv)
                self._forward_passes += adv.shape[0]
            hit = predict(logits) != y
            if t == self.steps or bool(hit.any()):
                done = hit if t < self.steps else torch.ones_like(hit)
                out[live[done]] = adv[done]
                fooled[live[done]] = hit[done]
                loss[live[done]] = classification_loss(logits[done], y[done], reduction="none").to(loss.dtype)
                keep = ~done
                live, adv, y, x0 = live[keep], adv[keep], y[keep], x0[keep]
                if t == self.steps or live.numel() == 0:
                    break
                grad, eps, step = grad[keep], take(eps, keep), take(step, keep)
            adv = self._ascent_step(adv, grad, step, x0, eps)
        return AttackResult(out, labels, fooled, loss)
