"""Several datasets trained on together, each batch drawing a fixed share of its configurations from each.

A student learns from ground-truth data (a few hundred CC energies) and from many teacher-labelled
configurations at once; without shares, a batch would be almost all teacher labels. A label one part
lacks is NaN there (masked in every loss term, never zero). Parts may be in memory
(:class:`~kdframe.data.dataset.Dataset`) or streamed from disk (packed files): a part is only asked
for the configurations of one batch at a time.

Configuration ``i`` of part ``p`` is configuration ``offset[p] + i`` of the mixture; batch indices
(``Batch.index``, per-configuration caches and probes) are made unique by adding ``p << ID_SHIFT``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..batch import Batch, concatenate_batches
from .dataset import PER_ATOM, Batching

ID_SHIFT = 40  # part p's configuration ids become id + (p << ID_SHIFT); 2**40 configurations per part


class Mixture(Batching):
    """``parts`` as one training set; with ``shares`` (summing to 1) each shuffled batch draws
    ``share * batch_size`` configurations from each part (its own reshuffled order, cycled), and an
    epoch has as many batches as the parts' sizes together would fill."""

    def __init__(self, parts: Sequence, shares: Sequence[float] | None = None):
        if shares is not None and (len(shares) != len(parts) or not math.isclose(sum(shares), 1.0)):
            raise ValueError(f"Mixture: shares {list(shares)} must be one per part and sum to 1")
        if shares is not None and any(len(p) == 0 and s > 0 for p, s in zip(parts, shares)):
            raise ValueError(f"Mixture: a part with a share has no configurations (sizes {[len(p) for p in parts]})")
        self.parts, self.shares = list(parts), None if shares is None else list(shares)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.source = "+".join(getattr(p, "source", "") for p in self.parts)
        self.kinds: dict[str, str] = {}
        for part in self.parts:
            for name in part.labels:
                self.kinds.setdefault(name, part.label_kind(name))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def labels(self) -> dict[str, str]:
        """Label name -> kind (the names, like a Dataset's ``labels`` mapping)."""
        return self.kinds

    @property
    def periodic(self) -> bool:
        return any(p.periodic for p in self.parts)

    def label_kind(self, name: str) -> str:
        return self.kinds[name]

    def labelled(self, names: Sequence[str]) -> np.ndarray:
        """Per configuration: has at least one of ``names`` (a part lacking a name has none of it)."""
        return np.concatenate([p.labelled([n for n in names if n in p.labels]) if any(n in p.labels for n in names)
                               else np.zeros(len(p), dtype=bool) for p in self.parts])

    def content_hash(self, labels: Sequence[str] | None = None) -> str:
        import hashlib

        h = hashlib.sha256(repr(self.shares).encode())
        for part in self.parts:
            h.update(part.content_hash([n for n in (labels or part.labels) if n in part.labels]).encode())
        return h.hexdigest()[:16]

    def subset(self, confs: Sequence[int] | np.ndarray) -> "Mixture":
        """The configurations ``confs`` (mixture indices), part by part, with the same shares."""
        confs = np.asarray(confs, dtype=np.int64)
        parts = [p.subset(confs[(confs >= lo) & (confs < hi)] - lo)
                 for p, lo, hi in zip(self.parts, self.offsets[:-1], self.offsets[1:])]
        return Mixture(parts, self.shares)

    def batch(self, confs: Sequence[int] | np.ndarray, labels: Sequence[str] | None = None) -> Batch:
        """The configurations ``confs``, grouped by part (in part order); labels a part lacks are NaN."""
        confs = np.asarray(confs, dtype=np.int64)
        names = list(self.kinds) if labels is None else list(labels)
        part_of = np.searchsorted(self.offsets, confs, side="right") - 1
        batches = []
        for p in np.unique(part_of):
            part, local = self.parts[p], confs[part_of == p] - self.offsets[p]
            batch = part.batch(local, [n for n in names if n in part.labels])
            for name in names:
                if name not in batch.labels:
                    batch.labels[name] = self._missing(name, batch)
            batch.index = batch.index + (int(p) << ID_SHIFT)
            batches.append(batch)
        return concatenate_batches(batches)

    def _missing(self, name: str, batch: Batch) -> torch.Tensor:
        """NaN of the shape a label has in a batch, taken from a part that has it."""
        donor = next((p for p in self.parts if name in p.labels and len(p)), None)
        if donor is None:  # only empty parts have it (e.g. a source with nothing held out for validation)
            shape = next(p for p in self.parts if name in p.labels).labels[name].shape[1:]
        else:
            shape = donor.batch(np.zeros(1, dtype=np.int64), [name]).labels[name].shape[1:]
        rows = batch.n_atoms if self.kinds[name] == PER_ATOM else batch.n_conf
        return torch.full((rows, *shape), math.nan, dtype=torch.float64)

    def batch_indices(self, batch_size: int, shuffle: bool = False,
                      generator: torch.Generator | None = None) -> Iterator[np.ndarray]:
        if not shuffle or self.shares is None:
            order = torch.randperm(len(self), generator=generator).numpy() if shuffle else np.arange(len(self))
            yield from self.in_batches(order, batch_size)
            return
        takes = _apportion(batch_size, self.shares)
        streams = [_Cycle(len(p), generator) for p in self.parts]
        for _ in range(math.ceil(len(self) / batch_size)):
            yield np.concatenate([stream.take(k) + self.offsets[p]
                                  for p, (stream, k) in enumerate(zip(streams, takes)) if k])


def _apportion(total: int, shares: Sequence[float]) -> list[int]:
    """Integers summing to ``total`` in proportion to ``shares`` (largest remainders); a positive share gets >= 1."""
    exact = [total * s for s in shares]
    counts = [max(int(x), 1 if s > 0 else 0) for x, s in zip(exact, shares)]
    for i in sorted(range(len(shares)), key=lambda i: counts[i] - exact[i]):
        if sum(counts) >= total:
            break
        counts[i] += 1
    return counts


class _Cycle:
    """An endless stream of one part's configurations: shuffled passes, reshuffled each pass."""

    def __init__(self, n: int, generator: torch.Generator | None):
        self.n, self.generator, self.order, self.at = n, generator, np.zeros(0, dtype=np.int64), 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.at == len(self.order):
                self.order, self.at = torch.randperm(self.n, generator=self.generator).numpy(), 0
            piece = self.order[self.at:self.at + k]
            self.at, k = self.at + len(piece), k - len(piece)
            out.append(piece)
        return np.concatenate(out)
