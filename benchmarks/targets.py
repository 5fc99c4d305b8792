"""Target-split benchmark: what does reading a split of photos cost the publisher, streamed against held whole?

``python -m benchmarks.targets [--quick] [--work DIR]`` prints progress, then one JSON object as its last line:

- ``streamed``: ``tasks.common.load_split`` as every publish runs it (decode, preprocess and let go, one image at a
  time); ``held``: the same split decoded whole first (``Source.load_arrays``, what the publisher did before), then
  preprocessed (``plada_core.datasets.labelled_tensors``). Each runs in a fresh process, read with ``os.wait4``:
  ``peak_rss_mb`` and ``wall_s`` per path, and ``rss_ratio`` / ``wall_ratio`` (held over streamed) side by side from
  the same run. ``decoded_mb``: what the split weighs decoded, which the held path holds at once.

The split is real: ``n`` CIFAR-10 test images spread evenly over the file (``$PLADA_DATA_DIR``; all ten classes),
resized up to ``size`` (W x H) and saved as JPEG files, one folder per class (``imagefolder:``), as a folder of
photos arrives. Both paths read the same files into the same model input (32 px RGB, the natural model's). ``--quick``: 200 images at 256 x 192, from
sklearn's digits when CIFAR-10 is not there. Default run: about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.processes import run_measured

ROOT = Path(__file__).resolve().parents[1]  # the measured process imports the repository's packages
SETTINGS = {"default": dict(n=3000, size=(512, 384)), "quick": dict(n=200, size=(256, 192))}
INPUT = dict(image_size=32, channels=3)


def _log(message: str) -> None:
    print(f"[targets bench] {message}", file=sys.stderr, flush=True)


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> str:
    """``imagefolder:`` spec of ``n`` real images resized to ``size`` as JPEG files (kept when already there)."""
    import numpy as np
    from PIL import Image

    from plada_core.images import decode_image
    from plada_core.io.sources import open_source

    spec = f"imagefolder:{folder}"
    if folder.is_dir():
        return spec
    try:
        source = open_source("cifar10:test")
    except (FileNotFoundError, ImportError, ValueError):
        source = open_source("sklearn-digits")
    wanted = set(np.linspace(0, len(source) - 1, n).round().astype(int).tolist())  # spread: stored class by class
    tmp = folder.with_name(folder.name + ".part")
    for i, sample in enumerate(s for j, s in enumerate(source.iter_encoded()) if j in wanted):
        image = Image.fromarray(np.atleast_3d(decode_image(sample.data))[..., :3].squeeze()).convert("RGB")
        path = tmp / f"class{sample.label}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        image.resize(size, Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue())
    tmp.rename(folder)
    return spec


def _child(mode: str, spec: str) -> None:
    """Runs in the measured process: one way of reading ``spec`` into model input."""
    import time

    from plada_core.datasets import labelled_tensors
    from plada_core.images import PreprocessConfig
    from plada_core.io.sources import open_source
    from tasks.common import load_split

    cfg = PreprocessConfig(**INPUT)
    start = time.perf_counter()
    if mode == "streamed":
        x, _, _ = load_split(spec, cfg)
        decoded = None
    else:
        images, labels = open_source(spec).load_arrays()
        decoded = sum(image.nbytes for image in images) / 2**20
        x, _ = labelled_tensors(images, labels, cfg)
    print(json.dumps({"wall_s": time.perf_counter() - start, "n": len(x), "decoded_mb": decoded}))


def measure(mode: str, spec: str) -> dict:
    """``_child``'s result and the peak RSS (MiB) of its fresh process."""
    cmd = [sys.executable, "-m", "benchmarks.targets", "--child", mode, spec]
    output, peak_mb = run_measured(cmd, ROOT, f"{mode} read")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_mb": peak_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 small photos (the test suite's run)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the photos (default: a temporary one)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    s = SETTINGS["quick" if args.quick else "default"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        spec = write_photos(work / f"photos-{s['n']}-{s['size'][0]}x{s['size'][1]}", s["n"], s["size"])
        _log(f"{s['n']} photos at {s['size'][0]}x{s['size'][1]} in {spec}")
        result = {"n": s["n"], "size": list(s["size"]), "input": INPUT}
        for mode in ("streamed", "held"):
            result[mode] = measure(mode, spec)
            _log(f"{mode}: peak RSS {result[mode]['peak_rss_mb']:.0f} MiB, {result[mode]['wall_s']:.1f} s")
    held, streamed = result["held"], result["streamed"]
    result["decoded_mb"] = round(held.pop("decoded_mb"), 1)
    streamed.pop("decoded_mb")
    result["rss_ratio"] = round(held["peak_rss_mb"] / streamed["peak_rss_mb"], 2)
    result["wall_ratio"] = round(held["wall_s"] / streamed["wall_s"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
