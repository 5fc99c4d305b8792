"""Reading pool shards: a lean tar stream reader that yields ``(global index, image bytes)`` and counts what it drops.

Shards are written by ``wds.TarWriter`` (``plada_core.io.pool``) and stay plain webdataset shards: ``wds.WebDataset``
pipelines read them. ``iter_shard``, the scoring hot path, does not go through webdataset's ``tar_file_expander`` +
``tarfile`` though: ``_tar_files`` parses the 512-byte tar headers straight out of one stream read in 1 MiB chunks,
and ``_samples`` groups the members by key exactly as webdataset's ``group_by_keys`` does (its own
``base_plus_ext`` splits the names). Two reasons:

- speed: tarfile builds a ``TarInfo`` and parses a pax header for every member (TarWriter writes one per member
  for its float mtime): ~0.1 ms per sample against ~0.012 ms here, index JSON included, where a CPU worker
  spends ~0.5 ms per image in all on scoring (``benchmarks/scoring.py``);
- faults: tarfile's stream mode takes a cut at a member boundary, or any corrupt header after the first, for
  the normal end of the archive and drops the rest of the shard silently. Here the end-of-archive marker (two
  zero blocks, then only zeros) must be there, and a bad header is a counted ``ReadError``. Pool shards are plain
  tar (``build_reference`` never compresses); a gzip/bzip2/xz/zstd one is a counted ``ReadError`` that says so.

Tests (tests/io/test_tar_stream.py) check that it yields webdataset's samples for every cut of a real shard and
for pax, GNU and ustar archives with long names, links, directories and ``__meta__`` entries.
"""

from __future__ import annotations

import json
import re
import struct
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from webdataset.tariterators import base_plus_ext

from plada_core.images import IMAGE_MAGIC
from plada_core.io import storage

__all__ = ["ReadStats", "TruncatedShard", "iter_samples", "iter_shard", "iter_shard_located", "read_members"]


@dataclass
class ReadStats:
    """What a shard reader had to drop, with reasons; never skip silently.

    ``errors`` holds one message per event and ``counts`` the events per kind: ``missing_shard``,
    ``unreadable_shard`` (truncated or corrupt tar; the rest of that shard is lost), ``transient`` (storage
    failed mid-read even after the client's retries: re-read the shard rather than keep a partial result),
    ``bad_sample`` (no index or no image) and ``undecodable_image`` (bytes that are not an image). Events are
    not images: a truncated shard is one event however many images it lost; compare yielded with expected.
    """

    errors: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.errors.append(message[:300])

    def handler(self, exc: Exception) -> bool:
        kind = "transient" if storage.is_transient(exc) else "unreadable_shard"
        self.record(kind, f"{type(exc).__name__}: {exc}")
        return True  # keep reading what is still readable

    @property
    def transient(self) -> bool:
        """Storage failed mid-read: the shard may well be intact, so re-read it (let the task retry) rather
        than keep a partial result."""
        return self.counts["transient"] > 0


class TruncatedShard(tarfile.ReadError):
    """The shard ends before its tar end-of-archive marker: the samples after the cut are lost."""


_BLOCK = 512
_CHUNK = 1 << 20  # one read call per MiB of shard, whatever the member sizes
_ZERO_BLOCK = bytes(_BLOCK)
_REGULAR = frozenset(b"0\x007")  # tarfile's REGULAR_TYPES less GNU sparse (no PLADA or webdataset writer makes one)
_NO_DATA = frozenset(b"123456")  # links, devices, directories, fifos: tarfile skips no data after them either
_EXTENDED = frozenset(b"xXgLK")  # pax (X: Solaris), global pax, GNU long name and long link name
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: "__…__" entries are not sample files
_CUT = "the samples after the cut are lost. Rewrite the shard from its sources."
_COALESCE_GAP = 256 << 10  # read_members: skipping less than this costs more in requests than it saves in bytes
_IMAGE_STARTS = tuple(IMAGE_MAGIC.values())


def _number(field: bytes, what: str, url: str, offset: int) -> int:
    """A tar number field: NUL/space-terminated octal, or base-256 (GNU) when its first byte is 0x80 or 0xff."""
    try:
        return int(field.rstrip(b"\0 ") or b"0", 8)  # what every writer but a few GNU cases makes
    except ValueError:
        pass
    if field[0] in (0o200, 0o377):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0o377 else n
    try:  # as tarfile's nti: up to the first NUL, spaces stripped
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise tarfile.ReadError(f"{url}: invalid tar header at offset {offset} ({what} field {field!r})") from None


