"""Streams over shards, for training: per-epoch shard order, a split across DataLoader workers, a bounded shuffle
buffer, batching, and counts of what could not be delivered. Subclasses say how a shard is read
(``PayloadStream`` for a payload's images, ``FeatureStream`` for cached features).

Each epoch reads every shard exactly once, in an order shuffled per epoch (``set_epoch(e)`` seeds it with
``seed + epoch``, as ``DistributedSampler`` does), and mixes samples through a shuffle buffer of ``shuffle_buffer``
raw items (a subclass may keep them encoded and finish them, e.g. decode, only as they leave it).

Workers. Under a ``DataLoader`` with workers, each worker takes a share of the epoch's shards (balanced by their
number of samples) and opens storage itself: only URLs cross the fork, and ``storage`` looks filesystems up per
process (s3fs clients are not fork-safe). ``StreamLoader`` starts workers afresh every epoch (never
``persistent_workers``), so that they see the epoch set in the main process.

Drops. Samples that cannot be delivered are counted in ``DropCounts``, never skipped silently. Without workers,
``stream.drops`` holds the counts of the epoch being (or last) iterated. Worker processes cannot update the
caller's object, so ``stream.loader(...)`` uses a side channel in the data itself: each worker batches its own
samples into ``Batch`` objects that carry the drop counts of the shards it finished meanwhile, and the loader adds
them up (``loader.drops`` after an epoch) and re-cuts the batches to exactly ``batch_size``.

Determinism: one seed gives one sample order without workers; with workers, every epoch yields the same multiset
of samples, in an order that depends on the number of workers.
"""

from __future__ import annotations

import copy
import multiprocessing
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from plada_core.prefetch import prefetch

__all__ = ["Batch", "DropCounts", "ShardStream", "StreamLoader"]


