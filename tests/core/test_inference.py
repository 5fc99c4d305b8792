"""Prediction and export logic: top-k names, the checkpoint's own preprocessing, exports that predict alike."""

import io

import numpy as np
import pytest
import torch

from plada_core.classifier import checkpoint_meta, class_names_for
from plada_core.images import PreprocessConfig, preprocess_batch
from plada_core.inference import check_export, export_model, model_card, predict_top_k, top_k
from plada_core.models import create_model

PRE = PreprocessConfig(image_size=8, channels=1, crop="content")


def test_top_k_orders_by_probability_and_breaks_ties_by_label():
    probs = np.array([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])
    best = top_k(probs, ["a", "b", "c"], 2)
    assert [[t["class"] for t in row] for row in best] == [["b", "c"], ["a", "c"]]
    assert best[0][0] == {"class": "b", "label": 1, "p": 0.6}
    assert len(top_k(probs, ["a", "b", "c"], 10)[0]) == 3
    with pytest.raises(ValueError, match="k >= 1"):
        top_k(probs, ["a", "b", "c"], 0)
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        top_k(probs, ["a", "b"], 1)


def test_predict_uses_the_given_preprocessing():
    torch.manual_seed(0)
    model = create_model("plada_cnn", num_classes=4, in_chans=1).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (28, 20), dtype=np.uint8) for _ in range(5)]
    names = ["w", "x", "y", "z"]
    got = predict_top_k(model, PRE, images, names, k=4, batch_size=2)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(preprocess_batch(images, PRE))), 1).numpy()
    assert [row[0]["label"] for row in got] == probs.argmax(1).tolist()
    assert all(abs(sum(t["p"] for t in row) - 1) < 1e-4 for row in got)


def test_torchscript_export_equals_the_model_and_the_card_states_the_contract():
    torch.manual_seed(1)
    model = create_model("plada_cnn", num_classes=3, in_chans=1).eval()
    exported = torch.jit.load(io.BytesIO(export_model(model, PRE, "torchscript")))
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(exported(x), model(x), atol=1e-6)
    meta = checkpoint_meta("plada_cnn", 3, PRE, ["a", "b", "c"], task="t", payload_sha256="00")
    card = model_card(meta, {"torchscript": "student.torchscript.pt"})
    assert card["input"]["shape"] == ["N", 1, 8, 8] and card["output"]["shape"] == ["N", 3]
    assert card["preprocess"] == {"image_size": 8, "channels": 1, "crop": "content"}
    assert card["class_names"] == ["a", "b", "c"] and card["meta"]["task"] == "t"


@pytest.mark.parametrize(("name", "pre"), [
    ("plada_cnn", PRE),
    ("plada_effnet_lite0_ml", PreprocessConfig(image_size=32, channels=3, crop="none")),
])  # fmt: skip
def test_onnx_export_runs_in_onnxruntime_like_the_model_at_any_batch_size(name, pre):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(2)
    model = create_model(name, num_classes=5, in_chans=pre.channels).eval()
    session = ort.InferenceSession(export_model(model, pre, "onnx"))
    for n in (1, 6):
        x = torch.rand(n, pre.channels, pre.image_size, pre.image_size)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(["logits"], {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_unknown_or_unavailable_export_is_a_clear_error():
    with pytest.raises(ValueError, match="torchscript, onnx"):
        check_export("tflite")
    try:
        import onnx  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install onnx"):
            check_export("onnx")


def test_class_names_prefer_the_payload_then_a_fitting_list_then_generated():
    assert class_names_for(2, ("a", "b"), ["x", "y"]) == (["a", "b"], 0)
    assert class_names_for(2, None, ["x", "y"]) == (["x", "y"], 1)
    assert class_names_for(2, None, ["x", "y", "z"]) == (["class_0", "class_1"], None)
