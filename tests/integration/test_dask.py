"""The publish flow on a 2-worker local Dask cluster, against a real Prefect server, equals the
single-process (one thread) result exactly: same score files, same manifest, same payload bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plada_core.io import pool, tables
from plada_core.io.sources import open_source

pytestmark = pytest.mark.integration
PLADA = Path(sys.executable).parent / "plada"


def _publish(prefect_api, tiny_npz, ref: Path, out: Path, *runner: str) -> None:
    cmd = [str(PLADA), "publish", "--reference-url", str(ref), "--target-train", tiny_npz["train"],
           "--target-test", tiny_npz["test"], "--out", str(out), "--teacher-epochs", "3", "--image-size", "8",
           "--keep", "0.2", *runner]
    env = {**prefect_api, "PLADA_TORCH_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_dask_two_workers_equals_single_process(prefect_api, tiny_npz, tmp_path):
    ref = tmp_path / "pool"
    pool.build_reference([open_source(tiny_npz["pool"])], str(ref), shard_size=50, progress=False)
    _publish(prefect_api, tiny_npz, ref, tmp_path / "single", "--runner", "threads", "--workers", "1")
    _publish(prefect_api, tiny_npz, ref, tmp_path / "dask", "--runner", "dask", "--workers", "2")
    single, dask = sorted((tmp_path / "single" / "scores").glob("*.parquet")), sorted(
        (tmp_path / "dask" / "scores").glob("*.parquet"))
    assert [p.name for p in single] == [p.name for p in dask] and len(single) == 6
    for a, b in zip(single, dask):
        assert tables.read_frame(str(a)).equals(tables.read_frame(str(b))), a.name
    assert (tmp_path / "single" / "payload.plada").read_bytes() == (tmp_path / "dask" / "payload.plada").read_bytes()
    m1 = tables.read_table(str(tmp_path / "single" / "manifest.parquet"))
    m2 = tables.read_table(str(tmp_path / "dask" / "manifest.parquet"))
    assert m1.drop(["energy", "max_softmax", "entropy"]).equals(m2.drop(["energy", "max_softmax", "entropy"]))
    assert m1.column("energy").equals(m2.column("energy"))
