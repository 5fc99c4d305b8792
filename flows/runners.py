"""Where mapped tasks run: threads in this process (default) or a Dask cluster (local or existing)."""

from __future__ import annotations

from typing import Literal

from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TaskRunnerOptions"]


class TaskRunnerOptions(BaseModel):
    """``threads``: a thread pool of ``workers`` (the model is loaded once per process and shared).
    ``dask``: prefect-dask's DaskTaskRunner; ``dask_address`` joins an existing cluster (scheduler and workers
    must be able to import this package: ship one image), otherwise a LocalCluster of ``workers``
    processes with ``threads_per_worker`` threads each is started for the run.

    A mixin of the request models (``flows/params.py``): its fields are request fields and ``plada`` flags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runner: Literal["threads", "dask"] = Field("threads", description="Where shard scoring runs.")
    workers: int = Field(2, ge=1, le=1024, description="Scoring threads, or local Dask worker processes.")
    threads_per_worker: int = Field(1, ge=1, le=256, description="Threads per local Dask worker process.")
    dask_address: str | None = Field(None, min_length=1, description="tcp://host:8786 of an existing Dask cluster.")

    def task_runner(self):
        """The Prefect task runner these options describe."""
        if self.runner == "threads":
            return ThreadPoolTaskRunner(max_workers=self.workers)
        from prefect_dask import DaskTaskRunner  # optional dependency: only needed for Dask runs

        if self.dask_address:
            return DaskTaskRunner(address=self.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": self.workers,
                "threads_per_worker": self.threads_per_worker,
                "processes": True,
                "dashboard_address": None,
            }
        )
