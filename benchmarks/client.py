"""Client benchmark: does the student's training data stream in bounded memory, and at what cost in speed?

``python -m benchmarks.client [--quick] [--work DIR]`` prints progress, then one JSON object as its last line:

- ``rss_ratio_4k``: peak RSS of the student's training (``tasks.student.train_student``, the body of ``plada
  train-student``, run in a fresh process per measurement and read with ``os.wait4``) with 4k selected images over
  the same with k, same pool, same epochs. The old path held every selected image as one float tensor, so its
  memory grew with k (``whole_tensor_mb`` shows what it would hold); a streaming client should stay near 1.
- ``client_over_ceiling``: student-training images/s through the streaming dataset (``PayloadStream`` → ``loader`` →
  train step), over the same decode + preprocess + train step fed from encoded bytes already in memory, same model,
  batch and torch threads. The two are timed batch by batch in turn within one epoch each (fetch + train step per
  batch), so load on a shared host, which comes and goes over seconds, falls on both alike; rounds of ``round_epochs``
  such epochs repeat ``rounds`` times and each value is the median of the per-round ratios. (Whole epochs of each side
  in turn spread ±0.2 in ratio per round on a shared 2-core host; batch pairs cut that several-fold.) The stream reads
  each shard whole in its first epoch and only the selected images' byte ranges after that; a warm-up epoch teaches it
  the ranges, so ``client_over_ceiling`` is the steady state of a multi-epoch student. ``whole_over_ceiling``: the
  same with ``ranged_reads=False`` (every epoch reads its shards whole: the first epoch's cost, and the client before
  ranged reads). ``thread_over_ceiling``: ranged, with the reader in a background thread (``prefetch_batches=2``, what
  a CUDA client uses); its thread would run on during the ceiling's batches, so it alternates with a ceiling epoch of
  its own instead, and spreads more. ``cpu_over_ceiling``: the ranged stream's ratio in process CPU seconds instead of
  wall seconds.

The pool is real (``mnist5k``; ``--quick``: ``sklearn-digits``), built as ``plada reference build`` builds it;
selections are random, labelled with the pool's source labels. Default run: about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.processes import run_measured

ROOT = Path(__file__).resolve().parents[1]  # the measured process imports the repository's packages
SETTINGS = {
    # pool, k (and 4k), RSS-run epochs and input; ratio: images per epoch, rounds, epochs per variant and round,
    # input, batch
    "default": dict(pool="mnist5k", k=1000, epochs=1, rss_size=64, rss_channels=3,
                    ratio_n=2000, rounds=9, round_epochs=2, size=16, channels=1, batch=128),
    "quick": dict(pool="sklearn-digits", k=100, epochs=1, rss_size=16, rss_channels=1,
                  ratio_n=300, rounds=2, round_epochs=1, size=8, channels=1, batch=64),
}


def _log(message: str) -> None:
    print(f"[client bench] {message}", file=sys.stderr, flush=True)


def build_pool(spec: str, work: Path) -> str:
    from plada_core.io import pool
    from plada_core.io.sources import open_source

    url = str(work / "pool")
    if not pool.reference_exists(url):
        pool.build_reference([open_source(spec)], url, shard_size=500, progress=False)
    return url


def write_payload(reference_url: str, k: int, path: Path, seed: int = 0) -> str:
    """A random selection of ``k`` pool images, labelled with their source labels (class names included)."""
    from plada_core.io import pool
    from plada_core.payload import encode_payload

    ref = pool.read_reference(reference_url)
    index = pool.read_index(reference_url, columns=["index", "source_label"])
    chosen = np.sort(np.random.default_rng(seed).choice(ref["n"], size=k, replace=False))
    labels = index.set_index("index").loc[chosen, "source_label"].to_numpy(np.int64)
    n_classes = int(index["source_label"].max()) + 1
    path.write_bytes(encode_payload(chosen, labels, n_reference=ref["n"], n_classes=n_classes,
                                    fingerprint=ref["fingerprint"], class_names=[str(c) for c in range(n_classes)]))
    return str(path)


# --- rss_ratio_4k ---------------------------------------------------------------------------------------------


def _child_train(args: list[str]) -> None:
    """Runs in the measured process: the student task body, as ``plada train-student`` runs it."""
    payload, reference_url, out, epochs, size, channels = args
    from plada_core.config import StudentConfig
    from plada_core.images import PreprocessConfig
    from plada_core.training import TrainConfig
    from tasks.student import train_student

    cfg = StudentConfig(train=TrainConfig(epochs=int(epochs), device="cpu"),
                        preprocess=PreprocessConfig(image_size=int(size), channels=int(channels)))
    metrics = train_student.fn(payload, reference_url, out, cfg)
    print(json.dumps({"n_train": metrics["n_train"]}))


def peak_rss_mb(payload: str, reference_url: str, out: Path, s: dict) -> float:
    """Peak RSS (MiB) of one fresh process training the student on ``payload``."""
    cmd = [sys.executable, "-m", "benchmarks.client", "--child-train", payload, reference_url, str(out),
           str(s["epochs"]), str(s["rss_size"]), str(s["rss_channels"])]  # fmt: skip
    return run_measured(cmd, ROOT, "student run")[1]


# --- client_over_ceiling --------------------------------------------------------------------------------------


def _train_step(model, opt, x, y) -> None:
    import torch

    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _epoch_streaming(stream, model, opt, batch: int, epoch: int,
                     prefetch_batches: int = 0) -> tuple[int, float, float]:  # fmt: skip
    start, cpu, seen = time.perf_counter(), time.process_time(), 0
    stream.set_epoch(epoch)
    for b in stream.loader(batch, num_workers=0, prefetch_batches=prefetch_batches):
        _train_step(model, opt, b.x, b.y)
        seen += len(b)
    return seen, time.perf_counter() - start, time.process_time() - cpu


def _in_memory_batches(encoded: list[bytes], labels: np.ndarray, pre, batch: int, epoch: int):
    """The ceiling's batches: decoded and preprocessed from bytes in memory as each is asked for."""
    import torch

    from plada_core.images import decode_image, preprocess

    order = np.random.default_rng(epoch).permutation(len(encoded))
    for lo in range(0, len(order), batch):
        part = order[lo : lo + batch]
        x = torch.from_numpy(np.stack([preprocess(decode_image(encoded[i]), pre) for i in part]))
        yield x, torch.as_tensor(labels[part], dtype=torch.long)


