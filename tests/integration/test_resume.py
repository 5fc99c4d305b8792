"""Kill a publish run mid-flow (SIGKILL, a real process), re-run it: only unfinished shards are scored again,
and the manifest equals that of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plada_core.io import pool, tables
from plada_core.io.sources import open_source

pytestmark = pytest.mark.integration
PLADA = Path(sys.executable).parent / "plada"


def _publish_cmd(tiny_npz, ref: Path, out: Path) -> list[str]:
    # resnet18 at 32 px on one thread scores ~100 images/s: slow enough to stop part way.
    return [str(PLADA), "publish", "--reference-url", str(ref), "--target-train", tiny_npz["train"],
            "--target-test", tiny_npz["test"], "--out", str(out), "--teacher-model", "resnet18",
            "--teacher-epochs", "1", "--image-size", "32", "--workers", "1", "--keep", "0.2"]


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PLADA_TORCH_THREADS": "1"}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}


def test_killed_run_resumes_only_unfinished_shards(tiny_npz, tmp_path):
    ref = tmp_path / "pool"
    pool.build_reference([open_source(tiny_npz["pool"])], str(ref), shard_size=25, progress=False)  # 12 shards
    n_shards = len(pool.read_reference(str(ref))["shards"])
    out, env = tmp_path / "resumed", _env(tmp_path)
    scores = out / "scores"

    proc = subprocess.Popen(_publish_cmd(tiny_npz, ref, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_mtimes(scores)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _mtimes(scores)
    assert 2 <= len(finished) < n_shards, f"kill landed outside the scoring stage ({len(finished)} shards done)"
    assert not (out / "manifest.parquet").exists()

    subprocess.run(_publish_cmd(tiny_npz, ref, out), env=env, check=True, capture_output=True, timeout=600)
    after = _mtimes(scores)
    assert len(after) == n_shards
    assert {name: after[name] for name in finished} == finished, "finished shards were scored again"

    clean = tmp_path / "uninterrupted"
    subprocess.run(_publish_cmd(tiny_npz, ref, clean), env=env, check=True, capture_output=True, timeout=600)
    resumed_manifest = tables.read_table(str(out / "manifest.parquet"))
    clean_manifest = tables.read_table(str(clean / "manifest.parquet"))
    assert resumed_manifest.select(["index", "label"]).equals(clean_manifest.select(["index", "label"]))
    assert (out / "payload.plada").read_bytes() == (clean / "payload.plada").read_bytes()