@dataclass
class DropCounts:
    """Selected images a stream could not deliver, by reason; sums across shards, workers and epochs with ``add``.

    ``events`` and ``errors`` hold the pool reader's ``ReadStats`` counts and (at most ``MAX_ERRORS``) messages for
    the shards that lost images, so a report can say why.
    """

    missing_from_index: int = 0
    unreadable: int = 0
    undecodable: int = 0
    events: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    MAX_ERRORS = 20

    @property
    def total(self) -> int:
        return self.missing_from_index + self.unreadable + self.undecodable

    def add(self, other: DropCounts) -> DropCounts:
        """Add ``other`` into this one (in place) and return it."""
        self.missing_from_index += other.missing_from_index
        self.unreadable += other.unreadable
        self.undecodable += other.undecodable
        for kind, n in other.events.items():
            self.events[kind] = self.events.get(kind, 0) + n
        self.errors.extend(other.errors[: self.MAX_ERRORS - len(self.errors)])
        return self

    def note(self, kind: str, message: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1
        if len(self.errors) < self.MAX_ERRORS:
            self.errors.append(message[:300])

    def as_dict(self) -> dict:
        return {"missing_from_index": self.missing_from_index, "unreadable": self.unreadable,
                "undecodable": self.undecodable, "events": dict(self.events), "errors": list(self.errors)}


@dataclass
class Batch:
    """Up to ``batch_size`` samples (``x``, ``y``, their pool ``index``), and ``done``: the shards whose every
    sample is in this batch or an earlier one, with their drop counts, and ``states``: what the worker learned
    about those shards (``ShardStream.shard_state``). ``x`` is None when the batch is empty."""

    x: torch.Tensor | None
    y: torch.Tensor
    index: torch.Tensor
    done: dict[str, DropCounts] = field(default_factory=dict)
    states: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this on custom batch types
        x = None if self.x is None else self.x.pin_memory()
        return replace(self, x=x, y=self.y.pin_memory(), index=self.index.pin_memory())

    @staticmethod
    def collate(samples: list[tuple[torch.Tensor, int, int]], done: dict[str, DropCounts],
                states: dict[str, object] | None = None) -> Batch:  # fmt: skip
        x = torch.stack([s[0] for s in samples]) if samples else None
        y = torch.tensor([s[1] for s in samples], dtype=torch.long)
        return Batch(x, y, torch.tensor([s[2] for s in samples], dtype=torch.long), done, states or {})

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        done: dict[str, DropCounts] = {}
        states: dict[str, object] = {}
        for b in batches:
            done.update(b.done)
            states.update(b.states)
        xs = [b.x for b in batches if b.x is not None]
        return Batch(torch.cat(xs) if xs else None, torch.cat([b.y for b in batches]),
                     torch.cat([b.index for b in batches]), done, states)

    def split(self, n: int) -> tuple[Batch, Batch]:
        """The first ``n`` samples (with every ``done`` shard and its state) and the rest."""
        head = Batch(self.x[:n], self.y[:n], self.index[:n], self.done, self.states)
        return head, Batch(self.x[n:], self.y[n:], self.index[n:])


class ShardStream(IterableDataset):
    """Samples grouped in named shards: per-epoch shard order, worker split, shuffle buffer and drop accounting.

    Subclasses provide ``_read_shard(s, drops)`` (raw items of shard number ``s``, losses counted in ``drops``) and
    ``_finish(raw, drops)`` (the ``(x, label, index)`` sample, or None when it is dropped at that point).
    """

    def __init__(self, shards: list[str], sizes: np.ndarray, seed: int, shuffle_buffer: int) -> None:
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 (0: no mixing across samples), got {shuffle_buffer!r}")
        self.shards, self.sizes = list(shards), np.asarray(sizes, dtype=np.int64)
        self.seed, self.shuffle_buffer, self.epoch = int(seed), int(shuffle_buffer), 0
        self.shuffle_shards = True
        self.missing_from_index = np.empty(0, dtype=np.int64)
        self.drops = DropCounts()

    @property
    def n_expected(self) -> int:
        """Samples an epoch yields when nothing is dropped."""
        return int(self.sizes.sum())

    def set_epoch(self, epoch: int) -> None:
        """Shard order and buffer mixing of the next iteration are drawn from ``seed + epoch``."""
        self.epoch = int(epoch)

    def unshuffled(self) -> ShardStream:
        """A copy that reads its shards in pool order and yields each shard's samples in order."""
        out = copy.copy(self)
        out.shuffle_shards, out.shuffle_buffer = False, 0
        return out

    def epoch_shards(self, worker: int = 0, n_workers: int = 1) -> list[int]:
        """The shard numbers worker ``worker`` of ``n_workers`` reads this epoch, in reading order. Shards go, in
        the epoch's order, to the worker with the fewest samples so far (ties: lowest id), so workers stay even."""
        order = np.arange(len(self.shards))
        if self.shuffle_shards:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
        load = np.zeros(n_workers, dtype=np.int64)
        mine = []
        for s in order.tolist():
            w = int(np.argmin(load))
            load[w] += max(int(self.sizes[s]), 1)
            if w == worker:
                mine.append(s)
        return mine

    def _events(self) -> Iterator[tuple[tuple | None, str | None, DropCounts | None]]:
        """``(sample, None, None)`` per delivered sample, ``(None, shard, drops)`` once a shard's every sample has
        left the buffer; for this worker's share of the epoch."""
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.seed + self.epoch, worker])
        buffer: list[tuple[object, int]] = []
        left: dict[int, int] = {}  # items of a shard still in the buffer
        drops: dict[int, DropCounts] = {}  # per shard, until it is done

        def pop() -> tuple[tuple | None, int]:
            """A random buffered item, finished (None when dropped), and its shard."""
            j = int(rng.integers(len(buffer)))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            raw, s = buffer.pop()
            left[s] -= 1
            return self._finish(raw, drops[s]), s

        # pop() returns rather than yields: it runs once per sample, and a generator per sample is pure overhead.
        reading: set[int] = set()
        for s in self.epoch_shards(worker, n_workers):
            drops[s], left[s] = DropCounts(), 0
            reading.add(s)
            for raw in self._read_shard(s, drops[s]):
                buffer.append((raw, s))
                left[s] += 1
                if len(buffer) > self.shuffle_buffer:
                    sample, t = pop()
                    if sample is not None:
                        yield sample, None, None
                    if left[t] == 0 and t not in reading:
                        yield None, self.shards[t], drops.pop(t)
            reading.discard(s)
            if left[s] == 0:
                yield None, self.shards[s], drops.pop(s)
        while buffer:
            sample, t = pop()
            if sample is not None:
                yield sample, None, None
            if left[t] == 0:
                yield None, self.shards[t], drops.pop(t)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        self.drops = DropCounts(missing_from_index=len(self.missing_from_index))
        for sample, _, shard_drops in self._events():
            if sample is None:
                self.drops.add(shard_drops)
            else:
                yield sample[0], sample[1]

    def shard_state(self, shard: str) -> object | None:
        """What reading ``shard`` taught this stream that makes the next read cheaper (None: nothing), e.g. where
        its samples lie. DataLoader workers hand theirs back with the batches, and the loader calls
        ``set_shard_state`` on the caller's stream, so later epochs' workers start from it."""
        return None

    def set_shard_state(self, shard: str, state: object) -> None:
        """Take over a ``shard_state`` learned elsewhere (another worker process)."""

    def loader(self, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
               prefetch_batches: int = 0) -> StreamLoader:  # fmt: skip
        return StreamLoader(self, batch_size, num_workers, pin_memory, prefetch_batches)

    def _read_shard(self, s: int, drops: DropCounts) -> Iterator[object]:
        raise NotImplementedError

    def _finish(self, raw, drops: DropCounts) -> tuple[torch.Tensor, int, int] | None:
        raise NotImplementedError


