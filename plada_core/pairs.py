"""Named dataset pairs (target task × reference pool): the one definition module the CLI and benchmarks share.

``DEMO_PAIRS`` drive ``plada demo --pair``; ``BENCH_PAIRS`` drive the selection benchmark
(``benchmarks/selection.py``, whose docstring describes each pair). Pure data: the functions that read or write
the data live with their users.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plada_core.images import PreprocessConfig
from plada_core.training import TrainConfig

__all__ = ["BENCH_PAIRS", "DEMO_PAIRS", "BenchPair"]

DEMO_PAIRS = {
    # Target sklearn digits (8x8 optdigits); pool of MNIST digits among animal silhouettes (and clothes).
    "default": {
        "target_train": "sklearn-digits:train",
        "target_test": "sklearn-digits:test",
        "references": ["mnist5k", "animal-mnist"],
        "optional_references": ["fashion-mnist"],
        "preprocess": PreprocessConfig(image_size=8, channels=1, crop="content"),
        "teacher_model": "plada_cnn",
        "student_model": "plada_cnn",
        "keep": 0.1,
    },
    # CIFAR-10 target, Tiny-ImageNet pool: the paper's ImageNet setting in miniature. No preprocess: the
    # multi-level frozen backbone gives its own (32 px RGB, models.model_input).
    "natural": {
        "target_train": "cifar10:train",
        "target_test": "cifar10:test",
        "references": ["tiny-imagenet"],
        "optional_references": [],
        "teacher_model": "plada_effnet_lite0_ml",
        "student_model": "plada_effnet_lite0_ml",
        "keep": 0.1,
    },
}


@dataclass(frozen=True)
class BenchPair:
    """One (target, pool) setting of the selection benchmark. ``relevant`` names the pool sources that are truly
    relevant (for diagnostics only); ``same_labels`` says their source labels are the target's classes
    (pseudo-label accuracy). ``student_preprocess``: the student's input when it differs from the teacher's
    (``preprocess``). ``label_views``: the views of the ``label_stable`` column (``ScoringConfig.label_stability``;
the flip only where the classes are mirror-symmetric, as natural photos). Sources may contain ``{work}``, the pair's work folder, where ``prepare`` (the name of a
    benchmark function) writes the npz sources the registry does not name directly."""

    target_train: str
    target_test: str
    references: list[str]
    preprocess: PreprocessConfig
    teacher_model: str = "plada_cnn"
    student_model: str = "plada_cnn"
    teacher_epochs: int = TrainConfig.epochs
    student_epochs: int = TrainConfig.epochs
    relevant: list[str] = field(default_factory=list)
    same_labels: bool = True
    prepare: str | None = None
    student_preprocess: PreprocessConfig | None = None
    label_views: str = "shifts"

    @property
    def student_input(self) -> PreprocessConfig:
        return self.student_preprocess or self.preprocess


_DIGITS_8 = PreprocessConfig(image_size=8, channels=1, crop="content")
BENCH_PAIRS = {
    "A": BenchPair(
        "sklearn-digits:train", "sklearn-digits:test", ["mnist5k", "animal-mnist", "fashion-mnist"], _DIGITS_8,
        relevant=["mnist5k"],
    ),
    "B": BenchPair(
        "npz:{work}/b-train.npz", "fashion-mnist:test", ["npz:{work}/b-pool-fashion.npz", "animal-mnist", "mnist5k"],
        PreprocessConfig(image_size=16, channels=1, crop="none"), relevant=["b-pool-fashion"], prepare="pair_b",
    ),
    "C": BenchPair(
        "cifar10:train", "cifar10:test", ["tiny-imagenet"], PreprocessConfig(image_size=32, channels=3, crop="none"),
        teacher_model="plada_effnet_lite0_ml", student_model="plada_effnet_lite0_ml", same_labels=False,
        label_views="flip+shifts",
    ),
    "C64": BenchPair(
        "cifar10:train", "cifar10:test", ["tiny-imagenet"], PreprocessConfig(image_size=64, channels=3, crop="none"),
        teacher_model="plada_effnet_lite0_ml", student_model="plada_effnet_lite0_ml", same_labels=False,
        label_views="flip+shifts",
    ),
    "C-cnn": BenchPair(
        "cifar10:train", "cifar10:test", ["tiny-imagenet"], PreprocessConfig(image_size=32, channels=3, crop="none"),
        teacher_model="plada_cnn_wide", teacher_epochs=20, student_model="plada_effnet_lite0", same_labels=False,
        student_preprocess=PreprocessConfig(image_size=64, channels=3, crop="none"), label_views="flip+shifts",
    ),
    "tiny": BenchPair(
        "sklearn-digits:train", "sklearn-digits:test", ["npz:{work}/tiny-digits.npz", "npz:{work}/tiny-animals.npz"],
        _DIGITS_8, teacher_epochs=10, student_epochs=8, relevant=["tiny-digits"], prepare="pair_tiny",
    ),
}  # fmt: skip
