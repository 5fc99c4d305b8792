"""``fashion-mnist`` from Debian's IDX files: the official split, and a clear error where the package is absent."""

from __future__ import annotations

import numpy as np
import pytest

from plada_core.io.sources import fashion_mnist, open_source

HAS_FASHION = (fashion_mnist.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(not HAS_FASHION, reason="Fashion-MNIST absent: apt-get install -y dataset-fashion-mnist")
def test_fashion_mnist_official_split():
    test = open_source("fashion-mnist:test")
    images, labels = test.load_arrays()
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10
    assert test.class_names[0] == "T-shirt/top" and len(open_source("fashion-mnist:train")) == 60000

def test_fashion_mnist_absent_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        open_source("fashion-mnist:train")
