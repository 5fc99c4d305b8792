"""Adaptive binary range coding in pure Python, fast enough for payloads of a few hundred thousand images.

The coder is LZMA's: 32-bit range, carries resolved with a cached byte, probabilities of a 0 bit in 16
bits that adapt after every bit. Callers keep their probabilities in *context tables* (plain lists made by
:func:`new_table`) and pick one entry per bit, which is all "context modelling" means here.

A table entry packs ``(p << 6) | n``: ``p`` is P(bit = 0) in units of 2**-16, ``n`` counts the bits seen so
far (capped). The update moves ``p`` towards the bit by ``1 / 2**_RATES[n]``: fast while a context is
new, then steadier, roughly a count-based estimate that settles into an exponential moving average.
Updates can never push ``p`` to 0 or 2**16 (the step rounds down to 0 first), and from 1/2 the schedule
cannot go below 63 / 2**16, so one bit costs at most ~10 bits and at least ~0.0014 bits.

Stream format: the encoder's bytes without LZMA's always-zero first byte. A decoder of a complete stream
reads exactly all its bytes (4 at the start, one per renormalisation), so :attr:`RangeDecoder.position`
tells the caller where the stream ended.
"""

from __future__ import annotations

import math

__all__ = ["MeteredEncoder", "RangeDecoder", "RangeEncoder", "StreamError", "new_table"]

_PROB_BITS = 16
_ONE = 1 << _PROB_BITS
_TOP = 1 << 24  # renormalise (shift a byte out) whenever the range falls below this
_RATES = (1, 2, 2, 3, 3, 3) + (4,) * 6 + (5,) * 20 + (6,)
_NEXT = tuple(min(n + 1, len(_RATES) - 1) for n in range(len(_RATES)))
_HALF = (_ONE // 2) << 6  # p = 1/2, no bits seen
_MAX_UNIFORM_BITS = 16  # range >> 16 still leaves >= 256 steps after renormalisation


class StreamError(ValueError):
    """The bytes are not a stream this coder wrote."""


def new_table(size: int) -> list[int]:
    """A context table of ``size`` fresh entries (P(0) = 1/2)."""
    return [_HALF] * size


class RangeEncoder:
    """Writes bits under adaptive probabilities; :meth:`finish` returns the stream."""

    __slots__ = ("_cache", "_low", "_out", "_pending", "_range")

    def __init__(self) -> None:
        self._low = 0
        self._range = 0xFFFFFFFF
        self._cache = 0
        self._pending = 1  # bytes waiting for a possible carry: the cache plus that many 0xFF
        self._out = bytearray()

    def _shift_low(self) -> None:
        low = self._low
        if low < 0xFF000000 or low >= 1 << 32:
            carry = low >> 32
            self._out.append((self._cache + carry) & 0xFF)
            self._out.extend(bytes([(0xFF + carry) & 0xFF]) * (self._pending - 1))
            self._pending = 0
            self._cache = (low >> 24) & 0xFF
        self._pending += 1
        self._low = (low & 0x00FFFFFF) << 8

    def bit(self, table: list[int], i: int, bit: int) -> int:
        """Code ``bit`` (0 or 1) with the probability in ``table[i]``, then adapt it; returns ``bit``."""
        state = table[i]
        p, n = state >> 6, state & 63
        bound = (self._range >> _PROB_BITS) * p
        if bit:
            self._low += bound
            self._range -= bound
            p -= p >> _RATES[n]
        else:
            self._range = bound
            p += (_ONE - p) >> _RATES[n]
        table[i] = (p << 6) | _NEXT[n]
        while self._range < _TOP:
            self._range <<= 8
            self._shift_low()
        return bit

    def uniform(self, n_bits: int, value: int) -> int:
        """Code ``value`` in ``[0, 2**n_bits)``, ``n_bits <= 16``, each value equally likely."""
        step = self._range >> n_bits
        self._low += step * value
        self._range = step
        while self._range < _TOP:
            self._range <<= 8
            self._shift_low()
        return value

    def finish(self) -> bytes:
        """The complete stream; the encoder is spent afterwards."""
        for _ in range(5):
            self._shift_low()
        # the interval starts inside [0, 2**32), so the first byte can never take a carry: always 0
        assert self._out[0] == 0
        return bytes(self._out[1:])


class MeteredEncoder(RangeEncoder):
    """An encoder that also sums ``bits``, the ideal code length (``-log2 p``) of everything it has coded.

    For analysis (which part of a model costs what); the stream it writes is the same as a plain encoder's.
    """

    __slots__ = ("bits",)

    def __init__(self) -> None:
        super().__init__()
        self.bits = 0.0

    def bit(self, table: list[int], i: int, bit: int) -> int:
        p_zero = (table[i] >> 6) / _ONE
        self.bits -= math.log2(1.0 - p_zero if bit else p_zero)
        return super().bit(table, i, bit)

    def uniform(self, n_bits: int, value: int) -> int:
        self.bits += n_bits
        return super().uniform(n_bits, value)


class RangeDecoder:
    """Reads back what :class:`RangeEncoder` wrote, given the same sequence of tables and indices.

    Reading past the end raises :class:`StreamError`; so does a value no encoder could have written.
    """

    __slots__ = ("_code", "_data", "_range", "position")

    def __init__(self, data: bytes) -> None:
        if len(data) < 4:
            raise StreamError(f"a range-coded stream has at least 4 bytes, got {len(data)}")
        self._data = data
        self.position = 4
        self._range = 0xFFFFFFFF
        self._code = int.from_bytes(data[:4], "big")
        if self._code >= self._range:  # the only state an encoder cannot produce at the start
            raise StreamError("the stream starts with ff ff ff ff, which no encoder writes")

    def _next_byte(self) -> int:
        try:
            byte = self._data[self.position]
        except IndexError:
            raise StreamError(f"the stream ends after {len(self._data)} bytes but decoding needs more") from None
        self.position += 1
        return byte

    def bit(self, table: list[int], i: int, _bit: int = 0) -> int:
        """The next bit, coded with ``table[i]``, which adapts exactly as the encoder's did."""
        state = table[i]
        p, n = state >> 6, state & 63
        bound = (self._range >> _PROB_BITS) * p
        if self._code < bound:
            self._range = bound
            p += (_ONE - p) >> _RATES[n]
            bit = 0
        else:
            self._code -= bound
            self._range -= bound
            p -= p >> _RATES[n]
            bit = 1
        table[i] = (p << 6) | _NEXT[n]
        while self._range < _TOP:
            self._range <<= 8
            self._code = (self._code << 8) | self._next_byte()
        return bit

    def uniform(self, n_bits: int, _value: int = 0) -> int:
        """The next value in ``[0, 2**n_bits)``."""
        step = self._range >> n_bits
        value = self._code // step
        if value >> n_bits:  # the code sits in the unused tail of the range: not an encoder's stream
            raise StreamError(f"a {n_bits}-bit uniform value decodes to {value}, out of range")
        self._code -= value * step
        self._range = step
        while self._range < _TOP:
            self._range <<= 8
            self._code = (self._code << 8) | self._next_byte()
        return value
