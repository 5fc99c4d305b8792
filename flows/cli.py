"""``plada`` command line: build pools, publish, train students, run everything, run the demos.

Every command runs the same Prefect flows a deployment runs; without ``PREFECT_API_URL`` Prefect starts a
temporary local server by itself, so nothing has to be started by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

# Offline machines: Prefect's telemetry would only log connection errors.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from plada_core.config import StudentConfig, TeacherConfig  # noqa: E402
from plada_core.devices import check_device  # noqa: E402
from plada_core.images import PreprocessConfig  # noqa: E402
from plada_core.payload import AUTO, CODECS  # noqa: E402
from plada_core.scoring import ScoringConfig  # noqa: E402
from plada_core.selection import SELECTORS, SelectionConfig  # noqa: E402
from plada_core.training import TrainConfig  # noqa: E402

__all__ = ["main"]

PAIRS = {
    # Target sklearn digits (8x8 optdigits); pool of MNIST digits among animal silhouettes (and clothes).
    "default": {
        "target_train": "sklearn-digits:train",
        "target_test": "sklearn-digits:test",
        "references": ["mnist5k", "animal-mnist"],
        "optional_references": ["fashion-mnist"],
        "preprocess": PreprocessConfig(image_size=8, channels=1, crop="content"),
        "teacher_model": "plada_cnn",
        "student_model": "plada_cnn",
        "teacher_epochs": 30,
        "student_epochs": 30,
        "keep": 0.1,
    },
    # CIFAR-10 target, Tiny-ImageNet pool at 32 px: the paper's ImageNet setting in miniature.
    "natural": {
        "target_train": "cifar10:train",
        "target_test": "cifar10:test",
        "references": ["tiny-imagenet"],
        "optional_references": [],
        "preprocess": PreprocessConfig(image_size=32, channels=3, crop="none"),
        "teacher_model": "plada_effnet_lite0",
        "student_model": "plada_effnet_lite0",
        "teacher_epochs": 30,
        "student_epochs": 30,
        "keep": 0.1,
    },
}


def parse_keep(text: str) -> float | int:
    """'0.1' → fraction 0.1; '500' → absolute count 500; '1.0' → everything."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep must be a fraction in (0, 1] or a count >= 1, got {text!r}") from None
    if value > 1 or ("." not in text and value == 1):
        if value != int(value):
            raise argparse.ArgumentTypeError(f"--keep above 1 must be a whole count, got {text!r}")
        return int(value)
    return value


def _add_model_args(p: argparse.ArgumentParser, prefix: str, model: str, epochs: int) -> None:
    p.add_argument(f"--{prefix}-model", default=model, help=f"timm model name (default {model})")
    p.add_argument(f"--{prefix}-epochs", type=int, default=epochs)
    p.add_argument(f"--{prefix}-lr", type=float, default=3e-3)
    p.add_argument(f"--{prefix}-batch-size", type=int, default=64)


def _add_preprocess_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, default=16, help="side of the square model input (default 16)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 = grayscale, 3 = RGB")
    p.add_argument(
        "--crop",
        choices=("none", "content"),
        default="none",
        help="'content' crops to the object's bounding box first (dark-background data)",
    )


def parse_device(text: str) -> str:
    """'auto', 'cpu', 'cuda', 'cuda:1', … (checked here, so a typo fails before any work starts)."""
    try:
        check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        type=parse_device,
        default="auto",
        help="where models train and score: auto (a GPU when this machine has one), cpu, cuda, cuda:1, …",
    )


def _add_runner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", choices=("threads", "dask"), default="threads", help="where shard scoring runs")
    p.add_argument("--workers", type=int, default=2, help="scoring threads or local Dask worker processes")
    p.add_argument("--dask-address", default=None, help="tcp://host:8786 of an existing Dask cluster")


