"""``plada`` command line: build pools, publish, train students, run everything, run the demos.

Every command runs the same Prefect flows a deployment runs; without ``PREFECT_API_URL`` Prefect starts a
temporary local server by itself, so nothing has to be started by hand. The options of the flow commands are
generated from the request models in ``flows/params.py`` (``add_request_options``): a field's type, default,
choices and help are its flag's, and a value the model refuses is an error naming the flag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from dataclasses import is_dataclass

import numpy as np

# Offline machines: Prefect's telemetry would only log connection errors.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pydantic import BaseModel, ValidationError  # noqa: E402

from flows import catalog_cli  # noqa: E402
from flows.client_cli import (  # noqa: E402
    add_payload_export,
    add_predict,
    cmd_payload_export,
    cmd_predict,
    release_line,
)
from flows.params import PublishRequest, ReferenceRequest, RunRequest, StudentRequest  # noqa: E402
from plada_core.pairs import DEMO_PAIRS  # noqa: E402

__all__ = ["add_request_options", "main", "parse_keep", "request_from_args"]


def parse_keep(text: str) -> float | int:
    """'0.1' → fraction 0.1; '500' → absolute count 500; '1.0' → everything. The type of ``float | int`` flags."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a count >= 1, got {text!r}") from None
    if value > 1 or ("." not in text and value == 1):
        if value != int(value):
            raise argparse.ArgumentTypeError(f"above 1 it is a count and must be whole, got {text!r}")
        return int(value)
    return value


# --- options generated from a request model -------------------------------------------------------------------


def _fields(model: type) -> dict:
    """Name → FieldInfo of a request model or a (pydantic) config dataclass."""
    return model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else model.__pydantic_fields__


def _is_group(annotation) -> bool:
    annotation = _optional_inner(annotation)  # an optional group (``preprocess``) still has one flag per leaf
    return isinstance(annotation, type) and (issubclass(annotation, BaseModel) or is_dataclass(annotation))


