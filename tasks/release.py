"""Release bookkeeping: mark a version complete, move ``latest``, tell the world (a Prefect event)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from plada_core.io import releases

RELEASE_EVENT = "plada.release.published"


@task(cache_policy=NO_CACHE)
def finish_release(root_url: str, task_name: str, version: str, record: dict) -> dict:
    """Write RELEASE.json, then move ``latest`` to it; returns the promoted record."""
    releases.write_release(root_url, task_name, version, record)
    return releases.promote(root_url, task_name, version)


@task(cache_policy=NO_CACHE)
def announce_release(record: dict) -> None:
    """Emit ``plada.release.published``; the train-student deployment's trigger listens for it."""
    emit_event(
        event=RELEASE_EVENT,
        resource={
            "prefect.resource.id": f"plada.task.{record['task']}.{record['version']}",
            "prefect.resource.name": f"{record['task']}/{record['version']}",
        },
        payload={
            k: record[k]
            for k in (
                "task",
                "version",
                "url",
                "payload_url",
                "random_payload_url",
                "reference_url",
                "target_test",
                "publish_flow_run_id",
            )
        },
    )
