"""Where mapped tasks run: threads in this process (default) or a Dask cluster (local or existing)."""

from __future__ import annotations

from typing import Literal

from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunnerSpec", "make_task_runner"]


class RunnerSpec(BaseModel):
    """``threads``: a thread pool of ``workers`` (the model is loaded once per process and shared).
    ``dask``: prefect-dask's DaskTaskRunner; ``address`` joins an existing cluster (scheduler and workers
    must be able to import this package: ship one image), otherwise a LocalCluster of ``workers``
    processes with ``threads_per_worker`` threads each is started for the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["threads", "dask"] = Field("threads", description="Task runner for the scoring fan-out.")
    workers: int = Field(2, ge=1, le=1024, description="Threads, or local Dask worker processes.")
    threads_per_worker: int = Field(1, ge=1, le=256, description="Dask threads per worker process.")
    address: str | None = Field(None, description="tcp://scheduler:8786 of an existing Dask cluster.")


def make_task_runner(spec: RunnerSpec):
    if spec.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=spec.workers)
    from prefect_dask import DaskTaskRunner  # optional dependency: only needed for Dask runs

    if spec.address:
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": spec.workers,
            "threads_per_worker": spec.threads_per_worker,
            "processes": True,
            "dashboard_address": None,
        }
    )
