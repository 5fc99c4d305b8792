"""Model benchmark: does ``--teacher-model auto`` pick the better of PLADA's two default models for each kind of image?

``python -m benchmarks.models [--quick] [--tasks cifar10 fashion digits]`` trains both candidates of
``plada_core.model_choice`` on each task, each at the input ``auto`` would give it (``plada_cnn`` at 16 px grey,
``plada_effnet_lite0_ml`` at its own 32 px RGB; ``fit_classifier``, ``--epochs`` epochs, seed 0), tests them on the
task's test images, and asks the rule what it picks from the first 128 train images. It prints a markdown table
and, last, one JSON object: per task the two accuracies and training times, ``auto``'s pick, and ``auto_best``
(whether the pick is the more accurate model, or within ``--tie`` points of it: single runs on a few thousand test
images differ by about a point by chance).

Tasks (images drawn with seed 0 from each split): ``cifar10`` colour photos 32 px, 5,000 / 2,000 (``$PLADA_DATA_DIR``);
``fashion`` grey 28 px, 5,000 / 2,000 (Debian ``dataset-fashion-mnist``; left out with a note when missing);
``digits`` grey 8 px, sklearn's 898 / 899. ``--quick``: digits only, 5 epochs (the test suite's run). Default run:
about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

TASKS = {  # name: (train spec, test spec, train images, test images)
    "cifar10": ("cifar10:train", "cifar10:test", 5000, 2000),
    "fashion": ("fashion-mnist:train", "fashion-mnist:test", 5000, 2000),
    "digits": ("sklearn-digits:train", "sklearn-digits:test", 898, 899),
}


def _log(message: str) -> None:
    print(f"[models bench] {message}", file=sys.stderr, flush=True)


def _draw(spec: str, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    from plada_core.io.sources import open_source

    images, labels = open_source(spec).load_arrays()
    idx = np.random.default_rng(0).permutation(len(labels))[:n]
    return [images[i] for i in idx], labels[idx]


def measure_task(name: str, epochs: int) -> dict:
    """Both candidate models on task ``name``, and what ``auto`` picks for it."""
    from plada_core.classifier import fit_classifier
    from plada_core.datasets import labelled_tensors
    from plada_core.io.sources import first_images
    from plada_core.model_choice import COLOUR_MODEL, GREY_MODEL, LOOK_IMAGES, auto_model, look_at
    from plada_core.models import model_input
    from plada_core.training import TrainConfig, accuracy

    train, test, n_train, n_test = TASKS[name]
    x_train, y_train = _draw(train, n_train)
    x_test, y_test = _draw(test, n_test)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    look = look_at(first_images(train, LOOK_IMAGES))
    out = {"task": name, "n_train": len(y_train), "n_test": len(y_test), "look": look.describe(),
           "auto": auto_model(look)[0], "models": {}}  # fmt: skip
    for model in (GREY_MODEL, COLOUR_MODEL):
        cfg = model_input(model)
        start = time.perf_counter()
        xa, ya = labelled_tensors(x_train, y_train, cfg)
        xb, yb = labelled_tensors(x_test, y_test, cfg)
        fitted = fit_classifier(xa, ya, n_classes, TrainConfig(model=model, epochs=epochs, seed=0), desc=model)
        acc = accuracy(fitted, xb, yb)
        out["models"][model] = {"input": f"{cfg.image_size} px {'RGB' if cfg.channels == 3 else 'grey'}",
                                "test_acc": round(acc, 4), "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip
        _log(f"{name}: {model} {out['models'][model]['input']}: {acc:.4f} ({out['models'][model]['wall_s']} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits only, 5 epochs (the test suite's run)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=None, help="default: all three")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of both models (default 30)")
    parser.add_argument("--tie", type=float, default=1.0, help="points within which the pick counts as best")
    args = parser.parse_args(argv)
    from plada_core.training import configure_torch

    configure_torch()
    tasks, epochs = (["digits"], 5) if args.quick else (args.tasks or list(TASKS), args.epochs)
    results = []
    for name in tasks:
        try:
            result = measure_task(name, epochs)
        except (FileNotFoundError, ImportError) as exc:
            _log(f"{name}: left out, its data is not installed ({exc})")
            continue
        accs = {m: r["test_acc"] for m, r in result["models"].items()}
        result["auto_best"] = accs[result["auto"]] >= max(accs.values()) - args.tie / 100
        results.append(result)
    models = list(results[0]["models"]) if results else []
    print("| task | " + " | ".join(models) + " | auto picks | pick within the tie of the best |")
    print("|---|" + "---|" * (len(models) + 2))
    for r in results:
        cells = [f"{r['models'][m]['test_acc']:.3f} ({r['models'][m]['input']}, {r['models'][m]['wall_s']} s)"
                 for m in models]  # fmt: skip
        print(f"| {r['task']} {r['n_train']}/{r['n_test']} | " + " | ".join(cells) + f" | {r['auto']} | {r['auto_best']} |")
    print(json.dumps({"epochs": epochs, "tie_pts": args.tie, "tasks": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