def _checksum_ok(block: bytes, url: str, offset: int) -> bool:
    stored = _number(block[148:156], "checksum", url, offset)
    # The unsigned byte sum with the checksum field read as 8 spaces. Each 256-byte half sums to at most
    # 65,280 < 65,521, so adler32's low word (1 + sum mod 65,521) is that half's exact sum: 0.2 µs a header
    # instead of the 2 µs of sum(block).
    total = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    if stored == total - sum(block[148:156]) + 256:
        return True
    # Some old tars (Sun, NeXT) summed signed chars; tarfile accepts either, so do we.
    return stored == 256 + sum(struct.unpack_from("148b8x356b", block))


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_overrides(data: bytes, url: str, offset: int) -> tuple[str | None, int | None]:
    """``path`` and ``size`` of a pax extended header (records ``"<len> <key>=<value>\\n"``, then NUL padding).
    The others (mtime, uname …: all that TarWriter writes) change neither a member's name nor where its data
    ends."""
    path = size = None
    if b"path=" not in data and b"size=" not in data:
        return path, size
    pos = 0
    try:
        while pos < len(data) and data[pos] != 0:
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            if length <= space - pos or data[pos + length - 1 : pos + length] != b"\n":
                raise ValueError(f"malformed record at byte {pos}")
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
            if key == b"path":
                path = value.decode("utf-8", "surrogateescape")
            elif key == b"size":
                size = int(value)
                if size < 0:
                    raise ValueError(f"negative size {size}")
            pos += length
    except ValueError as exc:
        raise tarfile.ReadError(f"{url}: invalid pax header at offset {offset}: {exc}") from None
    return path, size


