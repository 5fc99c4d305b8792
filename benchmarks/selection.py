"""Selection benchmark: selectors × keep fractions × seeds on real (target, reference pool) pairs.

For every pair there is one pool, one teacher (seed 0) and one scoring pass, all made by the project's own task
bodies (``build_reference_pool``, ``train_teacher`` + target bank, ``score_shard``; see ``selection_prepare``).
Every run then selects and encodes with the publishing core ``plada run`` uses (``plada_core.publishing``),
decodes the payload again (so what the student sees is what travels) and trains the same student recipe
(``fit_classifier``) on the pseudo-labelled pool images, evaluated on the target test split (``selection_runs``).
``random`` is uniform without the Safety-Net (as ``plada run``'s baseline); every other selector runs with the
Safety-Net (alpha 0.5) unless its name ends in ``-nosn``. ``auto`` is the publisher's default: the candidate grid
measured by proxy students on the validation split the teacher never saw, the winner published (its name, the
predicted accuracy and the wall time of the choice are in the row: ``auto_choice``, ``predicted_acc``,
``auto_wall_s``). Every pair's teacher holds that split out, so all rows of a pair share one teacher.

Pairs (defined in ``plada_core.pairs.BENCH_PAIRS``):
  A      target sklearn digits (8 px, content crop); pool mnist5k + animal-mnist + fashion-mnist (85 k); plada_cnn.
  B      target fashion-mnist, 100 labels per class (16 px); pool = the rest of fashion-mnist train
         (unlabelled) + animal-mnist + mnist5k.
  C      target cifar10; pool tiny-imagenet (32 px, frozen EfficientNet-Lite0 + linear head).
  C64    pair C at 64 px (images upsampled): the frozen backbone sees more than a 1x1 feature map, a better
         teacher for 4x the compute. Frozen-backbone students train their head on pool features computed once.
  C-cnn  pair C with a teacher trained from scratch on all 50 k CIFAR-10 train images (plada_cnn_wide, 32 px,
         20 epochs) and C64's student (frozen EfficientNet-Lite0 + linear head at 64 px).
  tiny   a 2 k pool (1 k MNIST + 1 k animal silhouettes) for ``--quick`` / CI.

Outputs under ``--out`` (default ``benchmarks/results``, written by ``selection_report``): ``selection.csv`` and
``selection.parquet`` (one row per pair, selector, keep, seed), ``selection.md`` (mean ± std tables, relevance
AUROCs) and ``selection.png`` (student accuracy against payload bytes, teacher accuracy as a line). Work files
(pool, teacher, scores, one JSON per finished run, so an interrupted benchmark resumes) go under ``--work``
(default ``runs/bench``).

    .venv/bin/python -m benchmarks.selection --pairs A --keeps 0.01 0.05 0.1 --seeds 0 1 2
    .venv/bin/python -m benchmarks.selection --quick          # tiny pair, < 2 min, for CI (or: plada bench --quick)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

from benchmarks.selection_report import auto_bar, summary_table, write_outputs  # noqa: E402
from benchmarks.selection_runs import collect_pair, run_pair  # noqa: E402
from plada_core.pairs import BENCH_PAIRS  # noqa: E402
from plada_core.training import configure_torch  # noqa: E402

__all__ = ["DEFAULT_SELECTORS", "main"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SELECTORS = ["random", "energy", "auto_energy", "knn", "knn_agree", "knn_cover", "knn_sample", "auto"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=["A"], choices=sorted(BENCH_PAIRS))
    p.add_argument("--selectors", nargs="+", default=DEFAULT_SELECTORS)
    p.add_argument("--keeps", nargs="+", type=float, default=[0.005, 0.01, 0.05, 0.1, 0.25])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--threads", type=int, default=int(os.environ.get("PLADA_TORCH_THREADS", os.cpu_count() or 1)))
    p.add_argument("--quick", action="store_true", help="tiny pair, 4 selectors, 2 keeps, 1 seed (CI, < 2 min)")
    p.add_argument("--collect", action="store_true", help="only gather the finished runs under --work into --out")
    p.add_argument("--pruning-columns", action="store_true",
                   help="also score density_ratio and label_stable (for the density_ratio and reliable selectors); "
                        "runs kept apart under <pair>/runs-pruning")  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.selectors, args.keeps, args.seeds = ["tiny"], ["random", "energy", "knn", "auto"], [0.05, 0.2], [0]
    os.environ.setdefault("PLADA_TORCH_THREADS", str(args.threads))
    os.environ.setdefault("PLADA_SCORING_THREADS", str(args.threads))
    configure_torch(args.threads)
    rows, infos = [], {}
    for name in args.pairs:
        if args.collect:
            pair_rows, infos[name] = collect_pair(name, args.work, args.pruning_columns)
        else:
            pair_rows, infos[name] = run_pair(name, args.selectors, args.keeps, args.seeds, args.work,
                                              pruning=args.pruning_columns)  # fmt: skip
        rows += pair_rows
    df = pd.DataFrame(rows)
    if df.empty:  # every requested run was skipped (the log says why): nothing to tabulate, nothing overwritten
        print(json.dumps({"out": str(args.out), "rows": 0}))
        return 0
    write_outputs(df, infos, args.out)
    (args.out / "selection-info.json").write_text(json.dumps(infos, indent=2))
    print(summary_table(df).to_string(index=False))
    if not (bar := auto_bar(df)).empty:
        print(bar.to_string(index=False))
    print(json.dumps({"out": str(args.out), "rows": len(df)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
