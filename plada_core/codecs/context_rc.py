"""Codec "context-rc": every bit of the selection coded by an adaptive binary range coder under context models.

Why it beats delta varints + Zstd: a pool is stored class block by class block, so a selection alternates
between dense stretches (inside a relevant block, small gaps) and jumps; and labels repeat inside a block,
broken by the teacher's noise. Zstd sees bytes; this codec predicts each decision from what came just
before it, and the gap it just coded tells it whether a new block (and so a new label) is likely.

Body = the range-coded stream (``rangecoder``), then zero bytes of padding (see "Bounded decoding").
Items are coded in increasing index order; for each one, first the gap, then the label.

**Gap** ``g = index - previous index`` (``previous`` starts at -1, so ``g >= 1``), in Elias-gamma form:

- the bucket ``b = g.bit_length()`` as ``b - 1`` one-bits and a closing zero-bit (no closing bit once
  ``b`` reaches ``N.bit_length()``, the largest possible), unary position ``j`` in context (previous
  bucket up to 15, moving average of buckets in quarter steps up to 15/4, ``j`` up to 23). The average
  (weight 1/8 on the newest) tells "inside a dense block" from "jumping between blocks".
- the ``b - 1`` bits below the leading one, most significant first: the top three in context
  (bucket, bits so far), the rest uniform in chunks of at most 16.

**Label**, against a model of the current block: decayed label counts (``+2`` per item, halved when the total
passes 32, quartered after a gap of 256 or more, which probably left the block) give the block's ``mode``,
and a recency list keeps the 8 latest distinct labels. Then:

1. one bit "label == mode" in context (gap bucket up to 8, the mode's share of the counts in 0..9, previous
   outcome);
2. otherwise the label's position in the recency list with the mode left out, in unary, in context
   (gap bucket, previous outcome, position); the list running out means "none of these";
3. otherwise the label itself in ``(C - 1).bit_length()`` bits, MSB first: the top 12 in a binary tree of
   contexts (an adaptive order-0 model of the classes), lower bits uniform.

The previous outcome is 0 (mode), 1 (first of the list), 2 (anything else).

**Bounded decoding.** A range decoder can emit many decisions per byte, so the body length caps the work:
a body must have at least ``(k - 64) / 8`` bytes (at least one bit per image beyond the first 64). The
encoder pads with zeros to reach that length, which only ever happens to near-trivial selections (long
runs with a single label), and the decoder rejects any other body length or a non-zero pad. Together
with the per-item limits (bucket <= ``N.bit_length()``, label bits fixed by C) a hostile body costs at most
O(len(body)) time and memory, however large the header's k.
"""

from __future__ import annotations

from array import array

import numpy as np

from plada_core.codecs.base import CorruptBody
from plada_core.codecs.rangecoder import MeteredEncoder, RangeDecoder, RangeEncoder, StreamError, new_table

__all__ = ["Model", "code_lengths", "decode_body", "decode_items", "encode_body", "encode_items", "min_body_length"]

_ITEMS_PER_BYTE = 8
_FREE_ITEMS = 64
_POSITIONS = 24  # unary positions with a context of their own; later ones share the last
_CAPPED = 16  # previous bucket and average bucket are capped at 15 in the gap context
_TREE_BITS = 3  # mantissa bits under a context; the rest are nearly uniform inside a block
_RECENT = 8
_COUNT_LIMIT = 32
_FORGET_BUCKET = 9  # gaps >= 2**8 usually leave the current block
_LABEL_TREE_BITS = 12
_OUTCOMES = 3
_GAP_CLASSES = 8  # buckets 1..7 each, 8+ together, for the label contexts


