"""Payload size of every registered codec on the same selections, side by side (not a timed test).

Settings: ``demo`` (the demo run's manifest, when ``runs/demo`` exists) and the ImageNet-21K-shaped
simulator at 1 %, 0.5 % and 0.1 % keep (``plada_core.simulator``). For each: payload bytes per codec
(header included), bits per kept image, the order-0 reference cost ``log2 C(N, k) / k + H(labels)`` (what
a codec that ignores all structure would pay), ``ratio_vs_paper`` of the best codec (and of each codec),
and for the range-coded codecs the split of their bits per image into gaps and labels (``split``: the sum
of ``-log2 p`` over each part's decisions; for layout-rc "gaps" are its block counts and in-block gaps).
layout-rc codes against the pool's layout: the simulator's blocks, and for the demo the runs of equal
(source, source label) in the pool's ``index.parquet`` (``plada_core.io.pool.read_layout``). Encode and decode
seconds are measured at 1 %, one core, one run each.

Simulator settings also get ``oracle_floor`` (``plada_core.simulator.oracle_bits``): the bits per image a
coder *told* the simulator's hidden block boundaries, per-block dominant class and purity, and confusable
classes would pay (labels under the true label model + ``log2 C(n_b, k_b)`` positions inside blocks + a
plain code for which blocks and how many), its bytes (plus the same 72-byte header) and
``best_possible_ratio_vs_paper``. The floor's block term is a plain code, not a bound, so a clever codec
could in principle go below the floor. The bound is ``entropy_bound`` (``plada_core.simulator.entropy_bound``):
the entropy of the selection and labels given every hidden parameter, which no codec beats on average, with
``bound_ratio_vs_paper``. Tighter, and still a bound, is ``prior_bound`` (``plada_core.simulator.prior_bound``):
the entropy given only the task's structure, with each block's own parameters integrated out under the
simulator's priors, which also charges for learning them (``prior_bound_bits_per_image``,
``prior_bound_ratio_vs_paper``). A target ratio below it cannot be met on this simulator by any codec.

Prints a table, then one JSON object as the last line::

    .venv/bin/python benchmarks/payload.py [--n-classes 100] [--seed 0] [--demo-dir runs/demo]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from plada_core.codecs import CODECS, confusion_rc, context_rc, layout_rc
from plada_core.payload import HEADER_SIZE, decode_payload, encode_payload
from plada_core.simulator import entropy_bound, oracle_bits, prior_bound, simulate_selections

ROOT = Path(__file__).resolve().parents[1]
PAPER = "paper-zstd19"
SIM_KEEPS = {"sim_1": 0.01, "sim_0.5": 0.005, "sim_0.1": 0.001}
_FINGERPRINT = "0" * 64  # the fingerprint does not change sizes; any valid one will do
MODELS = {"context-rc": context_rc.Model, "context-rc2": confusion_rc.Model}  # codecs whose bits can be split


def order0_bits(n: int, labels: np.ndarray) -> float:
    """Bits per image of a uniformly random k-subset of N plus i.i.d. labels at their empirical frequencies."""
    k = labels.size
    subset = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
    freq = np.bincount(labels) / k
    freq = freq[freq > 0]
    return subset / k - float((freq * np.log2(freq)).sum())


def load_demo(demo_dir: Path) -> tuple[dict | None, str | None]:
    """The demo's kept (index, label) pairs, or None and why not."""
    manifest, reference = demo_dir / "publish" / "manifest.parquet", demo_dir / "reference" / "reference.json"
    if not manifest.exists() or not reference.exists():
        return None, f"no demo run at {demo_dir} (run `make demo` first)"
    import pyarrow.parquet as pq  # only the demo needs it

    table = pq.read_table(manifest, columns=["index", "label"])
    labels = table["label"].to_numpy().astype(np.int64)
    metadata = json.loads((pq.read_schema(manifest).metadata or {}).get(b"plada", b"{}"))
    n_classes = len(metadata.get("class_names") or []) or int(labels.max()) + 1
    n_reference = int(json.loads(reference.read_text())["n"])
    from plada_core.io.pool import read_layout  # only the demo needs it

    return {"indices": table["index"].to_numpy(), "labels": labels, "n_reference": n_reference,
            "n_classes": n_classes, "layout": read_layout(str(demo_dir / "reference"))}, None


def measure(selection: dict) -> dict:
    """Bytes, bits per image and ratios of every codec on one selection (and the oracle floor if simulated)."""
    k = selection["labels"].size
    sizes = {name: len(_encode(selection, name)) for name in CODECS}
    best = min(sizes, key=sizes.__getitem__)
    row = {
        "n_reference": selection["n_reference"], "k": k, "n_classes": selection["n_classes"],
        "bytes": sizes,
        "bits_per_image": {name: round(8 * size / k, 3) for name, size in sizes.items()},
        "order0_bits_per_image": round(order0_bits(selection["n_reference"], selection["labels"]), 3),
        "best_codec": best,
        "ratio_vs_paper": round(sizes[best] / sizes[PAPER], 4),
        "ratios_vs_paper": {name: round(size / sizes[PAPER], 4) for name, size in sizes.items()},
        "split": {**{name: split(selection, model) for name, model in MODELS.items()},
                  "layout-rc": layout_split(selection)},
    }
    if "simulated" in selection:
        row["oracle_floor"] = floor(selection["simulated"], sizes[PAPER])
    return row


def split(selection: dict, model) -> dict:
    """Bits per image of a range-coded codec's gaps and labels."""
    k = selection["labels"].size
    gap_bits, label_bits = context_rc.code_lengths(
        model(selection["n_reference"], selection["n_classes"]), np.asarray(selection["indices"]),
        np.asarray(selection["labels"]),
    )
    return {"gap_bits_per_image": round(gap_bits / k, 3), "label_bits_per_image": round(label_bits / k, 3)}