def _epoch_in_memory(encoded: list[bytes], labels: np.ndarray, pre, model, opt, batch: int,
                     epoch: int) -> tuple[int, float, float]:  # fmt: skip
    start, cpu, seen = time.perf_counter(), time.process_time(), 0
    for x, y in _in_memory_batches(encoded, labels, pre, batch, epoch):
        _train_step(model, opt, x, y)
        seen += len(y)
    return seen, time.perf_counter() - start, time.process_time() - cpu


def _epoch_paired(stream, encoded: list[bytes], labels: np.ndarray, pre, model, opt, batch: int,
                  epoch: int) -> dict[str, tuple[int, float, float]]:  # fmt: skip
    """One epoch of the stream and one of the ceiling, a batch of each in turn (fetch + train step timed per
    batch), so that load on a shared host, which comes and goes over seconds, falls on both sides alike. Returns
    (images, wall s, CPU s) per side."""
    stream.set_epoch(epoch)
    sources = {"streaming": ((b.x, b.y) for b in stream.loader(batch)),
               "in_memory": _in_memory_batches(encoded, labels, pre, batch, epoch)}
    if epoch % 2:  # who goes first alternates by epoch: the first of a pair may warm caches for the second
        sources = dict(reversed(sources.items()))
    totals = {name: [0, 0.0, 0.0] for name in sources}
    while sources:
        for name, source in list(sources.items()):
            wall, cpu = time.perf_counter(), time.process_time()
            item = next(source, None)
            if item is None:
                del sources[name]
                continue
            _train_step(model, opt, *item)
            t = totals[name]
            t[0], t[1], t[2] = t[0] + len(item[1]), t[1] + time.perf_counter() - wall, t[2] + time.process_time() - cpu
    return {name: tuple(t) for name, t in totals.items()}


