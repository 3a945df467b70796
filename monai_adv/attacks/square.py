"""Square attack: black-box random search over square updates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import AttackResult, LinfAttack
from .checks import positive_int, take
from .loss import classification_loss, margin_loss, predict
from .seeding import mix_seed

__all__ = ["Square"]

# the reference schedule of the square's share of the image: (last iteration of 10,000, divisor of p_init)
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


class Square(LinfAttack):
    r"""Square, Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random
    search", ECCV 2020 (arXiv:1912.00049), L-infinity. It reads only the model's outputs (no gradient), so it is the
    check that catches gradient masking: a model that only looks robust to gradient attacks falls to it.

    Per restart: start from vertical stripes ``x + eps * s`` (``s = +-1`` per channel and column, clipped to [0, 1]),
    then for ``queries`` iterations move a random square (a cube for 3-D images) of every image still classified
    correctly to a random corner of the eps-ball (one sign per channel) and keep the move when the loss falls or the
    image becomes misclassified. The square's side shrinks with the reference schedule: the share ``p`` of the image
    starts at ``p_init`` and halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000, rescaled
    to ``queries``; the side is ``max(round((p * voxels) ** (1 / d)), 1)`` for ``d`` spatial dimensions. Unlike
    torchattacks, whose square is the same for the whole batch, every image draws its own squares, so its result does
    not depend on its batch (with ``sample_seeds``).

    Samples misclassified before the attack are not attacked; a fooled sample's result is the first misclassified
    point, any other's the point of lowest loss. Every restart attacks only the samples not fooled yet.

    Args:
        model: classifier, ``(B, C, *spatial)`` images in [0, 1] -> ``(B, K)`` logits or one logit ``(B, 1)``.
        eps: L-infinity radius in [0, 1] units, a float or a ``(B,)`` tensor.
        queries: iterations (one model query each) per restart and image (default 1000; AutoAttack's standard
            version uses 5000).
        restarts: random restarts (default 1).
        p_init: the square's initial share of the image (default 0.8, as the reference for L-infinity).
        loss: ``"margin"`` (default: ``z_y - max_{j != y} z_j``, minimised) or ``"ce"`` (the cross-entropy,
            maximised).
        use_predicted_labels: attack the clean predictions instead of the given labels.
        sample_seeds: ``None`` (draws from the global RNG) or one seed per sample: restart ``r`` of sample ``j`` draws
            every stripe, position and sign from ``mix_seed(sample_seeds[j], r)``.

    Shapes: images ``(B, C, H, W)`` or ``(B, C, D, H, W)`` in [0, 1]; labels ``(B,)`` or ``None``; output like images.

    Example::

        >>> adv = Square(model, eps=0.004, queries=1000)(images, labels)
    """

    name = "Square"

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor,
        queries: int = 1000,
        restarts: int = 1,
        p_init: float = 0.8,
        loss: str = "margin",
        use_predicted_labels: bool = False,
        sample_seeds: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, eps, use_predicted_labels, sample_seeds)
        positive_int(queries, "queries")
        positive_int(restarts, "restarts")
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
        if loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
        self.queries, self.restarts, self.p_init, self.loss = int(queries), int(restarts), float(p_init), loss

    def _repr_extra(self) -> str:
        return f", queries={self.queries}, restarts={self.restarts}, p_init={self.p_init:g}, loss={self.loss}"

    def passes_per_sample(self) -> tuple[int, int]:
        return 0, 1 + int(self.use_predicted_labels) + self.restarts * (self.queries + 2)

    def share(self, iteration: int) -> float:
        """The square's share ``p`` of the image at 0-based ``iteration``."""
        scaled = int(iteration / self.queries * 10000)
        divisor = next((d for last, d in _SCHEDULE if scaled <= last), 512)
        return self.p_init / divisor

    @torch.no_grad()
    def _margin_and_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(margin, loss)`` ``(B,)``: ``z_y - max_{j != y} z_j`` (misclassified at <= 0) and the loss minimised."""
        logits = self._logits(x)
        self._forward_passes += x.shape[0]
        self._check_labels_once(logits, y)
        margin = -margin_loss(logits, y)
        return margin, margin if self.loss == "margin" else -classification_loss(logits, y, reduction="none")

    def _draws(self, x: torch.Tensor, todo: torch.Tensor, restart: int) -> torch.Tensor:
        """Uniform numbers ``(n, columns + queries * (d + C))`` in [0, 1) for the samples ``todo``: the stripes, then
        per iteration the square's position (one per spatial dimension) and its signs (one per channel)."""
        channels, spatial = x.shape[1], x.ndim - 2
        size = channels * x.shape[-1] + self.queries * (spatial + channels)
        if self._seeds is None:
            return torch.rand(todo.numel(), size).to(x.device)
        generator = torch.Generator()
        rows = []
        for j in todo.tolist():
            generator.manual_seed(mix_seed(self._seeds[j], restart))
            rows.append(torch.rand(size, generator=generator))
        return torch.stack(rows).to(x.device)

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, eps: float | torch.Tensor) -> AttackResult:
        margin, loss = self._margin_and_loss(images, labels)
        fooled = margin <= 0
        adv = images.clone()
        for restart in range(self.restarts):
            todo = (~fooled).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            best, best_loss = self._single_run(images[todo], labels[todo], take(eps, todo),
                                               self._draws(images, todo, restart))
            with torch.no_grad():
                hit = predict(self._logits(best)) != labels[todo]
            self._forward_passes += todo.numel()
            better = hit | (best_loss < loss[todo])
            adv[todo[better]], loss[todo[better]] = best[better], best_loss[better]
            fooled[todo[hit]] = True
        return AttackResult(adv, labels, fooled, loss)

    def _single_run(
        self, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, draws: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One restart: ``(x_best, loss_best)``, each image's first misclassified point or its lowest-loss point."""
        n, channels = x.shape[:2]
        spatial = x.shape[2:]
        dims = len(spatial)
        columns = channels * spatial[-1]
        stripes = torch.where(draws[:, :columns] < 0.5, -1.0, 1.0).to(x.dtype)
        stripes = stripes.view(n, channels, *[1] * (dims - 1), spatial[-1])
        steps = draws[:, columns:].view(n, self.queries, dims + channels)
        low, high = x - eps, x + eps  # eps: a float, or (n, 1, ..., 1) as LinfAttack shapes it
        x_best = (x + eps * stripes).clamp(0.0, 1.0)
        margin, loss = self._margin_and_loss(x_best, y)
        voxels = math.prod(spatial)
        grids = [torch.arange(size, device=x.device) for size in spatial]
        for i in range(self.queries):
            live = (margin > 0).nonzero()[:, 0]
            if live.numel() == 0:
                break
            side = min(max(int(round((self.share(i) * voxels) ** (1.0 / dims))), 1), *spatial)
            draw = steps[live, i]
            inside = torch.ones((live.numel(), *spatial), dtype=torch.bool, device=x.device)
            for k, (size, grid) in enumerate(zip(spatial, grids)):
                start = (draw[:, k] * (size - side + 1)).long().clamp(max=size - side)
                along = (grid >= start[:, None]) & (grid < start[:, None] + side)
                inside &= along.view(live.numel(), *[1] * k, size, *[1] * (dims - k - 1))
            signs = torch.where(draw[:, dims:] < 0.5, -1.0, 1.0).to(x.dtype).view(-1, channels, *[1] * dims)
            move = inside[:, None].to(x.dtype) * signs * 2.0 * take(eps, live)
            candidate = torch.clamp(torch.min(torch.max(x_best[live] + move, low[live]), high[live]), 0.0, 1.0)
            new_margin, new_loss = self._margin_and_loss(candidate, y[live])
            improved = new_loss < loss[live]
            loss[live] = torch.where(improved, new_loss, loss[live])
            improved |= new_margin <= 0
            margin[live] = torch.where(improved, new_margin, margin[live])
            x_best[live] = torch.where(improved.view(-1, *[1] * (x.ndim - 1)), candidate, x_best[live])
        return x_best, loss