def layout_split(selection: dict) -> dict:
    """Bits per image of layout-rc's positions (block counts and gaps) and labels."""
    k = selection["labels"].size
    position_bits, label_bits = layout_rc.code_lengths(
        np.asarray(selection["indices"]), np.asarray(selection["labels"]), n_reference=selection["n_reference"],
        n_classes=selection["n_classes"], layout=selection["layout"],
    )
    return {"gap_bits_per_image": round(position_bits / k, 3), "label_bits_per_image": round(label_bits / k, 3)}


def floor(simulated, paper_bytes: int) -> dict:
    """The oracle floor of a simulated selection, as bits per image, bytes and the best ratio it allows."""
    bits = oracle_bits(simulated)
    floor_bytes = math.ceil(bits.total * simulated.k / 8) + HEADER_SIZE
    bound, prior = entropy_bound(simulated), prior_bound(simulated)
    ratio = lambda bits: round((math.ceil(bits * simulated.k / 8) + HEADER_SIZE) / paper_bytes, 4)
    return {
        "entropy_bound_bits_per_image": round(bound, 3),
        "bound_ratio_vs_paper": ratio(bound),
        "prior_bound_bits_per_image": round(prior, 3),
        "prior_bound_ratio_vs_paper": ratio(prior),
        "labels_bits_per_image": round(bits.labels, 3),
        "positions_bits_per_image": round(bits.positions, 3),
        "blocks_bits_per_image": round(bits.blocks, 3),
        "total_bits_per_image": round(bits.total, 3),
        "bytes": floor_bytes,
        "best_possible_ratio_vs_paper": round(floor_bytes / paper_bytes, 4),
    }


def _encode(selection: dict, codec: str) -> bytes:
    return encode_payload(
        selection["indices"], selection["labels"], n_reference=selection["n_reference"],
        n_classes=selection["n_classes"], fingerprint=_FINGERPRINT, codec=codec, layout=selection["layout"],
    )


def timings(selection: dict) -> dict:
    """Wall-clock encode and decode seconds of every codec (a single run: this is a benchmark, not a test)."""
    result = {}
    for name in CODECS:
        start = time.perf_counter()
        payload = _encode(selection, name)
        middle = time.perf_counter()
        decode_payload(payload, layout=selection["layout"])
        result[name] = {"encode_s": round(middle - start, 3), "decode_s": round(time.perf_counter() - middle, 3)}
    return result


def print_table(settings: dict) -> None:
    codecs = list(CODECS)
    print(f"{'setting':9} {'k':>8} " + " ".join(f"{c + ' B':>15} {'bits/img':>8}" for c in codecs)
          + f" {'order-0':>8} {'best/paper':>10} {'floor':>6} {'floor/paper':>11} {'bound':>6} {'bound/paper':>11}")
    for name, row in settings.items():
        cells = " ".join(f"{row['bytes'][c]:>15,} {row['bits_per_image'][c]:>8.2f}" for c in codecs)
        oracle = row.get("oracle_floor")
        tail = (f" {oracle['total_bits_per_image']:>6.2f} {oracle['best_possible_ratio_vs_paper']:>11.3f}"
                f" {oracle['entropy_bound_bits_per_image']:>6.2f} {oracle['bound_ratio_vs_paper']:>11.3f}"
                f" {oracle['prior_bound_bits_per_image']:>6.2f} {oracle['prior_bound_ratio_vs_paper']:>11.3f}"
                if oracle else " ".join(f"{'-':>{width}}" for width in (6, 11) * 3))
        print(f"{name:9} {row['k']:>8,} {cells} {row['order0_bits_per_image']:>8.2f} {row['ratio_vs_paper']:>10.3f}"
              + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-classes", type=int, default=100, help="target classes in the simulator")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--demo-dir", type=Path, default=ROOT / "runs" / "demo")
    args = parser.parse_args()

    selections, notes = {}, {}
    demo, why = load_demo(args.demo_dir)
    if demo is None:
        notes["demo"] = f"skipped: {why}"
    else:
        selections["demo"] = demo
    simulated = simulate_selections(tuple(SIM_KEEPS.values()), n_classes=args.n_classes, seed=args.seed)
    for name, keep in SIM_KEEPS.items():
        sim = simulated[keep]
        selections[name] = {"indices": sim.indices, "labels": sim.labels, "n_reference": sim.n_reference,
                            "n_classes": sim.n_classes, "simulated": sim, "layout": sim.layout.sizes}

    settings = {name: measure(selection) for name, selection in selections.items()}
    print_table(settings)
    for name, row in settings.items():
        parts = ", ".join(f"{codec} {part['gap_bits_per_image']:.2f} + {part['label_bits_per_image']:.2f}"
                          for codec, part in row["split"].items())
        oracle = row.get("oracle_floor")
        if oracle:
            parts += (f"; oracle floor {oracle['positions_bits_per_image'] + oracle['blocks_bits_per_image']:.2f}"
                      f" + {oracle['labels_bits_per_image']:.2f}")
        print(f"{name}: bits/img as gaps + labels: {parts}")
    for name, note in notes.items():
        print(f"{name}: {note}")
    result = {
        "simulator": {"n_classes": args.n_classes, "seed": args.seed},
        "settings": settings,
        "seconds_at_1pct": timings(selections["sim_1"]),
        "notes": notes,
    }
    print(json.dumps(result, sort_keys=False))


if __name__ == "__main__":
    main()