def min_body_length(k: int) -> int:
    """Fewest body bytes a payload of ``k`` images may have (the decoder's bound on work per byte)."""
    return max(0, -(-(k - _FREE_ITEMS) // _ITEMS_PER_BYTE))


class Model:
    """Context tables and the running state both sides keep; ``coder`` is an encoder or a decoder.

    Every method takes the true value (the encoder's) and returns the coded one (the decoder's): a decoder
    ignores the value it is given, so one code path serves both directions and they cannot drift apart.
    Subclasses (other codecs' models) may override the label methods; the gap methods are shared.
    """

    forget_shift = 2  # a gap of bucket >= _FORGET_BUCKET divides the block's label counts by 2**forget_shift

    def __init__(self, n_reference: int, n_classes: int) -> None:
        self.max_bucket = n_reference.bit_length()  # every gap is <= N
        self.label_bits = (n_classes - 1).bit_length()  # 0 when C = 1: the label is known
        self.n_classes = n_classes
        self.bucket_table = new_table(_CAPPED * _CAPPED * _POSITIONS)
        self.mantissa_table = new_table(65 << _TREE_BITS)
        self.mode_table = new_table(_GAP_CLASSES * 10 * _OUTCOMES)
        self.recent_table = new_table(_GAP_CLASSES * _OUTCOMES * _RECENT)
        self.label_tree = new_table(2 << min(self.label_bits, _LABEL_TREE_BITS))
        self.previous_bucket = 0
        self.average = 0  # exponential moving average of buckets, times 32
        self.outcome = 0
        self.recent: list[int] = []
        self.counts: dict[int, int] = {}
        self.total = 0
        self.mode = -1

    # ------------------------------------------------------------ gaps

    def gap(self, coder, gap: int) -> tuple[int, int]:
        """Code ``gap``; returns (gap, bucket)."""
        bucket = self._bucket(coder, gap.bit_length())
        if bucket == 1:
            return 1, 1
        return (1 << (bucket - 1)) | self._mantissa(coder, gap, bucket), bucket

    def _bucket(self, coder, bucket: int) -> int:
        base = (min(self.previous_bucket, _CAPPED - 1) * _CAPPED + min(self.average >> 3, _CAPPED - 1)) * _POSITIONS
        table, bit, last = self.bucket_table, coder.bit, self.max_bucket - 1
        ones = 0
        while ones < last and bit(table, base + min(ones, _POSITIONS - 1), ones < bucket - 1):
            ones += 1
        return ones + 1

    def _mantissa(self, coder, gap: int, bucket: int) -> int:
        width = bucket - 1
        tree = min(width, _TREE_BITS)
        node, base = 1, bucket << _TREE_BITS
        for shift in range(width - 1, width - 1 - tree, -1):
            node = (node << 1) | coder.bit(self.mantissa_table, base + node, (gap >> shift) & 1)
        value, rest = node ^ (1 << tree), width - tree
        while rest:
            chunk = min(rest, 16)
            rest -= chunk
            value = (value << chunk) | coder.uniform(chunk, (gap >> rest) & ((1 << chunk) - 1))
        return value

    # ------------------------------------------------------------ labels

    def label(self, coder, label: int, bucket: int) -> int:
        """Code ``label`` of an item whose gap had ``bucket``; returns the label."""
        gap_class = min(bucket, _GAP_CLASSES) - 1
        if self.mode >= 0:
            share = self.counts[self.mode] * 9 // self.total
            context = (gap_class * 10 + share) * _OUTCOMES + self.outcome
            if coder.bit(self.mode_table, context, label == self.mode):
                self.outcome = 0
                return self.mode
        return self.not_mode(coder, label, bucket)

    def not_mode(self, coder, label: int, bucket: int) -> int:
        """Code a ``label`` that is not the mode (or there is none yet); returns the label."""
        gap_class = min(bucket, _GAP_CLASSES) - 1
        others = [other for other in self.recent if other != self.mode]
        position = self._recent_position(coder, others, label, gap_class)
        if position < len(others):
            self.outcome = min(position + 1, _OUTCOMES - 1)
            return others[position]
        self.outcome = _OUTCOMES - 1
        return self._explicit(coder, label)

    def _recent_position(self, coder, others: list[int], label: int, gap_class: int) -> int:
        target = others.index(label) if label in others else len(others)
        base = (gap_class * _OUTCOMES + self.outcome) * _RECENT
        position = 0
        while position < len(others) and coder.bit(self.recent_table, base + position, target > position):
            position += 1
        return position

    def _explicit(self, coder, label: int) -> int:
        tree = min(self.label_bits, _LABEL_TREE_BITS)
        node = 1
        for shift in range(self.label_bits - 1, self.label_bits - 1 - tree, -1):
            node = (node << 1) | coder.bit(self.label_tree, node, (label >> shift) & 1)
        value, rest = node ^ (1 << tree), self.label_bits - tree
        while rest:
            chunk = min(rest, 16)
            rest -= chunk
            value = (value << chunk) | coder.uniform(chunk, (label >> rest) & ((1 << chunk) - 1))
        if value >= self.n_classes:
            raise CorruptBody(f"label {value} is outside [0, {self.n_classes}); the body is corrupt")
        return value

    # ------------------------------------------------------------ state

    def update(self, bucket: int, label: int) -> None:
        """Advance the running state past one item (same on both sides)."""
        self.previous_bucket = bucket
        self.average += ((bucket << 5) - self.average) >> 3
        if label in self.recent:
            self.recent.remove(label)
        self.recent.insert(0, label)
        del self.recent[_RECENT:]
        if bucket >= _FORGET_BUCKET:
            self._decay(self.forget_shift)
        self.counts[label] = self.counts.get(label, 0) + 2
        self.total += 2
        if self.mode < 0 or self.counts[label] > self.counts[self.mode]:
            self.mode = label
        if self.total > _COUNT_LIMIT:
            self._decay(1)

    def _decay(self, shift: int) -> None:
        self.counts = {label: count >> shift for label, count in self.counts.items() if count >> shift}
        self.total = sum(self.counts.values())
        if self.mode not in self.counts:
            # ties go to the label first seen: dict order is insertion order, the same on both sides
            self.mode = max(self.counts, key=self.counts.__getitem__) if self.counts else -1


def encode_body(indices: np.ndarray, labels: np.ndarray, *, n_reference: int, n_classes: int) -> bytes:
    """The body for sorted, validated ``indices`` and their ``labels``."""
    return encode_items(Model(n_reference, n_classes), indices, labels)


def decode_body(body: bytes, *, k: int, n_reference: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels from an untrusted body; raises :class:`CorruptBody` naming the problem."""
    return decode_items(Model, body, k=k, n_reference=n_reference, n_classes=n_classes)


def encode_items(model: Model, indices: np.ndarray, labels: np.ndarray) -> bytes:
    """The body for sorted ``indices`` and their ``labels`` under a fresh ``model``: stream, then padding."""
    coder, previous = RangeEncoder(), -1
    for index, label in zip(indices.tolist(), labels.tolist()):
        _, bucket = model.gap(coder, index - previous)
        model.label(coder, label, bucket)
        model.update(bucket, label)
        previous = index
    if not indices.size:
        return b""
    stream = coder.finish()
    return stream + bytes(max(0, min_body_length(indices.size) - len(stream)))


def code_lengths(model: Model, indices: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Bits that the gaps and the labels cost under a fresh ``model`` (ideal code lengths, for analysis)."""
    coder, previous, gap_bits, label_bits = MeteredEncoder(), -1, 0.0, 0.0
    for index, label in zip(indices.tolist(), labels.tolist()):
        start = coder.bits
        _, bucket = model.gap(coder, index - previous)
        middle = coder.bits
        model.label(coder, label, bucket)
        model.update(bucket, label)
        gap_bits, label_bits = gap_bits + middle - start, label_bits + coder.bits - middle
        previous = index
    return gap_bits, label_bits


def decode_items(
    model_class: type[Model], body: bytes, *, k: int, n_reference: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`encode_items` wrote with a ``model_class`` model, from an untrusted body, in O(len(body))."""
    if k == 0:
        if body:
            raise CorruptBody(f"k=0 but the body has {len(body)} bytes; the payload is corrupt")
        return np.empty(0, np.int64), np.empty(0, np.int32)
    if len(body) < min_body_length(k):
        raise CorruptBody(
            f"k={k} images need a body of at least {min_body_length(k)} bytes, got {len(body)}: "
            "a forged image count (decoding would not be bounded by the body)"
        )
    try:
        coder = RangeDecoder(body)
        indices, labels = _decode_items(coder, model_class(n_reference, n_classes), k, n_reference)
    except StreamError as err:
        raise CorruptBody(f"range-coded stream is corrupt or truncated: {err}") from None
    _check_tail(body, coder.position, k)
    return np.frombuffer(indices, dtype=np.int64), np.frombuffer(labels, dtype=np.int32)


def _decode_items(coder: RangeDecoder, model: Model, k: int, n_reference: int) -> tuple[array, array]:
    indices, labels, index = array("q"), array("i"), -1
    for _ in range(k):
        gap, bucket = model.gap(coder, 0)
        index += gap
        if index >= n_reference:
            raise CorruptBody(f"index {index} is >= N={n_reference}; the body is corrupt")
        label = model.label(coder, 0, bucket)
        model.update(bucket, label)
        indices.append(index)
        labels.append(label)
    return indices, labels


def _check_tail(body: bytes, stream_end: int, k: int) -> None:
    """After the stream: exactly the padding the encoder writes, all zero."""
    expected = stream_end + max(0, min_body_length(k) - stream_end)
    if len(body) != expected or any(body[stream_end:]):
        raise CorruptBody(
            f"the stream ends at byte {stream_end} of {len(body)} and what follows is not the zero padding "
            f"an encoder writes ({expected - stream_end} bytes); the body is corrupt"
        )