class _WorkerBatches(IterableDataset):
    """Runs in each worker: the stream's samples batched there, drop counts riding along (the side channel)."""

    def __init__(self, stream: ShardStream, batch_size: int) -> None:
        self.stream, self.batch_size = stream, batch_size

    def __iter__(self) -> Iterator[Batch]:
        samples, done, states = [], {}, {}
        for sample, shard, drops in self.stream._events():
            if sample is None:
                done[shard] = drops
                if (state := self.stream.shard_state(shard)) is not None:
                    states[shard] = state
                continue
            samples.append(sample)
            if len(samples) == self.batch_size:
                yield Batch.collate(samples, done, states)
                samples, done, states = [], {}, {}
        if samples or done:
            yield Batch.collate(samples, done, states)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Where DataLoader workers come from: freshly spawned interpreters, not forks of this process.

    The student trains inside a flow run, whose process holds Prefect's threads, event loop and signal bridge;
    workers forked from it exited with code 1 and no traceback when DataLoader shut them down (seen in the test
    suite after the flow tests). A fork server would inherit the environment of the moment it started, not the
    current one (an S3 endpoint set later would be missed). Spawned workers see the current environment and only
    the stream's pickled state (URLs, the plan) crosses; the price is an interpreter start and the torch import
    per worker and epoch, about a second or two, paid only with ``num_workers > 0``.
    """
    return multiprocessing.get_context("spawn")


class StreamLoader:
    """One epoch of a ``ShardStream`` per iteration, in ``Batch``es of exactly ``batch_size`` (the last one of the
    epoch may be smaller), decoded in ``num_workers`` DataLoader workers (0: in this process). Without workers,
    ``prefetch_batches > 0`` reads and decodes in a background thread that many batches ahead, so that the work
    overlaps a GPU's training step; on a CPU whose cores torch already uses it is slower (measured in
    ``benchmarks/client.py``: 0.84-0.88 of the in-memory ceiling with the thread against 0.92 inline on 2
    cores), so the default is 0, inline on the consumer's thread, and ``stream_training`` turns it on for CUDA models.

    After an epoch, ``drops`` holds its ``DropCounts`` (workers' reports and ``missing_from_index`` added up) and
    ``done`` the shards it finished. ``chunks()`` yields the workers' batches as they come instead, empty ones and
    short ones included, for callers that act on each finished shard (``Batch.done``) rather than count samples;
    iterating the loader itself drops the empty ones, so there ``Batch.done`` may miss shards (``drops`` does not).
    """

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_batches: int = 0) -> None:  # fmt: skip
        if batch_size < 1 or num_workers < 0 or prefetch_batches < 0:
            raise ValueError(f"need batch_size >= 1, num_workers >= 0 and prefetch_batches >= 0, got {batch_size!r}, "
                             f"{num_workers!r} and {prefetch_batches!r}")  # fmt: skip
        self.stream, self.batch_size = stream, batch_size
        self.num_workers, self.pin_memory, self.prefetch_batches = num_workers, pin_memory, prefetch_batches
        self.drops, self.done = DropCounts(), []

    def chunks(self) -> Iterator[Batch]:
        self.drops = DropCounts(missing_from_index=len(self.stream.missing_from_index))
        self.done = []
        batches = _WorkerBatches(self.stream, self.batch_size)
        if self.num_workers == 0 and self.prefetch_batches:
            loader = prefetch(iter(batches), self.prefetch_batches, name="plada-stream")
            if self.pin_memory:
                loader = (chunk.pin_memory() for chunk in loader)
        else:  # workers start per epoch (not persistent), so each one pickles the stream as it is now
            loader = DataLoader(batches, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                multiprocessing_context=_worker_context() if self.num_workers else None)
        for chunk in loader:
            for shard, drops in chunk.done.items():
                self.drops.add(drops)
                self.done.append(shard)
            for shard, state in chunk.states.items():
                self.stream.set_shard_state(shard, state)
            yield chunk

    def __iter__(self) -> Iterator[Batch]:
        pending: list[Batch] = []
        held = 0
        for chunk in self.chunks():
            if not len(chunk):
                continue  # only drop reports, already in self.drops
            if not pending and len(chunk) == self.batch_size:
                yield chunk  # the usual case: passes through untouched (and pinned)
                continue
            pending.append(chunk)
            held += len(chunk)
            while held >= self.batch_size:
                batch, rest = Batch.cat(pending).split(self.batch_size)
                yield batch
                pending, held = ([rest] if len(rest) else []), held - self.batch_size
        if held:
            yield Batch.cat(pending)
