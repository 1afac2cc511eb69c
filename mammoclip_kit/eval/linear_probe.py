"""The frozen-feature linear probe: logistic regression (binary) or softmax (density) on cached features.

The paper's linear probe (LP) trains a linear head on a frozen image tower. Here the tower runs once per table
(:mod:`mammoclip_kit.eval.features`, eval mode, cached) and the probe is a scikit-learn logistic regression on its
pooled features, fitted in seconds. Binary tasks weight positives by negatives / positives by default, as the paper's
weighted BCE; density is unweighted, as its cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mammoclip_kit.config import StageConfig
from mammoclip_kit.eval.tasks import TaskSpec, get_task

__all__ = ["LinearProbe", "LinearProbeConfig", "fit_linear_probe"]


@dataclass
class LinearProbeConfig(StageConfig):
    """Settings of the frozen-feature logistic-regression probe (``linear_probe:`` of a profile's ``data_efficiency``
    or ``robustness`` section)."""

    SECTION = "data_efficiency"

    C: float = 1.0  # inverse L2 strength of scikit-learn's LogisticRegression
    class_weight: str | None = "pos_weight"  # "pos_weight" (binary: positives weighted negatives/positives, as the
    # paper's weighted BCE; multiclass: unweighted, as its CE), "balanced", or None
    max_iter: int = 2000  # L-BFGS iterations
    standardize: bool = True  # z-score features with the training subset's mean and std


class LinearProbe:
    """A fitted probe: ``predict_scores(X)`` gives P(positive) ``(N,)`` or class probabilities ``(N, C)``."""

    def __init__(self, pipeline: Any, task: TaskSpec, classes: np.ndarray) -> None:
        self.pipeline, self.task, self.classes = pipeline, task, classes

    def predict_scores(self, features: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            proba = self.pipeline.predict_proba(np.asarray(features, dtype=np.float64))
        if self.task.kind == "binary":
            return proba[:, list(self.classes).index(1)]
        full = np.zeros((len(features), self.task.num_classes), dtype=np.float64)
        full[:, self.classes.astype(int)] = proba  # classes absent from a small training subset keep probability 0
        return full


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, task: str | TaskSpec,
                     cfg: LinearProbeConfig | None = None, seed: int = 0) -> LinearProbe:
    """Fit a logistic-regression (binary) or softmax (multiclass) probe on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task, cfg = get_task(task), cfg or LinearProbeConfig()
    labels = np.asarray(labels).astype(int)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"linear probe for {task.name!r}: the training subset has only class {classes.tolist()} "
                         f"({len(labels)} images); use a larger fraction or more shots")
    if cfg.class_weight == "pos_weight":
        if task.kind == "binary":
            negatives, positives = int((labels == 0).sum()), int((labels == 1).sum())
            class_weight: Any = {0: 1.0, 1: negatives / positives}
        else:
            class_weight = None
    elif cfg.class_weight in ("balanced", None):
        class_weight = cfg.class_weight
    else:
        raise ValueError(f"LinearProbeConfig.class_weight: {cfg.class_weight!r} is not pos_weight, balanced or None")
    steps = [StandardScaler()] if cfg.standardize else []
    model = LogisticRegression(C=cfg.C, class_weight=class_weight, max_iter=cfg.max_iter, random_state=seed)
    pipeline = make_pipeline(*steps, model)
    import warnings

    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: the problem is small, the result is bit-for-bit reproducible, and scikit-learn's
    # multithreaded loss was measured 30x slower (multinomial, 480 x 640 features) on a busy 2-core machine.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # convergence warnings on tiny subsets are expected and not actionable here
        pipeline.fit(np.asarray(features, dtype=np.float64), labels)
    return LinearProbe(pipeline, task, classes)
