"""Fail early: check every input of a run before its first long phase.

The paper profile spends hours converting DICOMs and embedding images before the first number appears; a missing
text encoder, a wrong checkpoint or a table without a column must stop the run *before* that, with a message that
names the file and what is wrong. :func:`validate_inputs` is called by notebook 00 and by the runner's preparation
(``python -m mammoclip_kit.course.runner``); it checks, for the notebooks of the sequence:

* ``checkpoint`` — given (the paper profiles evaluate it), present, and loadable with ``text_encoder`` exactly (a
  released ``.tar``: read without executing code, every key mapped; a kit folder: its files);
* ``text_encoder`` — a local folder with a config and a tokenizer, or a hub id that is cached when offline;
* ``data_root`` — the parts the profile's stages read (VinDr for zero-shot, probes, detection, robustness and FActOR;
  RSNA when a stage lists ``cancer``; the reports when notebook 04 pretrains), each input CSV against its schema, and
  every image the CSVs list present on disk;
* the files other settings name (``imagenet_weights``, back-translation folders, the pretraining preset).

It raises :class:`InputError` listing every problem found (not only the first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = ["InputError", "InputReport", "validate_inputs", "required_parts"]

#: Where each part's images are, relative to ``data_root`` (the layout of :mod:`mammoclip_kit.data.layout`).
_IMAGE_PATHS: dict[str, tuple[str, str, str, str]] = {  # part → (folder, group column, id column, suffix)
    "vindr": ("vindr/images", "study_id", "image_id", ".dicom"),
    "rsna": ("rsna/train_images", "patient_id", "image_id", ".dcm"),
    "reports": ("reports/images", "patient_id", "image_id", ".dcm"),
}
_VINDR_TASKS = {"mass", "calcification", "density", "suspicious_calcification"}


class InputError(ValueError):
    """One or more inputs of a run are missing or wrong; the message lists each with its file."""


@dataclass
class InputReport:
    """What :func:`validate_inputs` checked (printed by notebook 00 and the runner)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, what: str, detail: str) -> None:
        self.lines.append(f"{what:<16}{detail}")

    def bad(self, problem: str) -> None:
        self.problems.append(problem)

    def __str__(self) -> str:
        return "\n".join(self.lines + [f"PROBLEM         {p}" for p in self.problems])


def required_parts(ctx: RunContext) -> dict[str, str]:
    """The data-root parts the profile's stages read → why. VinDr for the evaluation notebooks; RSNA when a stage
    lists the ``cancer`` task; the reports only when notebook 04 pretrains (``pretrain_from_scratch``)."""
    tasks = set(ctx.section("data_efficiency").get("tasks") or []) | set(ctx.section("robustness").get("tasks") or [])
    parts: dict[str, str] = {}
    if tasks & _VINDR_TASKS or ctx.section("detection") or ctx.section("factor"):
        parts["vindr"] = "zero-shot, probes, detection, robustness and FActOR (notebooks 05-09)"
    if "cancer" in tasks:
        parts["rsna"] = "the cancer task of notebooks 06 and 08"
    if ctx.pretrain_from_scratch:
        parts["reports"] = "pretraining from scratch (notebook 04, pretrain_from_scratch)"
    return parts


def _check_text_encoder(source: str, report: InputReport) -> bool:
    path = Path(source).expanduser()
    if path.exists() or source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        if not path.is_dir():
            report.bad(f"text_encoder {source}: no such folder (expected a folder with config.json and a tokenizer, "
                       "written by save_pretrained)")
            return False
        missing = [name for name in ("config.json",) if not (path / name).is_file()]
        if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
            missing.append("tokenizer.json or vocab.txt")
        if missing:
            report.bad(f"text_encoder {path}: missing {', '.join(missing)} (save the model and its tokenizer with "
                       "save_pretrained)")
            return False
        report.ok("text_encoder", f"local folder {path.name}")
        return True
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError):
            report.bad(f"text_encoder {source!r}: a hub id, but offline (HF_HUB_OFFLINE) and not in the local "
                       "Hugging Face cache; pass a local folder (e.g. a downloaded Bio_ClinicalBERT)")
            return False
    report.ok("text_encoder", f"hub id {source}")
    return True


