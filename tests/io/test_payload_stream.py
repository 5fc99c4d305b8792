"""PayloadStream on real pools of sklearn digits: which shards it reads, what it yields, in which order, and what it
counts when the pool cannot deliver. (That memory does not grow with k is a design property, not tested here.)"""

from collections import Counter

import numpy as np
import pytest
import torch
from digits_pool import SHARD, make_payload, make_pool

from plada_core.images import PreprocessConfig, decode_image, preprocess
from plada_core.io import payload_stream, pool, shard_stream, storage, tables, tar_stream
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
    whole, ranged = [], []

    def spy_whole(shard_url, stats):
        whole.append(shard_url.rsplit("/", 1)[-1])
        return tar_stream.iter_shard_located(shard_url, stats)

    def spy_ranged(shard_url, offsets, lengths):
        ranged.append(shard_url.rsplit("/", 1)[-1])
        return tar_stream.read_members(shard_url, offsets, lengths)

    monkeypatch.setattr(payload_stream, "iter_shard_located", spy_whole)
    monkeypatch.setattr(payload_stream, "read_members", spy_ranged)
    stream = PayloadStream(url, payload, CFG, shuffle_buffer=8)
    needed = {f"shard-{s:06d}.tar" for s in (0, 1, 3, 4, 6, 8, 9)}
    orders, samples = [], []
    for epoch in range(3):
        whole.clear(), ranged.clear()
        samples.append(Counter((i, y, x.numpy().tobytes()) for i, y, x in epoch_samples(stream, epoch)))
        opened = whole + ranged
        assert sorted(opened) == sorted(needed), "every needed shard once, no other"
        # the first epoch reads each shard whole and notes where its images lie; later ones fetch just those
        if epoch == 0:
            assert sorted(whole) == sorted(needed) and ranged == []
        else:
            assert whole == [] and sorted(ranged) == sorted(needed)
        orders.append(list(opened))
    assert len({tuple(o) for o in orders}) > 1, "the shard order is shuffled per epoch"
    assert samples[0] == samples[1] == samples[2] and sum(samples[0].values()) == payload.k
    assert stream.drops.total == 0 and stream.ranged_fallbacks == 0


def test_ranged_reads_fetch_nearby_images_in_one_request(digits_pool, monkeypatch):
    url, _, _ = digits_pool
    shard = storage.join(url, "shard-000000.tar")
    located = list(tar_stream.iter_shard_located(shard, tar_stream.ReadStats()))
    offsets = np.array([o for _, _, o in located])
    lengths = np.array([len(d) for _, d, _ in located])
    requests, real = [], storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda u, a=None, b=None: requests.append((a, b)) or real(u, a, b))
    pick = [0, 3, 4, 9]
    assert list(tar_stream.read_members(shard, offsets[pick], lengths[pick])) == [located[i][1] for i in pick]
    assert len(requests) == 1 and requests[0] == (offsets[0], offsets[9] + lengths[9])  # gaps of a few KiB
    requests.clear()
    assert list(tar_stream.read_members(shard, offsets[pick], lengths[pick], max_gap=0)) == [located[i][1] for i in pick]
    assert len(requests) == 4  # no gap allowed: even neighbours 3 and 4 are apart by 3's JSON and 4's headers
    with pytest.raises(ValueError, match="ascending"):
        list(tar_stream.read_members(shard, offsets[[3, 0]], lengths[[3, 0]]))
    with pytest.raises(ValueError, match="no image at byte"):
        list(tar_stream.read_members(shard, offsets[pick] + 1, lengths[pick]))


def test_a_shard_rewritten_after_the_first_epoch_is_read_whole_again(storage_root):
    url, source = make_pool(storage_root, n=60)
    selected = list(range(0, 60, 4))
    stream = PayloadStream(url, make_payload(url, source, selected), CFG, shuffle_buffer=4)
    first = Counter((i, y) for i, y, _ in epoch_samples(stream, 0))
    shard = storage.join(url, "shard-000001.tar")
    assert stream.shard_state("shard-000001.tar") is not None
    # the same samples behind a longer first member: every learned offset now points into the wrong bytes
    data = storage.read_bytes(shard)
    storage.write_bytes(shard, _with_padding_member(data))
    stream.set_epoch(1)
    loader = stream.loader(batch_size=16)
    again = Counter((i, y) for b in loader for i, y in zip(b.index.tolist(), b.y.tolist()))
    assert again == first and stream.ranged_fallbacks == 1
    assert loader.drops.total == 0 and loader.drops.events == {"ranged_read_failed": 1}
    stream.set_epoch(2)
    assert len(list(stream)) == len(selected) and stream.ranged_fallbacks == 1  # relearned: ranged again


def _with_padding_member(tar_bytes: bytes) -> bytes:
    """The tar with a 4 KiB ``__pad__`` file first (readers skip ``__…__`` entries), shifting every member."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        pad = tarfile.TarInfo("__pad__")
        pad.size = 4096
        dst.addfile(pad, io.BytesIO(bytes(4096)))
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
    return out.getvalue()


def test_workers_hand_back_where_images_lie(digits_pool):
    url, _, payload = digits_pool
    stream = PayloadStream(url, payload, CFG, seed=3, shuffle_buffer=8)
    assert all(stream.shard_state(s) is None for s in stream.shards)
    alone = Counter((i, y) for i, y, _ in epoch_samples(PayloadStream(url, payload, CFG), 0))
    assert Counter((i, y) for i, y, _ in epoch_samples(stream, 0, num_workers=2)) == alone
    assert all(stream.shard_state(s) is not None for s in stream.shards)
    assert Counter((i, y) for i, y, _ in epoch_samples(stream, 1, num_workers=2)) == alone


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


def test_ranged_reads_yield_the_same_sequence_as_whole_reads(digits_pool):
    """Same samples, same order, every epoch: a student trains on exactly what it trained on before ranged reads."""
    url, _, payload = digits_pool

    def sequence(ranged: bool) -> list:
        stream = PayloadStream(url, payload, CFG, seed=4, shuffle_buffer=16, ranged_reads=ranged)
        return [[(i, y, x.numpy().tobytes()) for i, y, x in epoch_samples(stream, e)] for e in range(3)]

    assert sequence(True) == sequence(False)
