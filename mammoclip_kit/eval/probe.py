"""Data efficiency in one namespace: tasks, frozen features, linear probes, fine-tuning and the label-fraction sweep.

Notebook ``06_data_efficiency`` reads ``from mammoclip_kit.eval import probe as P``; each job lives in its own module:

* :mod:`mammoclip_kit.eval.tasks` — :data:`TASKS`, :func:`get_task`, :func:`task_labels`, :func:`split_for_task`,
  :func:`subsample_by_patient`, :func:`evaluate_predictions`, :func:`load_task_tables`, :func:`cap_training_patients`;
* :mod:`mammoclip_kit.eval.features` — :func:`model_fingerprint`, :func:`extract_features`, :func:`cached_features`,
  :class:`TrunkMemo`;
* :mod:`mammoclip_kit.eval.linear_probe` — :class:`LinearProbeConfig`, :func:`fit_linear_probe`;
* :mod:`mammoclip_kit.eval.finetune` — :class:`FineTuneConfig`, :func:`fine_tune`;
* :mod:`mammoclip_kit.eval.sweep` — :class:`SweepConfig`, :func:`run_sweep`, :func:`paired_comparison`,
  :func:`sweep_table`, :func:`plot_sweep` (and the CLI ``python -m mammoclip_kit.eval.sweep``);
* :mod:`mammoclip_kit.eval.encoders` — the encoder registry, :func:`create_encoders`.
"""

from __future__ import annotations

from mammoclip_kit.eval.encoders import EncoderSpec, create_encoder, create_encoders, list_encoders
from mammoclip_kit.eval.features import (
    FeatureSet,
    TrunkMemo,
    cached_features,
    extract_features,
    model_fingerprint,
)
from mammoclip_kit.eval.finetune import (
    FineTuneConfig,
    FineTuneResult,
    ImageClassifier,
    fine_tune,
    predict_table,
)
from mammoclip_kit.eval.linear_probe import LinearProbe, LinearProbeConfig, fit_linear_probe
from mammoclip_kit.eval.sweep import (
    SWEEP_KEY,
    SweepConfig,
    SweepLog,
    paired_comparison,
    plot_sweep,
    run_sweep,
    scores_csv_path,
    sweep_table,
)
from mammoclip_kit.eval.tasks import (
    TASKS,
    TaskSpec,
    cap_training_patients,
    evaluate_predictions,
    get_task,
    load_task_tables,
    split_for_task,
    subsample_by_patient,
    task_labels,
)

__all__ = [
    "SWEEP_KEY", "TASKS", "EncoderSpec", "FeatureSet", "FineTuneConfig", "FineTuneResult", "ImageClassifier",
    "LinearProbe", "LinearProbeConfig", "SweepConfig", "SweepLog", "TaskSpec", "TrunkMemo", "cached_features",
    "cap_training_patients", "create_encoder", "create_encoders", "evaluate_predictions", "extract_features",
    "fine_tune", "fit_linear_probe", "get_task", "list_encoders", "load_task_tables", "model_fingerprint",
    "paired_comparison", "plot_sweep", "predict_table", "run_sweep", "scores_csv_path", "split_for_task",
    "subsample_by_patient", "sweep_table", "task_labels",
]


if __name__ == "__main__":  # python -m mammoclip_kit.eval.probe runs the sweep's CLI (python -m mammoclip_kit.eval.sweep)
    from mammoclip_kit.eval.sweep import main

    raise SystemExit(main())
