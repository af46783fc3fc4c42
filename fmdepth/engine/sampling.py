"""Data order and sample seeding for exact resume: a seeded permutation per epoch that can start
mid-epoch (:class:`ResumableSampler`), every sample loaded under its own seed
(:class:`SeededDataset`), and :func:`move_to` for batches."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded permutation per ``set_epoch``) that can start mid-epoch.

    Yields ``(dataset_index, sample_seed)`` pairs: the seed is fixed by (seed, epoch, position in
    the epoch's permutation), so a sample's augmentation is the same whichever worker loads it
    and whether or not the run was interrupted. ``set_start(n)`` skips this rank's first ``n``
    samples of the epoch (the batches a resumed run already trained on).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self):
        indices = list(super().__iter__())  # this rank's share of the epoch's permutation
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) % (2 ** 63) + 7919)
        seeds = torch.randint(0, 2 ** 62, (self.total_size,), generator=g)
        seeds = seeds[self.rank:self.total_size:self.num_replicas].tolist()
        for idx, s in list(zip(indices, seeds))[self.start:]:
            yield idx, s

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class SeededDataset(Dataset):
    """Loads ``dataset[index]`` with python/numpy/torch seeded by the sampler's per-sample seed.

    The caller's RNG state is restored afterwards, so data loading in the main process
    (``num_workers=0``) does not disturb the training RNG stream.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(seed)
        np.random.seed(seed % (2 ** 32))
        torch.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def worker_init(worker_id: int) -> None:
    """``DataLoader`` worker start: python and numpy seeded from the worker's torch seed."""
    seed = torch.initial_seed() % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, object with ``.to``, or nested dict/list/tuple) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch
