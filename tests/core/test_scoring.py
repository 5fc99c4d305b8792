import io

import numpy as np
import pytest
import torch
from PIL import Image

from plada_core.images import PreprocessConfig
from plada_core.scoring import ScoringConfig, score_logits, score_stream


def test_score_logits_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    s = score_logits(logits, temperature=1.0)
    lse0 = np.log(np.exp(2) + 2)
    assert s["energy"] == pytest.approx([-lse0, -(1 + np.log(3))], rel=1e-6)
    p0 = np.array([np.exp(2), 1, 1]) / (np.exp(2) + 2)
    assert s["max_softmax"] == pytest.approx([p0[0], 1 / 3], rel=1e-6)
    assert s["entropy"] == pytest.approx([-(p0 * np.log(p0)).sum(), np.log(3)], rel=1e-6)
    assert s["margin"] == pytest.approx([p0[0] - p0[1], 0.0], abs=1e-6)
    assert s["pred"].tolist() == [0, 0]


def test_temperature_scales_energy():
    logits = torch.tensor([[3.0, 1.0]])
    t = 2.0
    expected = -t * np.log(np.exp(3 / t) + np.exp(1 / t))
    assert score_logits(logits, temperature=t)["energy"][0] == pytest.approx(expected, rel=1e-6)


class _Sum(torch.nn.Module):
    """Logits = (sum of pixels, 0): a model whose scores can be computed by hand."""

    def forward(self, x):
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), value, np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(data)))
    except Exception as exc:
        raise ValueError(str(exc)) from exc


def test_score_stream_on_a_tiny_shard_by_hand_and_counts_bad_images():
    samples = [(10, _png(255)), (11, b"not an image"), (12, _png(0))]
    out = score_stream(
        _Sum(), samples, _decode, PreprocessConfig(image_size=4, channels=1), ScoringConfig(batch_size=2)
    )
    assert out.n_seen == 3 and out.n_dropped == 1 and out.dropped[0]["index"] == 11
    assert out.frame["index"].tolist() == [10, 12]
    # image of 1.0s: logits (16, 0) → energy = -logsumexp = -(16 + log(1 + e^-16)); zeros: -log 2
    assert out.frame["energy"].tolist() == pytest.approx([-(16 + np.log1p(np.exp(-16))), -np.log(2)], rel=1e-6)
    assert out.frame["pred"].tolist() == [0, 0]


def test_prefetch_gives_the_same_scores_and_propagates_errors():
    samples = [(i, _png(i * 7 % 256)) for i in range(50)] + [(99, b"junk")]
    pre = PreprocessConfig(image_size=4, channels=1)
    with_thread = score_stream(_Sum(), samples, _decode, pre, ScoringConfig(batch_size=8, prefetch=True))
    inline = score_stream(_Sum(), samples, _decode, pre, ScoringConfig(batch_size=8, prefetch=False))
    assert with_thread.frame.equals(inline.frame)
    assert [d["index"] for d in with_thread.dropped] == [d["index"] for d in inline.dropped] == [99]
    assert with_thread.n_seen == 51

    def broken():
        yield 0, _png(1)
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        score_stream(_Sum(), broken(), _decode, pre, ScoringConfig(batch_size=1))


def test_device_auto_picks_cuda_only_when_present_and_prefetch_follows_the_device():
    assert ScoringConfig().torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ScoringConfig(device="cpu").torch_device() == torch.device("cpu")
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU
    assert not ScoringConfig().prefetches(cpu) and ScoringConfig().prefetches(gpu)
    assert ScoringConfig(prefetch=True).prefetches(cpu) and not ScoringConfig(prefetch=False).prefetches(gpu)
    with pytest.raises(ValueError, match="device"):
        ScoringConfig(device="gpu")


def test_the_background_thread_runs_exactly_when_prefetch_is_on(monkeypatch):
    from plada_core import scoring

    calls = []
    real = scoring.prefetch
    monkeypatch.setattr(scoring, "prefetch", lambda it: calls.append(1) or real(it))
    samples = [(i, _png(i)) for i in range(5)]
    pre = PreprocessConfig(image_size=4, channels=1)
    auto = score_stream(_Sum(), samples, _decode, pre, ScoringConfig(batch_size=2, device="cpu"))
    assert calls == []  # CPU: inline, the cores belong to torch
    threaded = score_stream(_Sum(), samples, _decode, pre, ScoringConfig(batch_size=2, device="cpu", prefetch=True))
    assert calls == [1] and threaded.frame.equals(auto.frame)