def _check_checkpoint(ctx: RunContext, report: InputReport, text_ok: bool) -> None:
    checkpoint, text_encoder = ctx.params.get("checkpoint"), ctx.params.get("text_encoder")
    if not checkpoint:
        if ctx.is_paper:
            report.bad(f"checkpoint: not given; the {ctx.profile} profile evaluates a given checkpoint (a released "
                       "b2-model-best-epoch-10.tar / b5-model-best-epoch-7.tar with text_encoder=, or a kit folder)")
        return
    path = Path(checkpoint).expanduser()
    if not path.exists():
        report.bad(f"checkpoint {path}: no such file or folder")
        return
    if path.is_dir() and not (path / "config.json").is_file():
        report.bad(f"checkpoint {path}: a folder without config.json (expected a kit checkpoint folder: config.json + "
                   "model.safetensors, or a released .tar file)")
        return
    if path.is_file() and not text_encoder:
        report.bad(f"checkpoint {path.name}: a released file needs text_encoder= (a local Bio_ClinicalBERT folder or "
                   "hub id); its text tower's architecture and tokenizer come from there")
        return
    if path.is_file() and not text_ok:
        return  # the text-encoder problem is already reported; loading would only repeat it
    from mammoclip_kit.models.loader import load_model

    try:  # the whole load: a wrong text encoder shows up as weights that do not fit
        model = load_model(path, text_encoder=text_encoder, device="cpu", verbose=False)
    except Exception as error:  # noqa: BLE001 - any loader failure is reported with the file named
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        report.bad(f"checkpoint {path}: cannot be loaded ({type(error).__name__}: {first})")
        return
    size = tuple(getattr(model.config, "image_size", ()) or ())
    n = sum(p.numel() for p in model.parameters())
    loaded = getattr(model, "load_report", None)
    keys = f", {len(loaded.loaded)} weights mapped, none missing" if loaded is not None else ""
    report.ok("checkpoint", f"{path.name}: loads with this text encoder, {n / 1e6:.1f} M parameters{keys}, input "
              "size " + ("×".join(map(str, size)) if size else "not stated"))
    del model


def _check_images(ctx: RunContext, part: str, frame: Any, source: Path, report: InputReport) -> None:
    png_root = (ctx.section("tables").get("png_root") or {}).get(part)
    if png_root:  # the authors' PNG release replaces the DICOMs of this part
        folder = ctx.data_root / str(png_root)
        if not folder.is_dir():
            report.bad(f"tables.png_root.{part} {png_root}: no such folder under data_root {ctx.data_root}")
        else:
            report.ok(part, f"{source.name}: {len(frame)} rows; images from the PNG release {png_root}")
        return
    folder, group, key, suffix = _IMAGE_PATHS[part]
    root = ctx.data_root / folder
    ids = frame[[group, key]].drop_duplicates()
    missing = [root / str(g) / f"{i}{suffix}" for g, i in zip(ids[group], ids[key], strict=True)
               if not (root / str(g) / f"{i}{suffix}").is_file()]
    if missing:
        shown = ", ".join(p.relative_to(ctx.data_root).as_posix() for p in missing[:3])
        report.bad(f"{source}: {len(missing)} of {len(ids)} listed image(s) missing on disk under {folder}/ "
                   f"(e.g. {shown})")
    else:
        report.ok(part, f"{source.name}: {len(frame)} rows, all {len(ids)} listed DICOMs present")


def _check_boxes(ctx: RunContext, frame: Any, source: Path, report: InputReport) -> None:
    """Every finding the detector (notebook 07) and FActOR (notebook 09) localise needs boxes in both VinDr splits:
    checked here, not after the first finding's training."""
    from mammoclip_kit.data.builders import parse_finding_categories

    wanted = {str(f).replace("_", " ").lower() for f in ctx.section("detection").get("findings") or []}
    wanted |= {str(a).replace("_", " ").lower() for a in ctx.section("factor").get("attributes") or []}
    counts = {name: {"training": 0, "test": 0} for name in sorted(wanted)}
    for row, (value, split, xmin) in enumerate(zip(frame["finding_categories"], frame["split"], frame["xmin"],
                                                   strict=True)):
        if xmin != xmin or xmin is None or str(split) not in ("training", "test"):  # no box (NaN) or unknown split
            continue
        for name in parse_finding_categories(value, source, row):
            if name.lower() in counts:
                counts[name.lower()][str(split)] += 1
    empty = [f"{name} ({counts[name]['training']} training, {counts[name]['test']} test)" for name in counts
             if not counts[name]["training"] or not counts[name]["test"]]
    if empty:
        report.bad(f"{source}: detection / FActOR need boxes in the training and the test split, but for "
                   f"{', '.join(empty)}; remove the finding from the profile's detection.findings / "
                   "factor.attributes or add data")
    elif counts:
        report.ok("vindr boxes", ", ".join(f"{n}: {c['training']} training, {c['test']} test" for n, c in counts.items()))


