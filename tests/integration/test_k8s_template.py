"""The GPU base job template renders GPU requests, node selector and tolerations from job variables."""

import json
from pathlib import Path

from prefect.utilities.templating import apply_values

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "kubernetes" / "gpu-base-job-template.json"


def _render(job_variables: dict) -> dict:
    """What a worker does: variable defaults, overridden by the deployment's job_variables, applied to the template."""
    template = json.loads(TEMPLATE.read_text())
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    return apply_values(template["job_configuration"], {**defaults, **job_variables})


def _container(config: dict) -> dict:
    return config["job_manifest"]["spec"]["template"]["spec"]["containers"][0]


def test_gpu_variables_reach_the_pod():
    config = _render(
        {
            "gpu_limit": 2,
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "image": "registry/plada:cuda",
            "memory_limit": "64Gi",
        }
    )
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    assert _container(config)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert _container(config)["resources"]["limits"]["memory"] == "64Gi"
    assert _container(config)["image"] == "registry/plada:cuda"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_unset_variables_are_dropped_not_rendered_as_placeholders():
    config = _render({})
    assert "{{" not in json.dumps(config["job_manifest"])
    assert "cpu" not in _container(config)["resources"]["limits"]  # cpu_limit unset → key removed
    assert _container(config)["resources"]["limits"]["nvidia.com/gpu"] == 1
