"""The rehearsal profile's inputs: what a researcher brings to the paper profile, written at CI scale.

The paper profile takes three inputs — a released checkpoint (``checkpoint``), a text encoder folder
(``text_encoder``) and a data root in the real datasets' formats (``data_root``). The ``rehearsal`` profile
(``configs/profiles/rehearsal.yaml``) runs exactly the paper's code paths on small stand-ins of all three, written here:

* ``<folder>/data_root``: a few patients in the VinDr-Mammo, RSNA and reports formats (CSVs + DICOMs), written by the
  cohort generator; its ``truth/`` folder, ``cohort.json`` and generator marker are removed, so the folder holds only
  what a real data root holds;
* ``<folder>/<text_encoder>``: a tiny BERT (``BertModel`` + WordPiece tokenizer, saved with ``save_pretrained``) with
  Bio_ClinicalBERT's layout (512 positions, a pooler) but a few thousand parameters;
* ``<folder>/<checkpoint>``: a ``paper-b2`` model with seeded weights and that text tower, written in the authors'
  released ``.tar`` layout (:func:`mammoclip_kit.models.reference.write_reference_checkpoint`), its trained input size
  recorded in the file's config.

:func:`ensure_rehearsal_inputs` builds them once (a ``params.json`` record; rebuilt when the ``inputs`` section changes).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammoclip_kit.artifacts import Artifact

if TYPE_CHECKING:
    from mammoclip_kit.context import RunContext

__all__ = ["ensure_rehearsal_inputs", "build_rehearsal_inputs", "uses_default_inputs", "REHEARSAL_VERSION"]

#: Bumped when what :func:`build_rehearsal_inputs` writes changes (the record then no longer matches).
REHEARSAL_VERSION = 1
_RECORD = "rehearsal.json"


def _paths(folder: Path, inputs: dict[str, Any]) -> dict[str, Path]:
    return {name: folder / str(inputs[name]) for name in ("data_root", "checkpoint", "text_encoder")}


def build_rehearsal_inputs(folder: str | Path, inputs: dict[str, Any]) -> dict[str, Path]:
    """Write the three rehearsal inputs described by ``inputs`` (the profile's ``inputs`` section) into ``folder``.

    Returns ``{"data_root", "checkpoint", "text_encoder"}`` → path. Seeded: the same section gives the same files.
    """
    import pandas as pd

    from mammoclip_kit.cohort.generate import MARKER_NAME, RECORD_NAME, make_cohort
    from mammoclip_kit.models.factory import create_model
    from mammoclip_kit.models.reference import write_reference_checkpoint
    from mammoclip_kit.models.towers import DEFAULT_CORPUS, build_small_bert

    folder = Path(folder)
    paths = _paths(folder, inputs)
    cohort = dict(inputs.get("cohort") or {})
    data_root = paths["data_root"]
    if data_root.exists():
        shutil.rmtree(data_root)
    make_cohort(data_root, preset=str(cohort.get("preset", "smoke")), seed=int(cohort.get("seed", 0)), workers=1,
                progress=False, n_patients=dict(cohort.get("n_patients") or {}))
    for name in ("truth", RECORD_NAME, MARKER_NAME):  # a real data root holds none of these
        path = data_root / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    texts = list(DEFAULT_CORPUS)
    reports = data_root / "reports" / "reports.csv"
    if reports.exists():
        frame = pd.read_csv(reports, dtype=str).fillna("")
        texts += [str(v) for column in frame.columns if column.lower() in {"findings", "impression", "report", "text"}
                  for v in frame[column] if v]
    text_model = dict(inputs.get("text_model") or {})
    if paths["text_encoder"].exists():
        shutil.rmtree(paths["text_encoder"])
    bert = build_small_bert(texts, paths["text_encoder"], vocab_size=int(text_model.get("vocab_size", 400)),
                            hidden=int(text_model.get("hidden", 32)), layers=int(text_model.get("layers", 1)),
                            heads=int(text_model.get("heads", 2)), max_length=int(text_model.get("max_length", 512)),
                            seed=int(inputs.get("model_seed", 0)))
    arch = str(inputs.get("arch", "b2"))
    height, width = (int(v) for v in inputs.get("image_size", (1520, 912)))
    model = create_model(f"paper-{arch}", text_encoder=str(bert), seed=int(inputs.get("model_seed", 0)),
                         image_size=(height, width)).eval()
    write_reference_checkpoint(model, paths["checkpoint"], arch=arch)
    return paths


def uses_default_inputs(ctx: RunContext) -> bool:
    """True when ``ctx`` (profile ``rehearsal``) reads at least one input from the folder the rehearsal writes."""
    folder = ctx.rehearsal_inputs
    if folder is None:
        return False
    defaults = _paths(folder, ctx.section("inputs"))
    return any(str(ctx.params.get(name)) == str(path) for name, path in defaults.items())


def ensure_rehearsal_inputs(ctx: RunContext) -> dict[str, Path]:
    """The rehearsal inputs of ``ctx`` (profile ``rehearsal``), built when missing or when the ``inputs`` section
    changed. Inputs the user gave as parameters are used as given; only the defaults are written here."""
    folder = ctx.rehearsal_inputs
    if folder is None:
        raise ValueError(f"profile {ctx.profile!r} has no rehearsal inputs (only the rehearsal profile writes its own)")
    inputs = ctx.section("inputs")
    artifact = Artifact(folder, {"version": REHEARSAL_VERSION, **inputs}, record=folder / _RECORD)
    paths = _paths(folder, inputs)
    if not artifact.is_current() or not all(p.exists() for p in paths.values()):
        if folder.exists() and any(folder.iterdir()) and not artifact.record.exists():
            raise FileExistsError(f"{folder}: not empty and not written by the rehearsal ({_RECORD} missing); move it "
                                  "away or set $MAMMOCLIP_DATA to another folder")
        print(f"writing the rehearsal inputs to {folder.name}/ (released-layout .tar, text encoder folder, data root)")
        folder.mkdir(parents=True, exist_ok=True)
        artifact.record.unlink(missing_ok=True)
        build_rehearsal_inputs(folder, inputs)
        artifact.commit()
    return paths