def _check_data(ctx: RunContext, report: InputReport) -> None:
    from mammoclip_kit.data import records
    from mammoclip_kit.data.layout import REQUIRED_FILES

    root = ctx.data_root
    if not root.is_dir():
        report.bad(f"data_root {root}: no such folder (a folder holding vindr/, rsna/ and/or reports/)")
        return
    schemas = {"vindr": [("vindr/breast-level_annotations.csv", records.VINDR_BREAST_SCHEMA),
                         ("vindr/finding_annotations.csv", records.VINDR_FINDING_SCHEMA)],
               "rsna": [("rsna/train.csv", records.RSNA_SCHEMA)],
               "reports": [("reports/reports.csv", records.REPORTS_SCHEMA)]}
    for part, why in required_parts(ctx).items():
        missing = [rel for rel in REQUIRED_FILES[part] if not (root / rel).exists()]
        if missing:
            report.bad(f"data_root {root}: {part}/ needed for {why}, but {', '.join(missing)} missing")
            continue
        for index, (rel, schema) in enumerate(schemas[part]):
            try:
                frame = records.read_input_csv(root / rel, schema)
            except (ValueError, OSError) as error:
                report.bad(str(error))
                continue
            if index == 0:
                _check_images(ctx, part, frame, root / rel, report)
            elif part == "vindr":
                _check_boxes(ctx, frame, root / rel, report)


def _check_settings(ctx: RunContext, report: InputReport) -> None:
    efficiency = ctx.section("data_efficiency")
    weights = efficiency.get("imagenet_weights")
    if weights and "imagenet" in (efficiency.get("encoders") or []) and not Path(weights).expanduser().is_file():
        report.bad(f"data_efficiency.imagenet_weights {weights}: no such file (configs/profiles/{ctx.profile}.yaml)")
    for folder in ctx.section("tables").get("back_translation") or []:
        if not Path(folder).expanduser().is_dir():
            report.bad(f"tables.back_translation {folder}: no such folder (configs/profiles/{ctx.profile}.yaml)")
    from mammoclip_kit.train import pretrain_config

    if ctx.section("pretrain"):  # notebook 04 resolves the config even when it only inspects the checkpoint
        for variant in ctx.section("pretrain").get("variants") or ["mammoclip"]:
            try:
                pretrain_config(ctx, variant)
            except (ValueError, OSError, TypeError) as error:
                report.bad(f"pretrain variant {variant}: {error}")


def validate_inputs(ctx: RunContext, *, load_checkpoint: bool = True) -> InputReport:
    """Check the inputs the sequence of ``ctx``'s profile needs (see the module docstring); returns what was checked.

    The embedded cohort profiles (smoke, classroom) are built by the kit and only their settings are checked. The
    rehearsal profile writes its default inputs first (:func:`mammoclip_kit.course.rehearsal.ensure_rehearsal_inputs`).
    ``load_checkpoint=False`` skips the full load of the checkpoint (its presence is still checked). Raises
    :class:`InputError` listing every problem.
    """
    report = InputReport()
    from mammoclip_kit.course.rehearsal import ensure_rehearsal_inputs, uses_default_inputs

    if uses_default_inputs(ctx):
        ensure_rehearsal_inputs(ctx)
    if not ctx.is_cohort:
        text_encoder = ctx.params.get("text_encoder")
        text_ok = _check_text_encoder(str(text_encoder), report) if text_encoder else True
        if load_checkpoint:
            _check_checkpoint(ctx, report, text_ok)
        elif ctx.params.get("checkpoint") and not Path(ctx.params["checkpoint"]).expanduser().exists():
            report.bad(f"checkpoint {ctx.params['checkpoint']}: no such file or folder")
        _check_data(ctx, report)
    else:
        report.ok("data_root", f"embedded cohort ({ctx.data_root.name}), built by the kit")
    _check_settings(ctx, report)
    report.ok("notebook 04", "pretrains from scratch" if ctx.pretrain_from_scratch
              else "inspects the given checkpoint (pretrain_from_scratch=True pretrains)")
    if report.problems:
        raise InputError(f"{len(report.problems)} problem(s) with the inputs of the {ctx.profile} profile, found before "
                         "any long phase:\n" + "\n".join(f"- {p}" for p in report.problems))
    return report
