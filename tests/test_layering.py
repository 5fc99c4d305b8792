"""Imports go one way: flows → tasks → plada_core; plada_core never imports Prefect; only plada_core/io touches
storage; io leans on no algorithm; a task leans on no other task."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STORAGE_MODULES = {"fsspec", "s3fs", "webdataset", "boto3", "botocore"}
# What plada_core/io may import from the rest of plada_core: pure helpers on bytes, no algorithm and no storage.
# - plada_core.images: decode_image / encode_png / IMAGE_MAGIC (sources encode arrays and check files, the shard
#   reader checks magic bytes) and preprocess (the client's payload stream feeds a model); pure functions of pixels.
# - plada_core.payload: pool.decode_for_pool checks a payload against the pool it names (fingerprint, size, layout);
#   the payload format is pure bytes-in, arrays-out, and the pool's own files are what it is checked against.
# - plada_core.prefetch: a thread that runs an iterator a few items ahead (the shard stream's reader without workers).
IO_MAY_IMPORT = {"plada_core.images", "plada_core.payload", "plada_core.prefetch"}
TASKS_MAY_IMPORT = {"tasks.common"}  # shared task plumbing; a helper two tasks need goes there or into plada_core


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, dotted in full (``from a import b`` gives ``a.b`` when ``a`` is a package of
    this repository, else ``a``), relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if (ROOT / base.replace(".", "/") / "__init__.py").is_file():
                out |= {f"{base}.{a.name}" for a in node.names}  # submodules or names of the package: either way
            else:
                out.add(base)
    return out


def _within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


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


@pytest.mark.parametrize("path", _files("plada_core/io"), ids=str)
def test_io_imports_only_io_and_named_pure_helpers(path):
    foreign = {m for m in _modules(path) if _within(m, {"plada_core"}) and not _within(m, {"plada_core.io"})}
    assert {m for m in foreign if not _within(m, IO_MAY_IMPORT)} == set(), (
        "plada_core/io is the storage layer: move the logic to plada_core and pass its results in, or add a pure "
        "helper to IO_MAY_IMPORT with the reason"
    )


@pytest.mark.parametrize("path", _files("tasks"), ids=str)
def test_tasks_never_import_flows(path):
    assert "flows" not in _imports(path)


@pytest.mark.parametrize("path", _files("tasks"), ids=str)
def test_a_task_imports_no_other_task(path):
    others = {m for m in _modules(path) if _within(m, {"tasks"}) and not _within(m, TASKS_MAY_IMPORT)}
    assert others == set(), "a helper two tasks share belongs in tasks/common.py or plada_core"
