"""PayloadStream on real pools of sklearn digits: which shards it reads, what it yields, in which order, and what it
counts when the pool cannot deliver. (That memory does not grow with k is a design property, not tested here.)"""

from collections import Counter

import pytest
import torch
from digits_pool import SHARD, make_payload, make_pool

from plada_core.images import PreprocessConfig, decode_image, preprocess
from plada_core.io import payload_stream, pool, shard_stream, storage, tables
from plada_core.io.payload_stream import PayloadStream

CFG = PreprocessConfig(image_size=8, channels=1)


# shards 0, 1, 3, 4, 6, 8, 9 hold selected images; 2, 5 and 7 must never be opened
SELECTED = [i for i in range(200) if i // SHARD not in (2, 5, 7) and i % 3 != 1]


@pytest.fixture(scope="module")
def digits_pool(tmp_path_factory):
    url, source = make_pool(tmp_path_factory.mktemp("digits").as_uri())
    return url, source, make_payload(url, source, SELECTED)


def expected_sample(source, index: int) -> torch.Tensor:
    return torch.from_numpy(preprocess(decode_image(source.samples[index].data), CFG))


def epoch_samples(stream: PayloadStream, epoch: int, num_workers: int = 0) -> list[tuple[int, int, torch.Tensor]]:
    stream.set_epoch(epoch)
    loader = stream.loader(batch_size=16, num_workers=num_workers)
    return [(i, y, x) for b in loader for i, y, x in zip(b.index.tolist(), b.y.tolist(), b.x)]


def test_yields_exactly_the_payload_images_with_their_labels(digits_pool):
    url, source, payload = digits_pool
    stream = PayloadStream(url, payload, CFG, seed=1, shuffle_buffer=8)
    samples = list(stream)
    assert len(samples) == stream.n_expected == payload.k and stream.drops.total == 0
    by_image = Counter((x.numpy().tobytes(), y) for x, y in samples)
    assert by_image == Counter((expected_sample(source, i).numpy().tobytes(), source.samples[i].label)
                               for i in SELECTED)
    for x, y in samples[:3]:
        assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int)


def test_reads_only_the_shards_holding_selected_images_each_once_per_epoch(digits_pool, monkeypatch):
    url, _, payload = digits_pool
    opened = []

    def spy(shard_url, stats):
        opened.append(shard_url.rsplit("/", 1)[-1])
        return pool.iter_shard(shard_url, stats)

    monkeypatch.setattr(payload_stream, "iter_shard", spy)
    stream = PayloadStream(url, payload, CFG, shuffle_buffer=8)
    needed = {f"shard-{s:06d}.tar" for s in (0, 1, 3, 4, 6, 8, 9)}
    orders = []
    for epoch in range(3):
        opened.clear()
        assert len(epoch_samples(stream, epoch)) == payload.k
        assert sorted(opened) == sorted(needed), "every needed shard once, no other"
        orders.append(list(opened))
    assert len({tuple(o) for o in orders}) > 1, "the shard order is shuffled per epoch"


def test_order_is_seeded_and_changes_with_the_epoch(digits_pool):
    url, _, payload = digits_pool

    def order(seed: int, epoch: int) -> list[int]:
        return [i for i, _, _ in epoch_samples(PayloadStream(url, payload, CFG, seed=seed, shuffle_buffer=32), epoch)]

    first = order(0, 0)
    assert first == order(0, 0), "same seed and epoch, same order"
    assert first != order(0, 1) and first != order(1, 0)
    assert sorted(first) == sorted(order(0, 1)) == SELECTED
    assert first != sorted(first), "the buffer mixes samples within and across shards"


def test_two_workers_yield_the_same_multiset_in_exact_batches(digits_pool):
    url, _, payload = digits_pool
    stream = PayloadStream(url, payload, CFG, seed=3, shuffle_buffer=8)
    alone = epoch_samples(stream, 1)
    loader = stream.loader(batch_size=16, num_workers=2)
    stream.set_epoch(1)
    batches = list(loader)
    assert [len(b) for b in batches[:-1]] == [16] * (len(batches) - 1) and len(batches) == -(-payload.k // 16)
    together = [(i, y, x) for b in batches for i, y, x in zip(b.index.tolist(), b.y.tolist(), b.x)]

    def key(samples):
        return Counter((i, y, x.numpy().tobytes()) for i, y, x in samples)

    assert key(together) == key(alone)
    assert sorted(loader.done) == sorted(stream.shards) and loader.drops.total == 0


def test_indices_missing_from_the_pool_index_are_known_up_front(tmp_path):
    url, source = make_pool(tmp_path.as_uri(), n=60)
    index = pool.read_index(url)
    tables.write_frame(index[~index["index"].isin([5, 41])], storage.join(url, "index.parquet"))
    stream = PayloadStream(url, make_payload(url, source, [1, 5, 7, 41, 50]), CFG)
    assert stream.missing_from_index.tolist() == [5, 41] and stream.n_expected == 3
    assert sorted(y for _, y in stream) == sorted(source.samples[i].label for i in (1, 7, 50))
    assert stream.drops.missing_from_index == 2 and stream.drops.total == 2
    loader = stream.loader(batch_size=2)
    assert sum(len(b) for b in loader) == 3 and loader.drops.missing_from_index == 2


def test_corrupt_shard_and_undecodable_image_are_counted(storage_root):
    url, source = make_pool(storage_root, n=60, broken=(45,))
    shard = storage.join(url, "shard-000001.tar")
    data = storage.read_bytes(shard)
    storage.write_bytes(shard, data[: len(data) // 2])  # cut mid-shard: its second half is lost
    selected = list(range(0, 60, 3))
    payload = make_payload(url, source, selected)
    for workers in (0, 2):
        stream = PayloadStream(url, payload, CFG, shuffle_buffer=4)
        loader = stream.loader(batch_size=4, num_workers=workers)
        got = [i for b in loader for i in b.index.tolist()]
        drops = loader.drops
        assert drops.undecodable == 1 and 45 not in got
        assert drops.unreadable >= 1 and len(got) + drops.total == payload.k
        assert set(got) <= set(selected) and set(range(0, 20, 3)) <= set(got)  # shard 0 intact
        assert drops.events.get("unreadable_shard") == 1 and any("shard-000001" in e for e in drops.errors)
    stream = PayloadStream(url, payload, CFG)
    assert len(list(stream)) + stream.drops.total == payload.k, "num_workers=0 callers read stream.drops"


def test_the_background_reader_yields_what_the_inline_reader_yields(digits_pool, monkeypatch):
    url, _, payload = digits_pool
    stream = PayloadStream(url, payload, CFG, seed=3, shuffle_buffer=8)
    threads, real = [], shard_stream.prefetch

    def spy(iterator, depth, name):
        threads.append(depth)
        return real(iterator, depth, name)

    monkeypatch.setattr(shard_stream, "prefetch", spy)
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        ahead = [(b.index.tolist(), b.y.tolist(), b.x) for b in stream.loader(16, prefetch_batches=2)]
        inline = [(b.index.tolist(), b.y.tolist(), b.x) for b in stream.loader(16)]
        assert [a[:2] for a in ahead] == [b[:2] for b in inline]
        assert all(torch.equal(a[2], b[2]) for a, b in zip(ahead, inline))
    assert threads == [2, 2]  # the inline loaders started no thread
    with pytest.raises(ValueError, match="prefetch_batches"):
        stream.loader(16, prefetch_batches=-1)