def throughput_ratio(payload_path: str, reference_url: str, s: dict, threads: int) -> dict:
    import torch

    from plada_core.images import PreprocessConfig
    from plada_core.io import pool, storage
    from plada_core.io.payload_stream import PayloadStream
    from plada_core.models import create_model
    from plada_core.training import configure_torch

    configure_torch(threads)
    payload = pool.decode_for_pool(storage.read_bytes(payload_path), reference_url)
    pre = PreprocessConfig(image_size=s["size"], channels=s["channels"])
    stream = PayloadStream(reference_url, payload, pre, seed=0)
    whole = PayloadStream(reference_url, payload, pre, seed=0, ranged_reads=False)
    found, _ = pool.load_images(reference_url, payload.indices, progress=False)
    encoded = [found[int(i)] for i in payload.indices]
    torch.manual_seed(0)
    model = create_model("plada_cnn", num_classes=payload.n_classes, in_chans=s["channels"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    _epoch_in_memory(encoded[: s["batch"] * 2], payload.labels, pre, model, opt, s["batch"], 999)  # warm-up
    _epoch_streaming(stream, model, opt, s["batch"], 999)  # warm-up: the stream learns where the images lie
    # Ranged and whole-shard streams are timed batch-interleaved with the ceiling (_epoch_paired). The threaded
    # stream cannot be: its reader thread would run on during the ceiling's batches, so it and a ceiling epoch of
    # its own alternate by epoch, which a shared host's load swings move more.
    paired = {"streaming": stream, "streaming_whole": whole}
    rates = {name: [] for name in (*paired, "streaming_thread", "in_memory")}
    ratios = {name: [] for name in (*paired, "streaming_thread", "cpu")}
    for r in range(s["rounds"]):
        summed: dict[str, np.ndarray] = {}  # variant (and the ceiling it was timed against) → images, wall s, CPU s
        for e in range(r * s["round_epochs"], (r + 1) * s["round_epochs"]):
            totals = {}
            for name, source in paired.items():
                measured = _epoch_paired(source, encoded, payload.labels, pre, model, opt, s["batch"], e)
                totals[name], totals[f"{name}/in_memory"] = measured["streaming"], measured["in_memory"]
            totals["streaming_thread"] = _epoch_streaming(stream, model, opt, s["batch"], e, prefetch_batches=2)
            totals["streaming_thread/in_memory"] = _epoch_in_memory(encoded, payload.labels, pre, model, opt,
                                                                    s["batch"], e)  # fmt: skip
            for k, v in totals.items():
                summed[k] = summed.get(k, 0) + np.asarray(v)
        per_s = {k: n / wall for k, (n, wall, _) in summed.items()}
        for name in ratios.keys() - {"cpu"}:
            ratios[name].append(per_s[name] / per_s[f"{name}/in_memory"])
            rates[name].append(per_s[name])
        rates["in_memory"].append(per_s["streaming/in_memory"])
        (n_s, _, cpu_s), (n_m, _, cpu_m) = summed["streaming"], summed["streaming/in_memory"]
        ratios["cpu"].append((n_s / cpu_s) / (n_m / cpu_m))
        _log(f"round {r}: " + ", ".join(f"{name} {ratios[name][-1]:.3f}" for name in ratios) + " of the ceiling; "
             + ", ".join(f"{name} {rates[name][-1]:.0f}" for name in rates) + " img/s")

    def median(name: str) -> float:
        return round(statistics.median(ratios[name]), 3)

    return {"client_over_ceiling": median("streaming"), "ratios": [round(x, 3) for x in ratios["streaming"]],
            "whole_over_ceiling": median("streaming_whole"), "thread_over_ceiling": median("streaming_thread"),
            "cpu_over_ceiling": median("cpu"),
            "images_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()}}


def run(setting: str, work: Path, threads: int) -> dict:
    s = SETTINGS[setting]
    started = time.perf_counter()
    _log(f"building the {s['pool']} pool under {work}")
    reference_url = build_pool(s["pool"], work)
    small = write_payload(reference_url, s["k"], work / "k.plada")
    large = write_payload(reference_url, 4 * s["k"], work / "4k.plada", seed=1)
    rss = {}
    for name, payload in (("k", small), ("4k", large)):
        _log(f"student on {name} images in a fresh process")
        rss[name] = round(peak_rss_mb(payload, reference_url, work / f"student-{name}-{time.time_ns()}", s), 1)
    ratio_payload = write_payload(reference_url, s["ratio_n"], work / "ratio.plada", seed=2)
    _log(f"throughput: streaming vs in memory, {s['rounds']} interleaved rounds, {threads} torch threads")
    speed = throughput_ratio(ratio_payload, reference_url, s, threads)
    per_image_mb = s["rss_channels"] * s["rss_size"] ** 2 * 4 / 2**20
    return {
        "rss_ratio_4k": round(rss["4k"] / rss["k"], 3),
        "client_over_ceiling": speed["client_over_ceiling"],
        "thread_over_ceiling": speed["thread_over_ceiling"],
        "whole_over_ceiling": speed["whole_over_ceiling"],
        "cpu_over_ceiling": speed["cpu_over_ceiling"],
        "peak_rss_mb": rss,
        "whole_tensor_mb": {"k": round(s["k"] * per_image_mb, 1), "4k": round(4 * s["k"] * per_image_mb, 1)},
        "k": s["k"],
        "ratios": speed["ratios"],
        "images_per_s": speed["images_per_s"],
        "threads": threads,
        "setting": setting,
        "settings": s,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small pool and sizes: a smoke run for tests")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PLADA_TORCH_THREADS", os.cpu_count() or 1)),
                        help="torch threads for both sides of the throughput ratio")
    parser.add_argument("--child-train", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_train:
        _child_train(args.child_train)
        return 0
    setting = "quick" if args.quick else "default"
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        result = run(setting, Path(args.work), args.threads)
    else:
        with tempfile.TemporaryDirectory(prefix="plada-client-bench-") as tmp:
            result = run(setting, Path(tmp), args.threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