def _choices(info) -> list | None:
    annotation = _optional_inner(info.annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    extra = info.json_schema_extra
    if callable(extra):
        extra = {}
        info.json_schema_extra(extra)
    return (extra or {}).get("enum")


def _optional_inner(annotation):
    """``X | None`` → ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _value_type(annotation):
    annotation = _optional_inner(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if set(typing.get_args(annotation)) == {int, float}:
            return parse_keep  # a fraction or a count
        raise TypeError(f"no flag type for {annotation!r}: give the field a plain type")
    if annotation in (int, float, str):
        return annotation
    raise TypeError(f"no flag type for {annotation!r}: give the field a plain type")


def add_request_options(parser: argparse.ArgumentParser, model: type, only: set[str] | None = None) -> dict:
    """Add one option per field of ``model`` (one per leaf of nested models and configs), named after the field
    (``teacher_epochs`` → ``--teacher-epochs``; a list field repeats, named in the singular: ``--reference``; a
    bool that defaults to on is turned off with ``--no-<name>``). Unset options stay out of the namespace, so
    the model supplies its defaults. Returns field path → flag, for naming the flag in an error."""
    flags: dict[tuple[str, ...], str] = {}

    def walk(model: type, path: tuple[str, ...], derived: bool = False) -> None:
        for name, info in _fields(model).items():
            if _is_group(info.annotation):  # a group that defaults to None is derived (preprocess: the model's)
                group_derived = derived or (not info.is_required() and info.get_default() is None)
                walk(_optional_inner(info.annotation), (*path, name), group_derived)
                continue
            if only is not None and name not in only:
                continue
            dest, default = ".".join((*path, name)), info.get_default(call_default_factory=True)
            annotation = _optional_inner(info.annotation)
            if annotation is bool:
                default = "on" if default else "off"
            shown = "" if info.is_required() else f" (default: {'the model' + chr(39) + 's' if derived else default})"
            kwargs = dict(dest=dest, default=argparse.SUPPRESS, help=(info.description or "") + shown)
            flag = "--" + name.replace("_", "-")
            if annotation is bool:
                flag = f"--no-{flag[2:]}" if default == "on" else flag
                kwargs["action"] = "store_false" if default == "on" else "store_true"
            elif typing.get_origin(annotation) is list:
                flag = flag.removesuffix("s")
                kwargs.update(action="append", type=typing.get_args(annotation)[0], required=info.is_required(),
                              metavar=name.removesuffix("s").upper())
            else:
                kwargs.update(type=_value_type(annotation), choices=_choices(info), required=info.is_required(),
                              metavar=None if _choices(info) else name.upper())
            parser.add_argument(flag, **kwargs)
            flags[(*path, name)] = flag

    walk(model, ())
    parser.set_defaults(_request_model=model, _request_flags=flags)
    return flags


def _nested(values: dict) -> dict:
    """{'preprocess.image_size': 8} → {'preprocess': {'image_size': 8}}."""
    out: dict = {}
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def request_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser, **base) -> BaseModel:
    """The command's request model from its parsed options (over ``base``); a refused value ends the command
    with ``plada <cmd>: error: argument --flag: …``, like any other bad option."""
    dests = {".".join(path) for path in args._request_flags}
    given = {k: v for k, v in vars(args).items() if k in dests}
    values = _nested(given)
    for key, value in base.items():  # nested groups merge: a flag changes one leaf of the base's group
        if isinstance(values.get(key), dict) and is_dataclass(value):
            values[key] = {**{k: getattr(value, k) for k in _fields(type(value))}, **values[key]}
        values.setdefault(key, value)
    try:
        return args._request_model(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = args._request_flags.get(tuple(str(p) for p in err["loc"]))
        where = f"argument {flag}: " if flag else (f"{'.'.join(map(str, err['loc']))}: " if err["loc"] else "")
        message = str(err["ctx"]["error"]) if err["type"] == "value_error" else f"{err['msg']}, got {err['input']!r}"
        parser.error(where + message)

# --- the parser ---------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plada", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ref = sub.add_parser("reference", help="reference pool commands").add_subparsers(dest="ref_command", required=True)
    build = ref.add_parser("build", help="turn image sources into webdataset shards + index.parquet + reference.json")
    add_request_options(build, ReferenceRequest)

    run = sub.add_parser("run", help="build pool, publish, train student and random baseline, write report")
    add_request_options(run, RunRequest)

    pub = sub.add_parser("publish", help="teacher → scores → selection → manifest + payload for an existing pool")
    add_request_options(pub, PublishRequest)

    stu = sub.add_parser("train-student", help="client side: payload (or a task release) + local pool → student")
    add_request_options(stu, StudentRequest)
    stu.add_argument("--target-test", dest="eval", default=argparse.SUPPRESS, metavar="SPEC", help="deprecated: --eval")

    payload = sub.add_parser("payload", help="payload commands").add_subparsers(dest="payload_command", required=True)
    inspect = payload.add_parser(
        "inspect", help="header, size and codec of a payload; with --reference-url, decode it against that pool"
    )
    inspect.add_argument("payload", help="payload.plada URL")
    inspect.add_argument(
        "--reference-url", default=None, help="decode against this local pool (fingerprint, size and layout checked)"
    )
    add_payload_export(payload)
    add_predict(sub)

    demo = sub.add_parser("demo", help="run everything on a built-in real-data pair")
    demo.add_argument("--pair", choices=sorted(DEMO_PAIRS), default="default")
    add_request_options(demo, RunRequest, only={"out", "seed", "keep"})

    catalog_cli.add_catalog(sub, add_request_options)

    bench = sub.add_parser("bench", help="selection benchmark: selectors × keeps × seeds (benchmarks/selection.py)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="e.g. --quick, or --pairs A --keeps 0.01 0.1")
    return parser


def _scoring_threads(workers: int) -> None:
    # Scoring tasks run side by side: give each its share of the cores (Dask workers inherit the env).
    os.environ.setdefault("PLADA_SCORING_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


# --- the commands: each takes its validated request (or the parsed arguments) ---------------------------------


def _cmd_reference_build(request: ReferenceRequest) -> dict:
    from plada_core.io import pool
    from plada_core.io.sources import open_source

    return pool.build_reference([open_source(s) for s in request.sources], request.out, shard_size=request.shard_size)


def _cmd_run(request: RunRequest) -> dict:
    from flows.run import plada_run

    _scoring_threads(request.workers)
    return plada_run(request)


def _cmd_publish(request: PublishRequest) -> dict:
    from flows.publish import run_publish

    _scoring_threads(request.workers)
    out = run_publish(request)
    return {k: v for k, v in out.items() if k != "score_urls"}


def _cmd_train_student(request: StudentRequest) -> dict:
    from flows.client import student_run

    result = student_run(request)
    release_line(result)
    return result


def _cmd_payload_inspect(args) -> dict:
    from plada_core.io import pool, storage
    from plada_core.payload import read_header

    data = storage.read_bytes(args.payload)
    named = ("class_names", "task", "version", "student_recipe")  # shown when the payload carries them (2, 3)
    header = {k: v for k, v in read_header(data).items() if v is not None or k not in named}
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


def demo_base(pair: str) -> dict:
    """The ``RunRequest`` fields of a demo pair (``plada_core.pairs.DEMO_PAIRS``), optional sources that are
    not installed left out."""
    spec = dict(DEMO_PAIRS[pair])
    spec["references"] = spec["references"] + [s for s in spec.pop("optional_references") if _available(s)]
    return spec


def _cmd_bench(args) -> dict:
    from benchmarks.selection import main as bench_main

    return {"exit_code": bench_main(args.bench_args)}


REQUEST_COMMANDS = {
    "reference": _cmd_reference_build,
    "run": _cmd_run,
    "publish": _cmd_publish,
    "train-student": _cmd_train_student,
    "demo": _cmd_run,
    "catalog publish": catalog_cli.cmd_publish,
}
ARGS_COMMANDS = {
    "payload": lambda args: (cmd_payload_export if args.payload_command == "export" else _cmd_payload_inspect)(args),
    "predict": cmd_predict,
    "bench": _cmd_bench,
    "catalog validate": catalog_cli.cmd_validate,
}


def parse(argv: list[str] | None = None) -> tuple[str, object]:
    """The command and its input: the validated request model, or the parsed arguments for commands without
    one. A bad option or value exits with status 2 and ``plada <cmd>: error: …``."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "catalog":
        args.command = f"catalog {args.catalog_command}"
    if args.command not in REQUEST_COMMANDS:
        return args.command, args
    command_parser = _subparser(parser, args)
    base = demo_base(args.pair) if args.command == "demo" else {}
    if args.command == "catalog publish":
        base = {"catalog": args.catalog}
    return args.command, request_from_args(args, command_parser, **base)


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    names = args.command.split() + ([args.ref_command] if args.command == "reference" else [])
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def main(argv: list[str] | None = None) -> int:
    command, request = parse(argv)
    run = REQUEST_COMMANDS.get(command) or ARGS_COMMANDS[command]
    try:
        result = run(request)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"plada {command}: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:  # None: the command printed its own output
        print(json.dumps(_headline(result), indent=2, default=str))
    return 0


def _headline(result: dict) -> dict:
    """Drop bulky fields (histograms, shard lists) from what is printed; the files keep everything. A pool's
    sources are summed up as the images each brought and the unreadable files it passed over."""
    out = {k: v for k, v in result.items() if k not in ("shards", "class_histogram", "sources")}
    if isinstance(result.get("sources"), list):
        out["sources"] = {s["spec"]: {"n": s["n"], "n_unreadable": s.get("n_unreadable", 0)}
                          for s in result["sources"]}  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
