"""Shared fixtures: offline Prefect settings and tiny real-data npz files (sklearn digits)."""

from __future__ import annotations

import os

# Before anything imports prefect: no telemetry on offline machines, generous startup on slow CI.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PLADA_TORCH_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI must not fail on an example nobody has seen before: property tests run a fixed, derandomized set of
# examples by default. `HYPOTHESIS_PROFILE=explore` searches afresh (do that when changing codecs/selectors).
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> dict[str, str]:
    """Target train/test and a 300-image pool (digits + inverted-noise distractors) as ``npz:`` specs."""
    root = tmp_path_factory.mktemp("npz")
    images, labels = _digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, test, pool_digits = order[:200], order[200:400], order[400:600]
    distractors = rng.integers(0, 256, size=(100, 8, 8), dtype=np.uint8)
    pool_images = np.concatenate([images[pool_digits], distractors])
    pool_labels = np.concatenate([labels[pool_digits], np.full(100, 10)])
    specs = {}
    for name, (x, y) in {
        "train": (images[train], labels[train]),
        "test": (images[test], labels[test]),
        "pool": (pool_images, pool_labels),
    }.items():
        path = root / f"{name}.npz"
        np.savez(path, images=x, labels=y)
        specs[name] = f"npz:{path}"
    return specs


# --- S3 for tests: moto's real S3 HTTP server on loopback, reached only through the standard AWS variables ---

import contextlib  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402

S3_TEST_BUCKET = "plada-test"


class MotoS3:
    """moto's S3 server on 127.0.0.1; ``outage()`` stops it for a while on the same port (moto keeps the data)."""

    def __init__(self) -> None:
        self.port = 0  # 0: let the OS pick a free port on the first start, then keep it across restarts
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @contextlib.contextmanager
    def outage(self, seconds: float):
        """Stop the server now and start it again ``seconds`` later, in the background; waits for it on exit."""
        self.stop()
        restart = threading.Timer(seconds, self.start)
        restart.start()
        try:
            yield
        finally:
            restart.join()


def _forget_s3_clients() -> None:
    # fsspec caches one S3FileSystem per process, with the endpoint and keys read when it was created.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server with bucket ``plada-test``, for the whole session; PLADA finds it through the environment.

    Sets dummy AWS keys, ``AWS_DEFAULT_REGION`` (not ``region_name`` in client_kwargs, which breaks bucket
    creation) and ``AWS_ENDPOINT_URL``, and hides any real AWS profile or config, so no test can reach real S3.
    Child processes (Dask workers, ``plada`` CLI runs) inherit the variables and reach the same server.
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server, isolated = MotoS3(), tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        try:
            server.start()
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
                         "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
                mp.delenv(name, raising=False)
            mp.setenv("AWS_CONFIG_FILE", str(isolated / "config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated / "credentials"))
            mp.setenv("AWS_ACCESS_KEY_ID", "plada-test-key")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "plada-test-secret")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
            _forget_s3_clients()
            import s3fs

            s3fs.S3FileSystem(skip_instance_cache=True).mkdir(S3_TEST_BUCKET)
            yield server
        finally:
            server.stop()
            _forget_s3_clients()


@pytest.fixture
def s3_root(s3_server, request) -> str:
    """A fresh ``s3://plada-test/<test>-<random>`` prefix, so tests never see each other's objects."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:60]
    return f"s3://{S3_TEST_BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["file", "s3"])
def storage_root(request, tmp_path) -> str:
    """The same test body on a local ``file://`` root and on an ``s3://`` root (moto starts only when needed)."""
    if request.param == "s3":
        return request.getfixturevalue("s3_root")
    return tmp_path.as_uri()


@pytest.fixture(autouse=True)
def _restore_subnormals():
    """Training and scoring turn on flush-to-zero for speed (``configure_torch``); that process-wide CPU flag
    makes hypothesis refuse to draw floats in every later test. Restore IEEE behaviour after each test."""
    yield
    import torch

    torch.set_flush_denormal(False)
