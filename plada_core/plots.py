"""Plots as PNG bytes (matplotlib, headless): pure functions of plain rows, no storage."""

from __future__ import annotations

import io

__all__ = ["accuracy_vs_payload_png"]


def accuracy_vs_payload_png(rows: list[dict], title: str = "Student accuracy vs payload size") -> bytes:
    """Scatter+line of ``student_acc`` (and ``random_acc`` when present) against ``payload_bytes``.

    ``rows``: dicts with payload_bytes, student_acc, optional random_acc and label (e.g. the version).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["payload_bytes"])
    x = [r["payload_bytes"] / 1024 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(x, [r["student_acc"] for r in rows], "o-", label="PLADA selection")
    randoms = [(xi, r["random_acc"]) for xi, r in zip(x, rows) if r.get("random_acc") is not None]
    if randoms:
        ax.plot(*zip(*randoms), "s--", label="random, same size")
    for xi, r in zip(x, rows):
        if r.get("label"):
            ax.annotate(str(r["label"]), (xi, r["student_acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("payload (KiB)")
    ax.set_ylabel("student test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