def _tar_files(stream, url: str) -> Iterator[tuple[str, bytes, int]]:
    """``(name, data, offset of data in the stream)`` of every regular file of a tar stream, in order, parsed from
    the 512-byte headers.

    Reads the stream in 1 MiB chunks and slices members out of that buffer. Follows tarfile where it matters
    here: pax ``path``/``size`` and GNU long names, ustar name prefixes, octal or base-256 numbers, unsigned or
    signed checksums, data skipped for member types it does not know. Raises ``TruncatedShard`` where the
    stream ends before the end-of-archive marker (two zero blocks), and ``tarfile.ReadError`` for a header that
    fails its checksum or holds a malformed number, and for nonzero bytes after the end marker."""
    buf, pos, base = b"", 0, 0  # buf[pos] is byte base + pos of the stream

    def fill(n: int) -> None:
        """Make buf[pos : pos + n] hold the next n bytes (fewer only at the end of the stream)."""
        nonlocal buf, pos, base
        parts, have = [buf[pos:]], len(buf) - pos
        while have < n:
            data = stream.read(max(_CHUNK, n - have))
            if not data:
                break
            parts.append(data)
            have += len(data)
        buf, base, pos = b"".join(parts), base + pos, 0

    name_override = size_override = None  # from a pax or GNU long-name header, for the member after it
    while True:
        if pos + _BLOCK > len(buf):
            fill(_BLOCK)
        offset = base + pos
        block = buf[pos : pos + _BLOCK]
        if len(block) < _BLOCK:
            if not offset and not block:
                raise TruncatedShard(f"{url} is empty (0 bytes). Rewrite the shard from its sources.")
            where = "inside a tar header" if block else "at a member boundary"
            raise TruncatedShard(f"{url} ends {where} (offset {offset + len(block)}) without the tar "
                                 f"end-of-archive marker; {_CUT}")
        pos += _BLOCK
        if block == _ZERO_BLOCK:
            if name_override is not None or size_override is not None:
                raise tarfile.ReadError(f"{url}: the extended header before offset {offset} has no member")
            if pos + _BLOCK > len(buf):
                fill(_BLOCK)
            if buf[pos : pos + _BLOCK] != _ZERO_BLOCK:
                raise TruncatedShard(f"{url}: a single zero block at offset {offset} instead of the two-block "
                                     f"end-of-archive marker; the shard is cut or corrupt: {_CUT}")
            rest = buf[pos + _BLOCK :]
            while rest:  # the padding of the last record, normally; anything else hides members from tar readers
                if rest.count(0) != len(rest):
                    raise tarfile.ReadError(f"{url}: nonzero data after the end-of-archive marker at offset "
                                            f"{offset}: a corrupt or concatenated shard")
                rest = stream.read(_CHUNK)
            return
        try:
            if not _checksum_ok(block, url, offset):
                raise tarfile.ReadError(f"{url}: invalid tar header at offset {offset} (bad checksum)")
        except tarfile.ReadError as exc:
            hint = "".join(f" (it starts like a {kind} file; pool shards are plain tar)" for magic, kind in
                           _COMPRESSED.items() if offset == 0 and block.startswith(magic))
            raise tarfile.ReadError(f"{exc}{hint}") from None
        kind = block[156]
        if size_override is None or kind in _EXTENDED:
            size = _number(block[124:136], "size", url, offset)
            if size < 0:
                raise tarfile.ReadError(f"{url}: invalid tar header at offset {offset} (size {size})")
        else:
            size = size_override
        cut = False  # the stream ends in the zero padding after this member's data
        if kind in _EXTENDED or kind in _REGULAR or kind not in _NO_DATA and kind != ord("S"):
            end = pos + size
            padded = pos + (size + _BLOCK - 1) // _BLOCK * _BLOCK
            if padded > len(buf):
                fill(padded - pos)
                end, padded = size, (size + _BLOCK - 1) // _BLOCK * _BLOCK
                if padded > len(buf):
                    if end > len(buf) or kind not in _REGULAR:
                        raise TruncatedShard(f"{url} ends inside the member at offset {offset}; {_CUT}")
                    cut, padded = True, len(buf)  # the data is whole: hand it on first, as tarfile does
            data = buf[pos:end]
            pos = padded
        if kind in _EXTENDED:
            if kind == ord("x") or kind == ord("X"):
                path, pax_size = _pax_overrides(data, url, offset)
                name_override = path if path is not None else name_override
                size_override = pax_size if pax_size is not None else size_override
            elif kind == ord("L"):
                name_override = _text(data)
            continue  # 'g' (global pax) and 'K' (long link target) change no regular file's name or size
        if name_override is not None:
            name = name_override
        else:
            name = _text(block[:100])
            if block[345] and kind != ord("S"):
                name = _text(block[345:500]) + "/" + name
        name_override = size_override = None
        if kind in _REGULAR:
            if not (kind == 0 and name.endswith("/")):  # old tars mark a directory by its trailing slash alone
                yield name, data, offset + _BLOCK  # a member's data follows its header block
            if cut:
                raise TruncatedShard(f"{url} ends in the padding of the member at offset {offset}; {_CUT}")
        elif kind == ord("S"):
            raise tarfile.ReadError(f"{url}: GNU sparse member {name!r} at offset {offset}; pool shards hold none")


def _samples(url: str, stats: ReadStats, offsets: bool = False) -> Iterator[dict]:
    """The shard's samples as webdataset groups them (``{"__key__": key, suffix: bytes, …}``); every problem is
    recorded in ``stats``, and the stream is always closed.

    Grouping follows ``webdataset.tariterators.group_by_keys``: consecutive files with the same key (the name up
    to the first dot of its last component, ``base_plus_ext``) form a sample, suffixes are lower-cased,
    ``__…__`` entries are skipped, a repeated suffix within a sample is counted and dropped, and the sample in
    progress when a read fails is still yielded (its image may be missing: ``iter_shard`` counts that).
    ``offsets``: each sample also maps ``"__offsets__"`` to ``{suffix: offset of that file's data in the shard}``."""
    try:
        stream = storage.open_read(url, block_size=8 << 20)
    except FileNotFoundError:
        stats.record("missing_shard", f"MissingShard: {url} does not exist")
        return
    except Exception as exc:  # noqa: BLE001 - unreachable after retries, denied...: count it, read the next shard
        stats.handler(exc)
        return
    current = None
    try:
        for name, data, offset in _tar_files(stream, url):
            if name.startswith("__") and (("/" not in name and name.endswith("__")) or _META.match(name)):
                continue
            key, suffix = base_plus_ext(name)
            if key is None:
                continue
            suffix = suffix.lower()
            if current is None or key != current["__key__"]:
                if current is not None:
                    yield current
                current = {"__key__": key, "__offsets__": {}} if offsets else {"__key__": key}
            if suffix in current:
                stats.handler(ValueError(f"{name}: duplicate file name in tar file {url}"))
                continue
            current[suffix] = data
            if offsets:
                current["__offsets__"][suffix] = offset
    except Exception as exc:  # noqa: BLE001 - truncated, corrupt or a read that failed after retries: count it
        stats.handler(exc)
    finally:
        stream.close()
    if current is not None:
        yield current


