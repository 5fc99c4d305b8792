"""Scoring benchmark: pipeline throughput vs its ceiling (local and S3), peak memory vs pool size, Dask speed-up.

    .venv/bin/python benchmarks/scoring.py [--n 10000] [--skip-dask] [--skip-rss]

Everything is measured side by side in this one run, on the same shards and the same model (a randomly
initialised ``plada_cnn_wide`` at 32 px RGB on CIFAR-10 JPEGs; weights do not change the work):

- pipeline: ``score_shard`` as the flow runs it (read shard → untar → decode → preprocess → forward → write
  scores Parquet), shard after shard, from local files and from moto's S3 server (its own process) on 127.0.0.1;
- ceiling: the irreducible work with no pipeline at all: decode + preprocess + forward of the same images
  from encoded bytes already in memory, same batch size, same torch threads;
- the ratios pipeline / ceiling as the median over interleaved rounds of each round's own ratio (plus the list);
- forward-only and decode-only images/s, and where the rest of the pipeline's time goes;
- peak RSS of a whole ``plada publish`` on a pool of N and of 4N images (in-process high-water mark);
- wall time of ``plada publish`` on a 2-worker local Dask cluster vs 1 worker, against a real Prefect server;
- the natural-image model (``plada_effnet_lite0_ml``, frozen): forward images/s at 32 and 64 px in
  ``channels_last`` (its default) and in plain contiguous memory, interleaved rounds, with the largest feature
  difference between the two (``--natural-only`` runs just this part).

Prints tables, then one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from plada_core.classifier import checkpoint_meta  # noqa: E402
from plada_core.images import PreprocessConfig, decode_image, preprocess  # noqa: E402
from plada_core.io import checkpoints, pool  # noqa: E402
from plada_core.io.sources import open_source, resolve_data_dir  # noqa: E402
from plada_core.models import create_model  # noqa: E402
from plada_core.scoring import ScoringConfig, score_logits  # noqa: E402
from plada_core.training import configure_torch  # noqa: E402

PRE = PreprocessConfig(image_size=32, channels=3)
BATCH = 256
BIN = Path(sys.executable).parent


def _subset_parquet(n: int, path: Path) -> str:
    """The first ``n`` CIFAR-10 train images as a ``parquet:`` source (JPEG bytes as stored)."""
    table = pq.read_table(resolve_data_dir() / "cifar10" / "train.parquet").slice(0, n)
    pq.write_table(table, path)
    return f"parquet:{path}"


def _teacher(path: Path) -> str:
    torch.manual_seed(0)
    model = create_model("plada_cnn_wide", num_classes=10, in_chans=3)
    meta = checkpoint_meta("plada_cnn_wide", 10, PRE, [str(i) for i in range(10)])
    return checkpoints.save_checkpoint(model, meta, str(path))


def _pipeline_rate(ref_url: str, teacher_url: str, out_url: str) -> float:
    from tasks.score import score_shard

    shards = pool.list_shards(ref_url)
    start = time.perf_counter()
    for shard in shards:
        score_shard.fn(shard["url"], shard["n"], teacher_url, out_url, ScoringConfig())
    return sum(s["n"] for s in shards) / (time.perf_counter() - start)


@torch.no_grad()
def _ceiling(encoded: list[bytes], model) -> dict[str, float]:
    """images/s of decode+preprocess+forward from memory, and of each part alone."""
    t0 = time.perf_counter()
    arrays = np.stack([preprocess(decode_image(b), PRE) for b in encoded])
    decode_s = time.perf_counter() - t0
    x = torch.from_numpy(arrays)
    t0 = time.perf_counter()
    for i in range(0, len(x), BATCH):
        score_logits(model(x[i : i + BATCH]))
    forward_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(encoded), BATCH):
        batch = np.stack([preprocess(decode_image(b), PRE) for b in encoded[i : i + BATCH]])
        score_logits(model(torch.from_numpy(batch)))
    ceiling_s = time.perf_counter() - t0
    n = len(encoded)
    return {"decode_only": n / decode_s, "forward_only": n / forward_s, "ceiling": n / ceiling_s,
            "decode_s": decode_s, "forward_s": forward_s, "ceiling_s": ceiling_s}


def _start_moto() -> subprocess.Popen:
    """moto's S3 server in its own process (as a real endpoint would be: not sharing this process's GIL)."""
    import urllib.request

    from tests.integration.conftest import _free_port

    host, port = "127.0.0.1", _free_port()
    server = subprocess.Popen([BIN / "moto_server", "-H", host, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://{host}:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint})
    import s3fs

    s3fs.S3FileSystem().mkdir("bench")
    return server


def _publish_cmd(ref: str, out: Path, teacher: str, *extra: str) -> list[str]:
    return [str(BIN / "plada"), "publish", "--reference-url", ref, "--target-train", "cifar10:test",
            "--target-test", "cifar10:test", "--out", str(out), "--teacher-checkpoint", teacher,
            "--teacher-model", "plada_cnn_wide", "--image-size", "32", "--channels", "3", *extra]


_RSS_SCRIPT = """
import resource, sys, json
from flows.cli import main
code = main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def _publish_peak_rss_mb(ref: str, out: Path, teacher: str) -> float:
    cmd = [sys.executable, "-c", _RSS_SCRIPT, *_publish_cmd(ref, out, teacher)[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("PEAK_RSS_KB")][-1]
    return int(line.split()[1]) / 1024


def _dask_walls(ref: str, work: Path, teacher: str) -> dict[str, float]:
    from tests.integration.conftest import _free_port, _wait_healthy, stop

    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_UI_ENABLED": "false"}
    server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    walls = {}
    try:
        _wait_healthy(env["PREFECT_API_URL"], server)
        for workers in (1, 2):
            cmd = _publish_cmd(ref, work / f"dask-{workers}", teacher, "--runner", "dask", "--workers", str(workers))
            start = time.perf_counter()
            subprocess.run(cmd, env={**env, "PLADA_SCORING_THREADS": "1"}, check=True, capture_output=True, timeout=1800)
            walls[workers] = time.perf_counter() - start
    finally:
        stop(server)
    return walls


def _natural_rates(images: torch.Tensor, rounds: int) -> dict[str, float]:
    """Forward images/s of the natural-image model in both memory formats (best of interleaved rounds) and the
    largest absolute difference between their features."""
    model = create_model("plada_effnet_lite0_ml", num_classes=10, in_chans=3).eval()
    best = {"channels_last": 0.0, "contiguous": 0.0}
    feats = {}
    for _ in range(rounds):
        for name, fmt in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
            model.set_memory_format(fmt)
            start = time.perf_counter()
            feats[name] = torch.cat([model.forward_features(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
            best[name] = max(best[name], len(images) / (time.perf_counter() - start))
    side = images.shape[-1]
    return {f"natural_{side}px_channels_last_img_s": round(best["channels_last"], 1),
            f"natural_{side}px_contiguous_img_s": round(best["contiguous"], 1),
            f"natural_{side}px_speedup": round(best["channels_last"] / best["contiguous"], 3),
            f"natural_{side}px_max_abs_diff": float((feats["channels_last"] - feats["contiguous"]).abs().max())}


def _natural(n: int, rounds: int, work: Path) -> dict[str, float]:
    spec = _subset_parquet(n, work / "natural.parquet")
    raw = [decode_image(s.data) for s in open_source(spec).iter_encoded()]
    out = {}
    for side in (32, 64):
        pre = PreprocessConfig(image_size=side, channels=3)
        out.update(_natural_rates(torch.from_numpy(np.stack([preprocess(im, pre) for im in raw])), rounds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="images in the throughput pool (and N for RSS)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--natural-n", type=int, default=2000, help="images for the natural model's images/s")
    parser.add_argument("--natural-only", action="store_true", help="only the natural model's memory formats")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    configure_torch(threads)
    os.environ["PLADA_TORCH_THREADS"] = str(threads)
    work = Path(tempfile.mkdtemp(prefix="plada-bench-"))
    result: dict[str, float | None] = {"n_images": args.n, "torch_threads": threads}
    try:
        result.update(_natural(args.natural_n, args.rounds, work))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if args.natural_only:
        shutil.rmtree(work, ignore_errors=True)
        for key, value in result.items():
            print(f"{key:32s} {value}")
        print(json.dumps(result))
        return
    try:
        spec = _subset_parquet(args.n, work / "pool.parquet")
        teacher = _teacher(work / "teacher.pt")
        local = str(work / "pool")
        pool.build_reference([open_source(spec)], local, shard_size=args.shard_size, progress=False)
        encoded = [s.data for s in open_source(spec).iter_encoded()]
        model = create_model("plada_cnn_wide", num_classes=10, in_chans=3).eval()
        model.load_state_dict(checkpoints.load_checkpoint(teacher)[0])

        moto = _start_moto()
        try:
            s3 = "s3://bench/pool"
            pool.build_reference([open_source(spec)], s3, shard_size=args.shard_size, progress=False)
            # Interleaved rounds (img/s figures: best of each round): this shared machine's speed drifts by tens of percent between
            # minutes, and interleaving keeps every ratio's numerator and denominator in the same minutes.
            rounds = []
            for r in range(args.rounds):
                rates = _ceiling(encoded, model)
                rates["pipeline_local"] = _pipeline_rate(local, teacher, str(work / f"run-{r}"))
                rates["pipeline_s3"] = _pipeline_rate(s3, teacher, f"s3://bench/run-{r}")
                rounds.append(rates)
        finally:
            moto.terminate()
            moto.wait(timeout=30)
            for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
                os.environ.pop(key, None)
        rates = {k: max(r[k] for r in rounds) for k in rounds[0] if not k.endswith("_s")}
        rates.update({k: min(r[k] for r in rounds) for k in rounds[0] if k.endswith("_s")})
        result.update({f"{k}_img_s": round(v, 1) for k, v in rates.items() if not k.endswith("_s")})
        # The ratios are the median of per-round ratios: a pipeline run and the ceiling run just before it share
        # the machine's speed of that minute, whereas the best ceiling of one round over the best pipeline of
        # another mixes minutes (one fast ceiling round once put the ceiling above the bare forward's rate).
        for where in ("local", "s3"):
            per_round = [r[f"pipeline_{where}"] / r["ceiling"] for r in rounds]
            result[f"pipeline_over_forward_{where}"] = round(float(np.median(per_round)), 3)
            result[f"pipeline_over_forward_{where}_rounds"] = [round(v, 3) for v in per_round]
        per_img_ms = {k: 1000 / rates[k] for k in ("pipeline_local", "pipeline_s3", "ceiling")}
        result["ms_per_image"] = {k: round(v, 3) for k, v in per_img_ms.items()}
        result["ms_per_image"]["decode_preprocess"] = round(1000 * rates["decode_s"] / args.n, 3)
        result["ms_per_image"]["forward"] = round(1000 * rates["forward_s"] / args.n, 3)
        result["ms_per_image"]["pipeline_overhead_local"] = round(per_img_ms["pipeline_local"] - per_img_ms["ceiling"], 3)
        result["ms_per_image"]["pipeline_overhead_s3"] = round(per_img_ms["pipeline_s3"] - per_img_ms["ceiling"], 3)

        if not args.skip_rss:
            big = _subset_parquet(4 * args.n, work / "pool4.parquet")
            pool.build_reference([open_source(big)], str(work / "pool4"), shard_size=args.shard_size, progress=False)
            rss_n = _publish_peak_rss_mb(local, work / "pub-n", teacher)
            rss_4n = _publish_peak_rss_mb(str(work / "pool4"), work / "pub-4n", teacher)
            result.update({"rss_mb_n": round(rss_n, 1), "rss_mb_4n": round(rss_4n, 1),
                           "rss_ratio_4n": round(rss_4n / rss_n, 3)})
        if not args.skip_dask:
            walls = _dask_walls(local, work, teacher)
            result.update({"dask_wall_s_1_worker": round(walls[1], 2), "dask_wall_s_2_workers": round(walls[2], 2),
                           "dask_speedup_2_workers": round(walls[1] / walls[2], 3)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for key, value in result.items():
        print(f"{key:32s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
