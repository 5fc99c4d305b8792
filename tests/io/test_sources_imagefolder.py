"""``imagefolder:PATH`` sources: classes from sub-folders, unreadable files counted, other formats re-encoded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from source_checks import jpeg, keys_ok

from plada_core.images import decode_image
from plada_core.io.sources import open_source


def test_imagefolder_counts_unreadable_files(tmp_path):
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    (tmp_path / "zebra").mkdir()
    (tmp_path / "ant").mkdir()
    Image.fromarray(gray).save(tmp_path / "ant" / "b.png")
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "ant" / "a.bmp")
    (tmp_path / "zebra" / "z.jpg").write_bytes(jpeg(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)))
    (tmp_path / "zebra" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "zebra" / "notes.txt").write_text("not an image, ignored")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file"):
        source = open_source(f"imagefolder:{tmp_path}")
    assert source.class_names == ["ant", "zebra"] and len(source) == 3
    assert [p.name for p, _ in source.unreadable] == ["broken.jpg"]
    samples = keys_ok(source)
    assert [(s.ext, s.label) for s in samples] == [("png", 0), ("png", 0), ("jpg", 1)]  # a.bmp re-encoded as PNG
    assert np.array_equal(decode_image(samples[1].data), gray)
    images, labels = source.load_arrays()
    assert isinstance(images, list) and images[2].shape == (4, 4, 3) and labels.tolist() == [0, 0, 1]

def test_images_in_sub_folders_of_a_class_belong_to_it(tmp_path):
    """torchvision's layout: class/<any sub-folders>/image; hidden files and folders are not images."""
    rng = np.random.default_rng(3)
    for rel in ("cat/2020/b.png", "cat/a.png", "dog/x/y/c.png", "dog/.ipynb_checkpoints/d.png", "dog/.e.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / rel)
    source = open_source(f"imagefolder:{tmp_path}")
    assert source.class_names == ["cat", "dog"] and [(p.name, c) for p, c in source.items] == [
        ("b.png", 0), ("a.png", 0), ("c.png", 1)]  # fmt: skip


def test_imagefolder_without_class_folders(tmp_path):
    with pytest.raises(ValueError, match="has no class sub-folders"):
        open_source(f"imagefolder:{tmp_path}")


def test_first_images_are_the_first_decoded_in_canonical_order(tmp_path):
    from plada_core.io.sources import first_images

    rng = np.random.default_rng(4)
    for rel, shape in (("ant/a.png", (5, 6, 3)), ("ant/b.png", (7, 7)), ("bee/c.png", (3, 4, 3))):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / rel)
    assert [img.shape for img in first_images(f"imagefolder:{tmp_path}", 2)] == [(5, 6, 3), (7, 7)]
    assert len(list(first_images(f"imagefolder:{tmp_path}", 10))) == 3


def test_iter_images_streams_what_load_arrays_holds(tmp_path):
    rng = np.random.default_rng(5)
    for rel, shape in (("ant/a.png", (5, 6, 3)), ("bee/b.png", (7, 7)), ("bee/c.png", (3, 4, 3))):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / rel)
    source = open_source(f"imagefolder:{tmp_path}")
    streamed, (held, labels) = list(source.iter_images()), source.load_arrays()
    assert [a.tolist() for a in streamed] == [a.tolist() for a in held] and labels.tolist() == [0, 1, 1]
    (tmp_path / "bee" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken since it was opened")
    with pytest.raises(ValueError, match=r"imagefolder:.*: image .*-00000002: undecodable image"):
        list(source.iter_images())
