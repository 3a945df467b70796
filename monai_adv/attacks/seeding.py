"""Per-sample randomness: seeds mixed from a run seed, a data item's key and stream numbers, and noise drawn from
one generator per sample, so that a sample's random draws do not depend on the batch (or process) it is in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

__all__ = ["mix_seed", "key_of", "check_sample_seeds", "per_sample_uniform"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Hash integers (a seed, a sample key, stream numbers such as a restart or probe index) into one seed in
    ``[0, 2**63)``, the same on every machine and in every process (a splitmix64 chain; Python's ``hash`` is salted).

    ``mix_seed(seed, key, r)`` and ``mix_seed(seed, key, r + 1)`` give unrelated seeds, so one sample's streams are
    independent, and no sample's stream depends on the others in its batch.
    """
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def key_of(item_id: object) -> int:
    """A stable integer key in ``[0, 2**63)`` for a data item's id (its string form), for per-sample seeds: the same
    id gives the same key in every process and run."""
    digest = hashlib.blake2b(str(item_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def check_sample_seeds(seeds: torch.Tensor | Sequence[int] | None, batch_size: int | None = None) -> list[int] | None:
    """``seeds`` as a list of Python ints (``None`` stays ``None``), checking there is one per sample when
    ``batch_size`` is given."""
    if seeds is None:
        return None
    values = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    if batch_size is not None and len(values) != batch_size:
        raise ValueError(f"sample_seeds must hold one seed per sample ({batch_size}), got {len(values)}")
    return values


def per_sample_uniform(like: torch.Tensor, seeds: Sequence[int], stream: int = 0) -> torch.Tensor:
    """Uniform noise in ``[-1, 1)`` shaped like ``like`` ``(B, ...)``, sample ``j`` drawn from a generator on
    ``like``'s device seeded with ``mix_seed(seeds[j], stream)``: a sample's noise does not depend on the batch.
    The global RNG is not touched."""
    out = torch.empty_like(like)
    generator = torch.Generator(device=like.device)
    for j, seed in enumerate(seeds):
        generator.manual_seed(mix_seed(seed, stream))
        out[j].uniform_(-1.0, 1.0, generator=generator)
    return out
