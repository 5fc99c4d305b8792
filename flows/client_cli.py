"""The client's ``plada`` commands that run no flow: ``plada predict`` and ``plada payload export``.

``flows/cli.py`` adds them to its parser (``add_predict``, ``add_payload_export``) and calls ``cmd_predict`` /
``cmd_payload_export`` with the parsed arguments. Each returns the dict ``plada`` prints as JSON, or None when
it printed its own output (``plada predict`` without ``--json``).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_payload_export", "add_predict", "cmd_payload_export", "cmd_predict", "release_line"]


def add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="top-k class names of images, with a student checkpoint")
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                         help="image files, or folders searched for image files (paths or URLs)")
    predict.add_argument("--model", required=True, help="a student checkpoint (student.pt) written by train-student")
    predict.add_argument("--top-k", type=_positive, default=3, help="classes shown per image (default: 3)")
    predict.add_argument("--json", action="store_true", help="print one JSON object instead of one line per image")


def add_payload_export(payload_sub) -> None:
    from plada_core.io.payload_export import EXPORT_FORMATS

    export = payload_sub.add_parser(
        "export", help="write a payload's images with labels and class names as parquet, webdataset or image folders"
    )
    export.add_argument("payload", help="payload.plada URL")
    export.add_argument("--reference-url", required=True, help="the local pool the payload was built for")
    export.add_argument("--out", required=True, help="output folder (path, file:// or s3://)")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="parquet: images.parquet; webdataset: one tar per pool shard; imagefolder: a folder "
                        "per class (torchvision ImageFolder)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def cmd_predict(args) -> dict | None:
    from plada_core.classifier import model_from_checkpoint
    from plada_core.inference import predict_top_k
    from plada_core.io import checkpoints
    from plada_core.io.image_files import expand_images, read_images

    state, meta = checkpoints.load_checkpoint(args.model)
    model, preprocess = model_from_checkpoint(state, meta)
    names = list(meta.get("class_names") or [f"class_{i}" for i in range(int(meta["num_classes"]))])
    urls, images, results = [], [], []
    for url, image, problem in read_images(expand_images(args.images)):
        if image is None:
            results.append({"image": url, "error": problem})
        else:
            urls.append(url)
            images.append(image)
    for url, top in zip(urls, predict_top_k(model, preprocess, images, names, k=args.top_k)):
        results.append({"image": url, "top": top})
    if args.json:
        return {"model": args.model, "predictions": results}
    for row in results:
        shown = row.get("error") or ", ".join(f"{t['class']} ({t['p']:.3f})" for t in row["top"])
        print(f"{row['image']}: {shown}")
    return None


def cmd_payload_export(args) -> dict:
    from plada_core.io import pool, storage
    from plada_core.io.payload_export import export_payload

    payload = pool.decode_for_pool(storage.read_bytes(args.payload), args.reference_url)
    summary = export_payload(payload, args.reference_url, args.out, args.format, class_names=payload.class_names)
    if payload.class_names is None:
        summary["class_names_note"] = "the payload names no classes (format 1): folders and names are the labels"
    return summary


def release_line(result: dict) -> None:
    """Say on stderr what ``plada train-student --release`` did (cron logs keep it beside the JSON)."""
    if "status" not in result:
        return
    what = {"trained": "trained into", "skipped": "already trained in"}[result["status"]]
    tail = "" if result["status"] == "trained" else ": nothing to do"
    print(f"plada train-student: release {result['task']}/{result['version']} {what} {result['out']}{tail}",
          file=sys.stderr)
