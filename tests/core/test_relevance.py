"""Target bank and kNN relevance columns: by hand, round trip, and inside the scoring pass."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from plada_core.images import PreprocessConfig
from plada_core.models import PladaCNN
from plada_core.relevance import RELEVANCE_COLUMNS, TargetBank, build_bank, embed, knn_scores
from plada_core.scoring import SCORE_COLUMNS, ScoringConfig, score_stream


def _bank(k=2):
    emb = np.eye(3, dtype=np.float32)  # three orthogonal target images, labels 0, 1, 1
    logits = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], np.float32)
    return TargetBank(emb, np.array([0, 1, 1]), logits, k=k)


def test_knn_scores_by_hand():
    bank = _bank(k=2)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.3, 1.0]]), dim=1)
    energy = np.array([-10.0, 10.0], np.float32)
    out = knn_scores(q, np.array([1, 1]), energy, bank)
    # row 0: sims (0.707, 0.707, 0) -> top-2 mean 0.707, neighbours 0 and 1 -> one of two agrees with pred 1
    assert out["knn_sim"] == pytest.approx([np.sqrt(0.5), 1.3 / np.sqrt(1.09) / 2], rel=1e-6)
    assert out["knn_agree"].tolist() == [0.5, 1.0]
    assert out["knn_nn"][1] == 2
    # energies of the bank rows: -logsumexp -> all above -10 and below 10
    assert out["energy_cdf"].tolist() == [0.0, 1.0]
    assert list(out) == RELEVANCE_COLUMNS


def test_bank_energies_follow_the_temperature():
    bank = _bank()
    t = 2.0
    expected = -t * np.log(np.exp(3 / t) + 1)
    assert bank.energies(t)[2] == pytest.approx(expected, rel=1e-6)


def test_bank_round_trip_and_bad_bytes():
    bank = _bank()
    back = TargetBank.from_bytes(bank.to_bytes())
    np.testing.assert_allclose(back.embeddings, bank.embeddings, atol=1e-3)
    np.testing.assert_array_equal(back.labels, bank.labels)
    np.testing.assert_array_equal(back.logits, bank.logits)
    assert back.k == bank.k
    with pytest.raises(ValueError, match="not a PLADA target bank"):
        TargetBank.from_bytes(b"garbage")


def test_bank_validation_and_dim_mismatch():
    with pytest.raises(ValueError, match="rows differ"):
        TargetBank(np.eye(3, dtype=np.float32), np.zeros(2, np.int64), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="does not match the bank"):
        knn_scores(torch.ones(1, 4), np.zeros(1, int), np.zeros(1), _bank())


def test_build_bank_is_unit_norm_capped_and_seeded():
    torch.manual_seed(0)
    model = PladaCNN(num_classes=3).eval()
    x, y = torch.rand(50, 1, 8, 8), torch.arange(50) % 3
    bank = build_bank(model, x, y, k=5, max_size=20, seed=1)
    assert bank.embeddings.shape == (20, model.num_features) and bank.logits.shape == (20, 3)
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1, rtol=1e-5)
    again = build_bank(model, x, y, k=5, max_size=20, seed=1)
    np.testing.assert_array_equal(bank.embeddings, again.embeddings)
    assert build_bank(model, x[:3], y[:3], k=5).k == 3  # k capped by the bank size
    emb, logits = embed(model, x[:4])
    torch.testing.assert_close(logits, model(x[:4]))


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_score_stream_with_a_bank_adds_relevance_and_keeps_paper_columns():
    torch.manual_seed(0)
    model = PladaCNN(num_classes=4).eval()
    pre = PreprocessConfig(image_size=8, channels=1)
    bank = build_bank(model, torch.rand(30, 1, 8, 8), torch.arange(30) % 4)
    samples = [(i, _png(i)) for i in range(7)] + [(7, b"broken")]
    cfg = ScoringConfig(batch_size=3)
    plain = score_stream(model, samples, _decode, pre, cfg)
    rich = score_stream(model, samples, _decode, pre, cfg, bank=bank)
    assert list(plain.frame.columns) == SCORE_COLUMNS
    assert list(rich.frame.columns) == SCORE_COLUMNS + RELEVANCE_COLUMNS
    assert rich.n_dropped == 1 and len(rich.frame) == 7
    for column in SCORE_COLUMNS:
        np.testing.assert_allclose(rich.frame[column], plain.frame[column], rtol=1e-5, atol=1e-6)
    assert rich.frame["knn_sim"].between(-1, 1 + 1e-6).all()
    # An image that *is* a bank image has cosine 1 to its nearest neighbour.
    x = torch.from_numpy(np.stack([_decode(_png(0))]).astype(np.float32)[:, None] / 255)
    exact = build_bank(model, x, torch.tensor([0]), k=1)
    one = score_stream(model, samples[:1], _decode, pre, cfg, bank=exact)
    assert one.frame["knn_sim"].iloc[0] == pytest.approx(1.0, abs=1e-3)


def test_knn_scores_with_bank_embeddings_given_on_the_device_are_the_same():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bank = TargetBank(emb[:12], np.arange(12) % 3, rng.standard_normal((12, 3)).astype(np.float32), k=3)
    batch, pred, energy = torch.from_numpy(emb[12:]), np.arange(8) % 3, rng.standard_normal(8)
    plain = knn_scores(batch, pred, energy, bank)
    given = knn_scores(batch, pred, energy, bank, bank_embeddings=torch.from_numpy(bank.embeddings))
    assert plain.keys() == given.keys() and all(np.array_equal(plain[k], given[k]) for k in plain)


def test_score_stream_hashes_decoded_images_and_returns_pooled_features():
    from plada_core.leakage import hash_images
    from plada_core.scoring import HASH_COLUMNS

    torch.manual_seed(0)
    model = PladaCNN(num_classes=4).eval()
    pre = PreprocessConfig(image_size=8, channels=1)
    samples = [(i, _png(i)) for i in range(7)] + [(7, b"broken")]
    cfg = ScoringConfig(batch_size=3)
    plain = score_stream(model, samples, _decode, pre, cfg)
    rich = score_stream(model, samples, _decode, pre, cfg, hashes=True, features=True)
    assert list(rich.frame.columns) == SCORE_COLUMNS + HASH_COLUMNS and rich.n_dropped == 1
    for column in SCORE_COLUMNS:
        np.testing.assert_allclose(rich.frame[column], plain.frame[column], rtol=1e-5, atol=1e-6)
    expected = hash_images(np.stack([_decode(_png(i)) for i in range(7)]))
    assert rich.frame["exact_hash"].tolist() == expected.exact.tolist()
    np.testing.assert_array_equal(rich.frame["phash"].to_numpy(np.uint64), expected.perceptual)
    assert rich.features.dtype == np.float16 and rich.features.shape == (7, model.num_features)
    x = torch.from_numpy(np.stack([_decode(_png(i)) for i in range(7)]).astype(np.float32)[:, None] / 255)
    np.testing.assert_allclose(rich.features, model.forward_features(x).detach().numpy(), rtol=1e-2, atol=1e-2)
    assert plain.features is None
    empty = score_stream(model, [], _decode, pre, cfg, hashes=True)
    assert list(empty.frame.columns) == SCORE_COLUMNS + HASH_COLUMNS and len(empty.frame) == 0