def iter_samples(url: str, stats: ReadStats) -> Iterator[dict]:
    """Any webdataset shard's samples as webdataset groups them (``{"__key__": key, suffix: bytes, …}``), with
    every problem recorded in ``stats``: the reader of tar files that are not pool shards (``wds:`` sources)."""
    return _samples(url, stats)


def iter_shard(url: str, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    """Yield ``(global index, encoded image bytes)`` from one shard, recording unreadable parts in ``stats``.

    Samples whose bytes do not start like their extension's format are dropped here and counted as
    ``undecodable_image``; bytes with a valid header but broken pixel data still reach the caller, whose
    decoder must count them.
    """
    for index, image, _ in _iter_shard(url, stats, offsets=False):
        yield index, image


def iter_shard_located(url: str, stats: ReadStats) -> Iterator[tuple[int, bytes, int]]:
    """``iter_shard`` plus where each image's bytes lie in the shard: ``(index, image bytes, byte offset)``, so
    that a later pass can fetch just those bytes (``read_members``)."""
    return _iter_shard(url, stats, offsets=True)


def _iter_shard(url: str, stats: ReadStats, offsets: bool) -> Iterator[tuple[int, bytes, int]]:
    for sample in _samples(url, stats, offsets):
        ext = "png" if "png" in sample else "jpg"
        image = sample.get(ext)
        try:
            index = int(json.loads(sample["json"])["index"])
        except (KeyError, ValueError, TypeError) as exc:
            stats.record("bad_sample", f"ValueError: sample {sample.get('__key__')!r} has no readable index: {exc}")
            continue
        if image is None:
            stats.record("bad_sample", f"ValueError: sample {sample.get('__key__')!r} (index {index}) has no image")
            continue
        if not image.startswith(IMAGE_MAGIC[ext]):  # nanoseconds, not a decode, and it catches garbage bytes
            stats.record("undecodable_image", f"UndecodableImage: sample {sample.get('__key__')!r} (index {index}) "
                         f"in {url}: {len(image)} bytes starting {bytes(image[:8])!r} are not a {ext.upper()}")
            continue
        yield index, image, sample["__offsets__"][ext] if offsets else -1


def read_members(url: str, offsets: np.ndarray, lengths: np.ndarray, max_gap: int = _COALESCE_GAP) -> Iterator[bytes]:
    """The bytes at ``offsets[i]`` (``lengths[i]`` long) of the shard at ``url``, in the given order, which must be
    ascending: one ranged read per run of members no more than ``max_gap`` bytes apart, so a dense selection
    reads its shard in one request and a sparse one skips what it does not need.

    Every image must start like a PNG or JPEG: anything else means the shard is not the one the offsets were
    taken from, and raises ``ValueError`` (as does a short read); the caller falls back to a full read."""
    offsets, lengths = np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    if len(offsets) != len(lengths) or np.any(np.diff(offsets) < 0) or np.any(lengths < 0):
        raise ValueError(f"{url}: offsets must be ascending and lengths non-negative, one each")
    ends = offsets + lengths
    # a new request wherever the next member starts more than max_gap bytes after the previous one ends
    breaks = np.flatnonzero(offsets[1:] - ends[:-1] > max_gap) + 1
    starts, stops = offsets.tolist(), ends.tolist()  # Python ints: numpy scalar arithmetic per member costs µs
    for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), len(starts)], strict=True):
        if lo == hi:
            continue
        start = starts[lo]
        block = storage.read_bytes(url, start, max(stops[lo:hi]))
        for i in range(lo, hi):
            data = block[starts[i] - start : stops[i] - start]
            if len(data) != stops[i] - starts[i] or not data.startswith(_IMAGE_STARTS):
                raise ValueError(f"{url}: no image at byte {starts[i]} (shard shorter or rewritten)")
            yield data
