"""Codec "context-rc2" (id 3): the gaps of "context-rc", labels under a model of each class's confusions.

The module is named after what it models (the labels a teacher confuses each class with); the codec keeps
the name it was registered under, which payload headers, settings and command lines carry.

Same body layout, range coder, padding and bounded decoding as ``context_rc`` (its docstring is the
reference); gaps are coded exactly as there. What changes is the label model. On the simulator at 1 %
keep (summing each decision's -log2 p), context-rc's labels cost 2.45 bits per kept image and this
model's 2.28 (gaps 4.74 in both); the oracle floor for labels (``simulator.oracle_bits``) is 1.67.

Why: a teacher's mistakes are consistent per class (a husky is called a wolf, not a teapot), so when a
label is not its block's usual label, *which* label it is depends on that usual label. context-rc falls
back to a recency list and an order-0 model there; this model keeps, for every mode, the labels seen in
its place, and tries those first.

State, beyond context-rc's (decayed block counts and their ``mode``, the 8 latest distinct labels, the
previous outcome):

- a gap of 256 or more (bucket >= 9) empties the block counts instead of quartering them: the next
  label starts a new block, so after it the mode is that label;
- a *confusion list* per mode: up to 16 labels seen in place of that mode, with counts (``+2`` each, all
  halved when their total passes 256), most counted first, ties in order of arrival; a new label
  replaces the last one when the list is full. It is updated after every item whose label differs from
  the mode, except after a gap of 256 or more (that label more likely starts a new block).

Label, in order (the previous outcome is 0 (mode), 1 (the first candidate tried), 2 (anything else);
"far" is gap bucket >= 9):

1. one bit "label == mode", exactly as context-rc (gap bucket up to 8, the mode's share of the counts
   in 0..9, previous outcome);
2. otherwise the first 4 labels of the mode's confusion list, one bit "is it this one?" each, in context
   (rank, the label's share of the list's total in 0..5, its position in the recency list without the
   mode, 7 for "at 7 or absent", previous outcome, far);
3. otherwise the recency list without the mode and without the labels just tried, in unary, in context
   (position up to 7, previous outcome, far, whether any confusion label was tried); the list running out
   means "none of these";
4. otherwise the label itself, as in context-rc (an adaptive order-0 binary tree).

Every item decodes in a bounded number of steps (at most 1 + 4 + 8 bits and the label's bits; lists of
bounded length), so context-rc's work bound (the body length caps k) carries over unchanged.
"""

from __future__ import annotations

import numpy as np

from plada_core.codecs import context_rc
from plada_core.codecs.context_rc import min_body_length
from plada_core.codecs.rangecoder import new_table

__all__ = ["Model", "decode_body", "encode_body", "min_body_length"]

_OUTCOMES = 3
_RECENT = 8
_FAR_BUCKET = 9  # gaps >= 2**8: the same threshold context-rc forgets at
_CONF_TRIED = 4
_CONF_SLOTS = 16
_CONF_LIMIT = 256
_SHARES = 6


class _Confusions:
    """Labels seen in place of one mode, most counted first (ties: the earlier arrival first)."""

    __slots__ = ("counts", "labels", "total")

    def __init__(self) -> None:
        self.labels: list[int] = []
        self.counts: list[int] = []
        self.total = 0

    def add(self, label: int) -> None:
        labels, counts = self.labels, self.counts
        if label in labels:
            i = labels.index(label)
            counts[i] += 2
        elif len(labels) < _CONF_SLOTS:
            labels.append(label)
            counts.append(2)
            i = len(labels) - 1
        else:  # full: the least counted (last) label makes room
            i = _CONF_SLOTS - 1
            labels[i], counts[i] = label, 2
        while i and counts[i - 1] < counts[i]:
            labels[i - 1], labels[i] = labels[i], labels[i - 1]
            counts[i - 1], counts[i] = counts[i], counts[i - 1]
            i -= 1
        self.total += 2
        if self.total > _CONF_LIMIT:
            halved = [count >> 1 for count in counts]
            kept = len(halved) - halved.count(0)  # sorted, so the zeros are the tail
            self.counts, self.labels = halved[:kept], labels[:kept]
            self.total = sum(self.counts)


class Model(context_rc.Model):
    """context-rc's model with confusion lists in the label model (format in the module docstring)."""

    forget_shift = 8  # block counts never exceed 34, so this empties them

    def __init__(self, n_reference: int, n_classes: int) -> None:
        super().__init__(n_reference, n_classes)
        self.confusions: dict[int, _Confusions] = {}
        self.confusion_table = new_table(_CONF_TRIED * _SHARES * _RECENT * _OUTCOMES * 2)
        self.rest_table = new_table(_RECENT * _OUTCOMES * 2 * 2)

    def not_mode(self, coder, label: int, bucket: int) -> int:
        far = int(bucket >= _FAR_BUCKET)
        others = [other for other in self.recent if other != self.mode]
        tried: list[int] = []
        confusions = self.confusions.get(self.mode)
        if confusions is not None:
            total = confusions.total + 1
            for rank, (candidate, count) in enumerate(zip(confusions.labels[:_CONF_TRIED], confusions.counts)):
                share = min(count * _SHARES // total, _SHARES - 1)
                place = min(others.index(candidate), _RECENT - 1) if candidate in others else _RECENT - 1
                context = (((rank * _SHARES + share) * _RECENT + place) * _OUTCOMES + self.outcome) * 2 + far
                if coder.bit(self.confusion_table, context, label == candidate):
                    self.outcome = 1 if rank == 0 else 2
                    return candidate
                tried.append(candidate)
        base = bool(tried) + 2 * far
        position = 0
        for candidate in others:
            if candidate in tried:
                continue
            context = (min(position, _RECENT - 1) * _OUTCOMES + self.outcome) * 4 + base
            if coder.bit(self.rest_table, context, label == candidate):
                self.outcome = 1 if position == 0 and not tried else 2
                return candidate
            position += 1
        self.outcome = 2
        return self._explicit(coder, label)

    def update(self, bucket: int, label: int) -> None:
        if 0 <= self.mode != label and bucket < _FAR_BUCKET:
            confusions = self.confusions.get(self.mode)
            if confusions is None:
                confusions = self.confusions[self.mode] = _Confusions()
            confusions.add(label)
        super().update(bucket, label)


def encode_body(indices: np.ndarray, labels: np.ndarray, *, n_reference: int, n_classes: int) -> bytes:
    """The body for sorted, validated ``indices`` and their ``labels``."""
    return context_rc.encode_items(Model(n_reference, n_classes), indices, labels)


def decode_body(body: bytes, *, k: int, n_reference: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels from an untrusted body; raises :class:`CorruptBody` naming the problem."""
    return context_rc.decode_items(Model, body, k=k, n_reference=n_reference, n_classes=n_classes)
