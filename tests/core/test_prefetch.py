"""prefetch: order, error propagation, early stop, bounds."""

import threading
import time

import pytest

from plada_core.prefetch import prefetch


def test_yields_every_item_in_order():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch(iter([]))) == []


def test_an_error_of_the_producer_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("shard vanished")

    got = []
    with pytest.raises(OSError, match="shard vanished"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]


def test_the_producer_runs_ahead_at_most_depth_items_and_stops_when_the_consumer_does():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=2, name="test-prefetch")
    assert next(stream) == 0
    time.sleep(0.3)
    # one item consumed, ``depth`` waiting in the queue, one held by the producer waiting to put it
    assert len(produced) <= 1 + 2 + 1
    stream.close()
    assert not any(t.name == "test-prefetch" for t in threading.enumerate())
    assert len(produced) <= 5


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(prefetch(iter([1]), depth=0))