def _runner(args):
    from flows.runners import RunnerSpec

    # Scoring tasks run side by side: give each its share of the cores (Dask workers inherit the env).
    os.environ.setdefault("PLADA_SCORING_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    return RunnerSpec(kind=args.runner, workers=args.workers, address=args.dask_address)


def _add_selection_args(p: argparse.ArgumentParser, keep: float = 0.1) -> None:
    p.add_argument("--keep", type=parse_keep, default=keep, help="fraction (0.05) or count (500) of the pool")
    p.add_argument(
        "--selector",
        default="energy",
        help=" | ".join(SELECTORS),
    )
    p.add_argument("--no-safety-net", dest="safety_net", action="store_false", help="turn the per-class quota off")
    p.add_argument("--alpha", type=float, default=0.5, help="Safety-Net exponent: K_c ∝ N_c^alpha")
    p.add_argument("--temperature", type=float, default=1.0, help="energy temperature T")
    p.add_argument("--max-drop-rate", type=float, default=0.01, help="fail above this fraction of unscorable images")
    p.add_argument("--codec", default="paper-zstd19", choices=[*CODECS, AUTO],
                   help="payload body codec; auto: the smallest payload of all")
    p.add_argument(
        "--max-payload-bytes",
        type=int,
        default=None,
        help="budget mode: keep the largest selection whose payload fits (replaces --keep)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plada", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ref = sub.add_parser("reference", help="reference pool commands").add_subparsers(dest="ref_command", required=True)
    build = ref.add_parser("build", help="turn image sources into webdataset shards + index.parquet + reference.json")
    build.add_argument(
        "--source", action="append", required=True, help="source spec (repeatable), e.g. mnist5k, npz:PATH"
    )
    build.add_argument("--out", required=True, help="output URL (path, file://, s3://)")
    build.add_argument("--shard-size", type=int, default=4096)

    run = sub.add_parser("run", help="build pool, publish, train student and random baseline, write report")
    run.add_argument("--reference", action="append", required=True, help="reference source spec (repeatable)")
    run.add_argument("--target-train", required=True)
    run.add_argument("--target-test", required=True)
    run.add_argument("--out", required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--shard-size", type=int, default=4096)
    run.add_argument("--teacher-checkpoint", default=None, help="load this checkpoint instead of training")
    _add_selection_args(run)
    _add_runner_args(run)
    _add_preprocess_args(run)
    _add_model_args(run, "teacher", "plada_cnn", 30)
    _add_model_args(run, "student", "plada_cnn", 30)
    _add_device_arg(run)

    pub = sub.add_parser("publish", help="teacher → scores → selection → manifest + payload for an existing pool")
    pub.add_argument("--reference-url", required=True, help="URL of a pool made by `plada reference build`")
    pub.add_argument("--target-train", required=True)
    pub.add_argument("--target-test", required=True)
    pub.add_argument("--out", required=True)
    pub.add_argument("--seed", type=int, default=0)
    pub.add_argument("--teacher-checkpoint", default=None)
    _add_selection_args(pub)
    _add_runner_args(pub)
    _add_preprocess_args(pub)
    _add_model_args(pub, "teacher", "plada_cnn", 30)
    _add_device_arg(pub)

    stu = sub.add_parser("train-student", help="client side: payload + local pool + target test split → metrics")
    stu.add_argument("--payload", required=True, help="payload.plada URL")
    stu.add_argument("--reference-url", required=True, help="the local reference pool")
    stu.add_argument("--target-test", required=True)
    stu.add_argument("--out", required=True)
    stu.add_argument("--seed", type=int, default=0)
    _add_preprocess_args(stu)
    _add_model_args(stu, "student", "plada_cnn", 30)
    _add_device_arg(stu)

    payload = sub.add_parser("payload", help="payload commands").add_subparsers(dest="payload_command", required=True)
    inspect = payload.add_parser(
        "inspect", help="header, size and codec of a payload; with --reference-url, decode it against that pool"
    )
    inspect.add_argument("payload", help="payload.plada URL")
    inspect.add_argument(
        "--reference-url", default=None, help="decode against this local pool (fingerprint, size and layout checked)"
    )

    demo = sub.add_parser("demo", help="run everything on a built-in real-data pair")
    demo.add_argument("--pair", choices=sorted(PAIRS), default="default")
    demo.add_argument("--out", required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--keep", type=parse_keep, default=None)

    bench = sub.add_parser("bench", help="selection benchmark: selectors × keeps × seeds (benchmarks/selection.py)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="e.g. --quick, or --pairs A --keeps 0.01 0.1")
    return parser


def _train_cfg(args, prefix: str) -> TrainConfig:
    get = lambda name: getattr(args, f"{prefix}_{name}")  # noqa: E731
    return TrainConfig(
        model=get("model"),
        epochs=get("epochs"),
        lr=get("lr"),
        batch_size=get("batch_size"),
        seed=args.seed,
        device=args.device,
    )


def _preprocess_cfg(args) -> PreprocessConfig:
    return PreprocessConfig(image_size=args.image_size, channels=args.channels, crop=args.crop)


def _selection_cfg(args) -> SelectionConfig:
    return SelectionConfig(
        selector=args.selector, keep=args.keep, safety_net=args.safety_net, alpha=args.alpha, seed=args.seed
    )


def _teacher_cfg(args) -> TeacherConfig:
    return TeacherConfig(
        train=_train_cfg(args, "teacher"), preprocess=_preprocess_cfg(args), checkpoint=args.teacher_checkpoint
    )


def _scoring_cfg(args) -> ScoringConfig:
    return ScoringConfig(temperature=args.temperature, max_drop_rate=args.max_drop_rate, device=args.device)


def _cmd_reference_build(args) -> dict:
    from plada_core.io import pool
    from plada_core.io.sources import open_source

    return pool.build_reference([open_source(s) for s in args.source], args.out, shard_size=args.shard_size)


def _cmd_run(args) -> dict:
    from flows.run import plada_run

    student = StudentConfig(train=_train_cfg(args, "student"), preprocess=_preprocess_cfg(args))
    return plada_run(
        args.reference,
        args.target_train,
        args.target_test,
        args.out,
        _teacher_cfg(args),
        _scoring_cfg(args),
        _selection_cfg(args),
        student,
        args.shard_size,
        _runner(args),
        args.codec,
        args.max_payload_bytes,
    )


def _cmd_publish(args) -> dict:
    from flows.publish import publish
    from flows.runners import make_task_runner

    out = publish.with_options(task_runner=make_task_runner(_runner(args)))(
        args.reference_url,
        args.target_train,
        args.target_test,
        args.out,
        _teacher_cfg(args),
        _scoring_cfg(args),
        _selection_cfg(args),
        args.codec,
        args.max_payload_bytes,
    )
    return {k: v for k, v in out.items() if k != "score_urls"}


def _cmd_train_student(args) -> dict:
    from flows.train_student import train_student

    student = StudentConfig(train=_train_cfg(args, "student"), preprocess=_preprocess_cfg(args))
    return train_student(args.payload, args.reference_url, args.target_test, args.out, student)


def _cmd_payload_inspect(args) -> dict:
    from plada_core.io import pool, storage
    from plada_core.payload import read_header

    data = storage.read_bytes(args.payload)
    header = read_header(data)
    result = {**header, "payload_bytes": len(data), "bits_per_image": round(8 * len(data) / max(header["k"], 1), 3)}
    if args.reference_url is not None:
        decoded = pool.decode_for_pool(data, args.reference_url)
        per_class = [int(c) for c in np.bincount(decoded.labels, minlength=decoded.n_classes)]
        result.update(decoded=True, classes_present=sum(c > 0 for c in per_class),
                      images_per_class={"min": min(per_class), "max": max(per_class)})
    return result


def _available(spec: str) -> bool:
    from plada_core.io.sources import open_source

    try:
        open_source(spec)
        return True
    except (FileNotFoundError, ImportError, ValueError) as exc:
        print(f"note: optional reference source {spec!r} is not available ({exc}); continuing without it")
        return False


def _cmd_demo(args) -> dict:
    from flows.run import plada_run

    pair = PAIRS[args.pair]
    references = pair["references"] + [s for s in pair["optional_references"] if _available(s)]
    preprocess = pair["preprocess"]
    teacher = TeacherConfig(
        train=TrainConfig(model=pair["teacher_model"], epochs=pair["teacher_epochs"], seed=args.seed),
        preprocess=preprocess,
    )
    student = StudentConfig(
        train=TrainConfig(model=pair["student_model"], epochs=pair["student_epochs"], seed=args.seed),
        preprocess=preprocess,
    )
    selection = SelectionConfig(keep=args.keep if args.keep is not None else pair["keep"], seed=args.seed)
    os.environ.setdefault("PLADA_SCORING_THREADS", str(max(1, (os.cpu_count() or 1) // 2)))
    return plada_run(
        references, pair["target_train"], pair["target_test"], args.out, teacher, ScoringConfig(), selection, student
    )


def _cmd_bench(args) -> dict:
    import importlib.util
    from pathlib import Path

    # benchmarks/ is a folder of scripts, not a package: load the harness from its file.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "selection.py"
    spec = importlib.util.spec_from_file_location("plada_bench_selection", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {"exit_code": module.main(args.bench_args)}


COMMANDS = {
    "run": _cmd_run,
    "publish": _cmd_publish,
    "train-student": _cmd_train_student,
    "demo": _cmd_demo,
    "bench": _cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    nested = {"reference": _cmd_reference_build, "payload": _cmd_payload_inspect}
    command = nested.get(args.command) or COMMANDS[args.command]
    try:
        result = command(args)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"plada {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_headline(result), indent=2, default=str))
    return 0


def _headline(result: dict) -> dict:
    """Drop bulky fields (histograms, shard lists) from what is printed; the files keep everything."""
    return {k: v for k, v in result.items() if k not in ("shards", "class_histogram", "sources")}


if __name__ == "__main__":
    sys.exit(main())
