"""Imports go one way: flows → tasks → plada_core; plada_core never imports Prefect; only plada_core/io touches storage."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STORAGE_MODULES = {"fsspec", "s3fs", "webdataset", "boto3", "botocore"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _files("plada_core"), ids=str)
def test_core_never_imports_prefect_or_upper_layers(path):
    assert not _imports(path) & {"prefect", "prefect_dask", "tasks", "flows"}


@pytest.mark.parametrize(
    "path", [p for p in _files("plada_core") if "io" not in p.relative_to(ROOT / "plada_core").parts], ids=str
)
def test_only_core_io_touches_storage(path):
    assert not _imports(path) & STORAGE_MODULES


@pytest.mark.parametrize("path", _files("tasks"), ids=str)
def test_tasks_never_import_flows(path):
    assert "flows" not in _imports(path)
