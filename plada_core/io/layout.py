"""Where each step's output lives: pure functions from a run's URLs to the URLs of its files (no storage access).

A step writes one output at a deterministic path, so a re-run finds finished work; those paths are built here and
nowhere else. Under a publish run's ``out_url``::

    teacher/teacher.pt              the teacher checkpoint (``teacher_url`` of the teacher's folder)
    teacher/target_bank.npz         its target bank, always beside the checkpoint (``bank_url``)
    teacher/validation.npz          the target-train positions held out for validation (``validation_url``)
    teacher/target_hashes.npz       exact and perceptual hashes of the target splits (``target_hashes_url``)
    scores/<shard stem>.parquet     one scores file per pool shard (``scores_url``)
    features/<shard stem>.npz       the shard's pooled backbone features, float16 (``pool_features_url``)
    leakage.json                    pool images that duplicate target images (``leakage_url``)
    auto_selection.json             the validation table of the candidates (``auto_selection_url``)
    manifest.parquet                the kept images (``manifest_url``)
    payload.plada                   the bytes that travel (``payload_url``)
    selection.json                  the selection summary (``selection_summary_url``)
    publish_report.json             the publisher's report (``publish_report_url``)
    students/<tag>/                 a client's student on that payload (``student_url``): student.pt,
                                    metrics.json, student_report.json, accuracy_vs_payload.png

A release root keeps work that later releases reuse under content-addressed folders (keys from
``plada_core.digest``)::

    cache/teachers/<teacher key>/                     a teacher folder as above (teacher.pt and its side files)
    cache/scores/<teacher key>/<pool fp>/<scores key>/  a scoring pass's out_url: scores/ and features/ as above

so a release whose teacher and pool are those of an earlier one re-selects from the scores it has.

An end-to-end run writes ``report.json`` and ``report.md`` (``report_urls``). The reference pool's own files
are ``plada_core.io.pool``'s, and a release's ``tasks/<task>/<version>/`` layout is ``plada_core.io.releases``'s.
"""

from __future__ import annotations

from plada_core.io.storage import join

__all__ = [
    "BANK_NAME",
    "STUDENTS_DIR",
    "STUDENT_REPORT_NAME",
    "auto_selection_url",
    "bank_url",
    "manifest_url",
    "metrics_url",
    "leakage_url",
    "payload_url",
    "pool_features_url",
    "publish_report_url",
    "report_urls",
    "score_run_url",
    "scores_cache_url",
    "scores_url",
    "selection_summary_url",
    "student_checkpoint_url",
    "student_plot_url",
    "student_report_url",
    "student_url",
    "target_hashes_url",
    "teacher_cache_url",
    "teacher_url",
    "validation_url",
]

BANK_NAME = "target_bank.npz"
STUDENT_REPORT_NAME = "student_report.json"
STUDENTS_DIR = "students"
CACHE_DIR = "cache"
_KEY_CHARS = 16  # hex digits of a key in a path: 64 bits, far from colliding among one root's teachers and pools


def teacher_url(out_url: str) -> str:
    return join(out_url, "teacher.pt")


def bank_url(teacher_url: str) -> str:
    """A teacher's target bank: ``target_bank.npz`` beside the checkpoint ``teacher_url``."""
    return _beside(teacher_url, BANK_NAME)


def _beside(teacher_url: str, name: str) -> str:
    return teacher_url.rstrip("/").rsplit("/", 1)[0] + "/" + name


def validation_url(teacher_url: str) -> str:
    """The validation split the teacher never saw: ``validation.npz`` beside the checkpoint ``teacher_url``."""
    return _beside(teacher_url, "validation.npz")


def target_hashes_url(teacher_url: str) -> str:
    """Hashes of the target train and test images (leakage check): ``target_hashes.npz`` beside the checkpoint."""
    return _beside(teacher_url, "target_hashes.npz")


def _stem(shard_url: str) -> str:
    return shard_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")


def scores_url(out_url: str, shard_url: str) -> str:
    """The scores of one shard: ``<out>/scores/<shard stem>.parquet``."""
    return join(out_url, "scores", f"{_stem(shard_url)}.parquet")


def score_run_url(scores_url: str) -> str:
    """The ``out_url`` a scores file ``<out>/scores/<shard stem>.parquet`` was written under (its features are
    ``pool_features_url(score_run_url(...), shard)``)."""
    return scores_url.rstrip("/").rsplit("/", 2)[0]


def _key(value: str) -> str:
    if len(value) < _KEY_CHARS or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"{value!r} is not a hex digest: pass a key from plada_core.digest or a pool fingerprint")
    return value[:_KEY_CHARS]


def teacher_cache_url(root_url: str, teacher_key: str) -> str:
    """The teacher folder of ``teacher_key`` under a release root: ``<root>/cache/teachers/<key>``."""
    return join(root_url, CACHE_DIR, "teachers", _key(teacher_key))


def scores_cache_url(root_url: str, teacher_key: str, pool_fingerprint: str, scores_key: str) -> str:
    """The scoring pass of the pool ``pool_fingerprint`` under a teacher, used as its ``out_url``:
    ``<root>/cache/scores/<teacher key>/<pool fp>/<scores key>``."""
    return join(root_url, CACHE_DIR, "scores", _key(teacher_key), _key(pool_fingerprint), _key(scores_key))


def pool_features_url(out_url: str, shard_url: str) -> str:
    """Pooled backbone features of one shard, written by the scoring pass: ``<out>/features/<shard stem>.npz``."""
    return join(out_url, "features", f"{_stem(shard_url)}.npz")


def density_ratio_url(out_url: str) -> str:
    """The scoring pass's fitted target-vs-pool classifier (``plada_core.pruning.DensityRatio``): one per teacher
    and pool, beside the scores it feeds."""
    return join(out_url, "density_ratio.npz")


def leakage_url(out_url: str) -> str:
    return join(out_url, "leakage.json")


def auto_selection_url(out_url: str) -> str:
    return join(out_url, "auto_selection.json")


def manifest_url(out_url: str) -> str:
    return join(out_url, "manifest.parquet")


def payload_url(out_url: str) -> str:
    return join(out_url, "payload.plada")


def selection_summary_url(out_url: str) -> str:
    return join(out_url, "selection.json")


def publish_report_url(out_url: str) -> str:
    return join(out_url, "publish_report.json")


def report_urls(out_url: str) -> tuple[str, str]:
    """(``report.json``, ``report.md``) of an end-to-end run."""
    return join(out_url, "report.json"), join(out_url, "report.md")


def student_url(payload_url: str, student_tag: str) -> str:
    """Where the student ``student_tag`` trained on ``payload_url`` writes: ``students/<tag>/`` beside the payload."""
    return join(payload_url.rsplit("/", 1)[0], STUDENTS_DIR, student_tag)


def student_checkpoint_url(out_url: str) -> str:
    return join(out_url, "student.pt")


def metrics_url(out_url: str) -> str:
    return join(out_url, "metrics.json")


def eval_predictions_url(out_url: str) -> str:
    """The student's predicted class and the true label of every image of its evaluation split (``pred``,
    ``label``): what pairs two students' accuracies on the same images."""
    return join(out_url, "eval-predictions.npz")


def student_report_url(out_url: str) -> str:
    return join(out_url, STUDENT_REPORT_NAME)


def student_plot_url(out_url: str) -> str:
    """Accuracy against payload size over a task's releases, beside the student report."""
    return join(out_url, "accuracy_vs_payload.png")
