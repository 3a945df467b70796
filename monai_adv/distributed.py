"""Multi-process evaluation (``torchrun``): shard a data set by whole batches, gather per-item results on every rank.

The attack sweep and the sensitivity triage of a distributed run equal those of a single-process run with the same
seed and batch size, because

* every sample's randomness is its own: the handlers key each sample's PGD random starts by ``(seed, item id, ...)``
  (:func:`monai_adv.attacks.seeding.mix_seed`, ``sample_seeds`` of the attacks), never by its batch or process;
* :class:`BatchShardSampler` hands each process whole batches of the single-process order (batch ``k`` to rank
  ``k % world_size``), so every batch a process attacks is, bit for bit, a batch of the single-process run. A
  sample's result does not depend on the other samples of its batch except through the float round-off of batched
  layers: kernels pick other algorithms and summation orders for other batch sizes (on a CPU about 1e-6 on the
  logits of the demo VGG16; on an H100, where cuDNN convolutions run in TF32, a check saw logits move by 0.15 and 2
  of 40 brackets change when the same images were batched differently). Identical batches remove even that, given
  deterministic kernels (``monai.utils.set_determinism``, in every config's ``initialize``);
* :func:`gather_by_id` collects per-item results from every rank, drops duplicates (samplers that pad shards to an
  even length repeat items) and orders them by id, the order a single-process run writes too.

With another sampler (``torch.utils.data.DistributedSampler``, which pads), results are still deduplicated and
ordered, and equal to the single-process ones up to that round-off; counts of work spent then include the padding.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["rank", "world_size", "is_distributed", "BatchShardSampler", "gather_by_id", "all_reduce_ints", "batch_ids"]


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return _initialised() and world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if _initialised() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if _initialised() else 1


_rank, _world_size = rank, world_size  # for BatchShardSampler, whose arguments shadow the names


class BatchShardSampler(Sampler[int]):
    """Shard a data set between processes by whole batches of its sequential order, without padding.

    The single-process loader (``shuffle=False``) yields batches ``k = 0, 1, ...`` of indices
    ``[k * batch_size, (k + 1) * batch_size)``. This sampler gives rank ``r`` of ``W`` the indices of batches
    ``r, r + W, r + 2W, ...`` in that order, so a ``DataLoader`` with the same ``batch_size`` and this sampler cuts
    exactly those batches (only the last batch of the data set can be short, and it is the last of its rank). Every
    item is on exactly one rank; ranks differ by at most one batch.

    Args:
        dataset: the data set (only its length is used).
        batch_size: the loader's batch size (>= 1).
        num_replicas: number of processes; default the process group's world size (1 when not distributed).
        rank: this process's rank; default the process group's.

    Raises:
        ValueError: fewer batches than processes (a process would get no data): lower ``batch_size`` or run fewer
            processes.
    """

    def __init__(
        self, dataset: Sized, batch_size: int, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.num_replicas = _world_size() if num_replicas is None else int(num_replicas)
        self.rank = _rank() if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        self.n = len(dataset)
        self.batch_size = int(batch_size)
        n_batches = math.ceil(self.n / self.batch_size)
        if n_batches < self.num_replicas:
            raise ValueError(
                f"{self.n} items in batches of {self.batch_size} make {n_batches} batches, fewer than the "
                f"{self.num_replicas} processes: lower batch_size or run fewer processes"
            )
        self.batches = list(range(self.rank, n_batches, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        for k in self.batches:
            yield from range(k * self.batch_size, min((k + 1) * self.batch_size, self.n))

    def __len__(self) -> int:
        return sum(min((k + 1) * self.batch_size, self.n) - k * self.batch_size for k in self.batches)


def batch_ids(batch: Any, n: int, id_key: str = "id", offset: int = 0) -> tuple[list[str], bool]:
    """The item ids of a loader batch of ``n`` items, and whether they came from the data (``batch[id_key]``).

    Without ids, positions ``offset .. offset + n - 1`` stand in (as strings); they identify items only within one
    process, so distributed runs need real ids.
    """
    values = batch.get(id_key) if isinstance(batch, Mapping) else None
    if values is None:
        return [str(offset + k) for k in range(n)], False
    values = values.tolist() if isinstance(values, (torch.Tensor, np.ndarray)) else list(values)
    if len(values) != n:
        raise ValueError(f"batch has {n} images but {len(values)} values under {id_key!r}")
    return [str(v) for v in values], True


def gather_by_id(
    ids: Sequence[str], columns: Mapping[str, torch.Tensor | np.ndarray]
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Gather per-item values from every rank; return them deduplicated and sorted by id, on every rank.

    Args:
        ids: this rank's item ids, one per row.
        columns: name -> ``(len(ids), ...)`` tensor or array of this rank's values (numbers or bools; the trailing
            shape must be the same on every rank).

    Returns:
        ``(ids, values)``: the unique ids in sorted order, and per column a numpy array ``(len(ids), ...)`` in that
        order, the first occurrence of each id (under ``torchrun``, duplicates come from padded shards and hold the
        same item). Not distributed: the same order, without communication; a duplicate id there can only be two
        images sharing an id, which would silently merge them, so it raises ``ValueError`` naming the ids.
    """
    local = {k: torch.as_tensor(v).detach().cpu() for k, v in columns.items()}
    for name, value in local.items():
        if value.shape[0] != len(ids):
            raise ValueError(f"column {name!r} has {value.shape[0]} rows for {len(ids)} ids")
    all_ids = list(ids)
    if is_distributed():
        from monai.utils import evenly_divisible_all_gather

        all_ids = _all_gather_strings(all_ids)
        gathered = {}
        for name, value in local.items():
            dtype = value.dtype
            wide = value.to(torch.float64 if value.is_floating_point() else torch.int64)
            gathered[name] = evenly_divisible_all_gather(wide, concat=True).to(dtype)
        local = gathered
    else:
        repeated = sorted(item_id for item_id, count in Counter(all_ids).items() if count > 1)
        if repeated:
            raise ValueError(
                f"{len(repeated)} item id(s) used by more than one image, e.g. {repeated[:5]}: give every image its "
                "own id (results are keyed by id, so these images would be merged)"
            )
    first: dict[str, int] = {}
    for index, item_id in enumerate(all_ids):
        first.setdefault(item_id, index)
    order_ids = sorted(first)
    order = torch.tensor([first[i] for i in order_ids], dtype=torch.long)
    return order_ids, {k: v[order].numpy() for k, v in local.items()}


def _all_gather_strings(strings: list[str]) -> list[str]:
    """Every rank's list of strings, concatenated in rank order (an empty list and any characters are fine, unlike
    ``monai.utils.string_list_all_gather``, which splits on a delimiter)."""
    from monai.utils import evenly_divisible_all_gather

    payload = torch.tensor(list(json.dumps(strings).encode("utf-8")), dtype=torch.int64)
    out: list[str] = []
    for part in evenly_divisible_all_gather(payload, concat=False):
        out += json.loads(bytes(part.tolist()).decode("utf-8"))
    return out


def all_reduce_ints(values: Sequence[int | None]) -> list[int | None]:
    """Sum integers over ranks, position by position (every rank passes as many). ``None`` means "unknown": a
    position that is ``None`` on any rank is ``None`` in the result."""
    if not is_distributed():
        return list(values)
    import torch.distributed as dist
    from monai.utils import get_dist_device

    n = len(values)
    packed = [0 if v is None else int(v) for v in values] + [int(v is None) for v in values]
    counts = torch.tensor(packed, dtype=torch.int64, device=get_dist_device())
    if n:
        dist.all_reduce(counts)
    totals = counts.tolist()
    return [None if totals[n + i] else int(totals[i]) for i in range(n)]
