"""The run context shared by notebooks, CLIs and the runner.

A notebook's ``parameters`` cell uses only the names in :data:`PARAMETERS` (papermill injects overrides there); its setup
cell turns them into a :class:`RunContext` with :func:`setup_notebook`. The context knows the profile's settings
(``configs/profiles/<profile>.yaml``) and every standard location, so no notebook builds a path or names a device itself.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mammoclip_kit import env

PROFILES: tuple[str, ...] = ("smoke", "classroom", "paper", "rehearsal")
#: Profiles that take the paper's inputs (a released or trained ``checkpoint``, a ``text_encoder``, a real-format
#: ``data_root``) and run the paper's code paths; ``rehearsal`` is the paper profile at CI scale on inputs it writes itself
#: (``configs/profiles/rehearsal.yaml``, :mod:`mammoclip_kit.course.rehearsal`).
PAPER_PROFILES: tuple[str, ...] = ("paper", "rehearsal")

#: The shared parameter vocabulary: name -> (default, meaning). ``None`` means "the profile's default".
PARAMETERS: dict[str, tuple[Any, str]] = {
    "profile": (None, "smoke | classroom | paper | rehearsal; None reads $MAMMOCLIP_PROFILE, else classroom"),
    "data_root": (None, "folder holding vindr/, rsna/, reports/; None = the embedded cohort of the profile"),
    "output_dir": (None, "where this profile's artefacts go; None = $MAMMOCLIP_RUNS/<profile> (default runs/<profile>)"),
    "checkpoint": (None, "a kit checkpoint folder or a released .tar; None = the classroom-trained model"),
    "text_encoder": (None, "local folder or hub id of the text encoder (released checkpoints need one)"),
    "device": (None, "torch device string; None picks CUDA, then MPS, then CPU"),
    "seed": (0, "seed for every random choice"),
    "max_steps": (None, "cap on optimisation steps for training cells; None = the profile's value"),
    "batch_size": (None, "batch size; None = the profile's value"),
    "num_workers": (None, "data-loading / preprocessing workers; None = the profile's value"),
    "retrain": (False, "recompute cached artefacts (checkpoints, features, sweeps) even when they exist"),
    "pretrain_from_scratch": (None, "notebook 04 pretrains from scratch (paper: days on a GPU); None = the profile's "
                                    "sequence.pretrain_from_scratch (smoke, classroom: yes; paper, rehearsal: no)"),
}

#: The type of each vocabulary parameter, checked by :func:`check_parameter` (the runner's ``-p`` values).
PARAMETER_KINDS: dict[str, str] = {
    "profile": "profile", "data_root": "path", "output_dir": "path", "checkpoint": "path", "text_encoder": "path",
    "device": "device", "seed": "int>=0", "max_steps": "int>0", "batch_size": "int>0", "num_workers": "int>=0",
    "retrain": "bool", "pretrain_from_scratch": "bool",
}
_DEVICE_PATTERN = r"(cpu|mps|meta|(cuda|xpu)(:\d+)?)"


def check_parameter(name: str, value: Any) -> Any:
    """``value`` of vocabulary parameter ``name`` checked against its type; returns it (strings of paths kept as
    given). ``None`` always means "the profile's default". Raises ``ValueError`` naming the parameter and value."""
    import re

    if name not in PARAMETERS:
        raise ValueError(f"parameter {name!r} is not in the shared vocabulary {sorted(PARAMETERS)}")
    kind = PARAMETER_KINDS[name]
    if value is None:
        return None
    bad = f"parameter {name}={value!r}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"{bad}: expected True or False")
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{bad}: expected an integer")
        if kind == "int>0" and value <= 0:
            raise ValueError(f"{bad}: expected an integer > 0")
        if value < 0:
            raise ValueError(f"{bad}: expected an integer ≥ 0")
        return value
    if kind == "path" and isinstance(value, os.PathLike):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{bad}: expected a non-empty string")
    if kind == "profile" and value not in PROFILES:
        raise ValueError(f"{bad}: expected one of {', '.join(PROFILES)}")
    if kind == "device" and not re.fullmatch(_DEVICE_PATTERN, value):
        raise ValueError(f"{bad}: expected a torch device such as cpu, cuda, cuda:1 or mps")
    return value


CONFIG_DIR = env.repo_root() / "configs"


def resolve_profile(profile: str | None) -> str:
    """``profile`` if given, else ``$MAMMOCLIP_PROFILE``, else ``classroom``; rejects unknown names."""
    name = profile or os.environ.get(env.PROFILE_ENV) or "classroom"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: expected one of {', '.join(PROFILES)}")
    return name


def load_profile_settings(profile: str) -> dict[str, Any]:
    """Read ``configs/profiles/<profile>.yaml`` (one section per stage)."""
    path = CONFIG_DIR / "profiles" / f"{profile}.yaml"
    with open(path) as handle:
        settings = yaml.safe_load(handle) or {}
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(settings).__name__}")
    return settings


@dataclass
class RunContext:
    """Resolved parameters and standard locations of one profile run."""

    profile: str
    data_root: Path
    output_dir: Path
    device: Any
    seed: int
    settings: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    notebook: str | None = None
    is_cohort: bool = True

    def section(self, name: str) -> dict[str, Any]:
        """The profile's settings for one stage (an empty dict when the profile has none)."""
        return dict(self.settings.get(name) or {})

    def param(self, name: str, section: str | None = None, key: str | None = None, default: Any = None) -> Any:
        """A vocabulary parameter if the user set it, else ``settings[section][key]``, else ``default``."""
        value = self.params.get(name)
        if value is not None:
            return value
        if section is not None:
            return self.section(section).get(key or name, default)
        return default

    @property
    def retrain(self) -> bool:
        return bool(self.params.get("retrain"))

    @property
    def is_paper(self) -> bool:
        """True for the profiles that run the paper's code paths on given inputs (:data:`PAPER_PROFILES`)."""
        return self.profile in PAPER_PROFILES

    @property
    def pretrain_from_scratch(self) -> bool:
        """Whether notebook 04 pretrains: the ``pretrain_from_scratch`` parameter, else the profile's
        ``sequence.pretrain_from_scratch`` (default yes). The paper profiles evaluate the given ``checkpoint`` first and
        pretrain only when asked."""
        value = self.params.get("pretrain_from_scratch")
        if value is None:
            value = self.section("sequence").get("pretrain_from_scratch", True)
        return bool(value)

    @property
    def rehearsal_inputs(self) -> Path | None:
        """The folder where the rehearsal profile writes its own inputs (:mod:`mammoclip_kit.course.rehearsal`); None
        for the other profiles."""
        inputs = self.section("inputs")
        if self.profile != "rehearsal" or not inputs:
            return None
        return env.default_data_root() / str(inputs.get("folder", "rehearsal"))

    def png_dir(self, dataset: str) -> Path:
        return self.output_dir / "png" / dataset

    @property
    def tables_dir(self) -> Path:
        return self.output_dir / "tables"

    def checkpoint_dir(self, name: str) -> Path:
        return self.output_dir / "checkpoints" / name

    @property
    def cache_dir(self) -> Path:
        return self.output_dir / "cache"

    @property
    def figures_dir(self) -> Path:
        return self.output_dir / "figures"

    @property
    def metrics_dir(self) -> Path:
        return self.output_dir / "metrics"

    def abspath(self, relative: str | os.PathLike) -> Path:
        """Resolve a path stored relative to ``output_dir`` (as the built tables store them)."""
        path = Path(relative)
        return path if path.is_absolute() else self.output_dir / path

    def relpath(self, path: str | os.PathLike) -> str:
        """Store ``path`` relative to ``output_dir`` when it lies below it (tables stay movable)."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.output_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

    def checkpoint_identity(self) -> dict[str, Any] | None:
        """The Mammo-CLIP checkpoint this run evaluates (:func:`mammoclip_kit.artifacts.checkpoint_identity` plus
        ``source``): the ``checkpoint`` parameter when given, else the profile's own model
        (``checkpoint_dir("mammoclip")``, path relative to ``output_dir``) when it exists, else None."""
        from mammoclip_kit.artifacts import checkpoint_identity

        given = self.params.get("checkpoint")
        if given:
            return {**checkpoint_identity(given), "source": "checkpoint parameter"}
        folder = self.checkpoint_dir("mammoclip")
        if not (folder / "config.json").is_file():
            return None
        return {**checkpoint_identity(folder), "checkpoint": self.relpath(folder),
                "source": f"the {self.profile} profile's model"}

    def write_metrics(self, metrics: dict[str, Any], name: str | None = None) -> Path:
        """Write this notebook's metrics JSON (merged into ``summary.json`` by the runner), with the checkpoint the run
        evaluates (:meth:`checkpoint_identity`) so that tables never mix models unawares."""
        name = name or self.notebook
        if not name:
            raise ValueError("write_metrics needs a name when the context has no notebook")
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        path = self.metrics_dir / f"{name}.json"
        payload = {"notebook": name, "profile": self.profile, "data_root": self._describe_data(),
                   "seed": self.seed, "checkpoint": self.checkpoint_identity(), "metrics": _jsonable(metrics)}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
        tmp.replace(path)
        return path

    def require_data(self, complete: bool = True) -> Path:
        """Make sure ``data_root`` exists before a stage reads it, and return it.

        The embedded cohort is generated here when it is missing (the data pipeline itself never builds it: real data
        and the cohort go through the same code). A user data root must exist; with ``complete`` it must also hold at
        least one dataset part with all its files (:func:`mammoclip_kit.data.layout.check_user_data`).
        """
        if self.is_cohort:
            from mammoclip_kit.cohort import ensure_cohort

            return ensure_cohort(self)
        if not complete:
            if not self.data_root.is_dir():
                raise FileNotFoundError(f"data_root {self.data_root} does not exist: point data_root at a folder "
                                        "holding vindr/, rsna/ and/or reports/")
            return self.data_root
        from mammoclip_kit.data.layout import check_user_data

        return check_user_data(self.data_root)

    def _describe_data(self) -> str:
        return f"embedded cohort ({self.data_root.name})" if self.is_cohort else "user data"


def _jsonable(value: Any) -> Any:
    """Convert numpy / torch scalars and paths so that metrics serialise; NaN becomes None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_context(notebook: str | None = None, **params: Any) -> RunContext:
    """Build a :class:`RunContext` from vocabulary parameters (unknown names are rejected)."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise TypeError(f"unknown parameter(s) {unknown}; the vocabulary is {sorted(PARAMETERS)}")
    resolved = {name: params.get(name, default) for name, (default, _) in PARAMETERS.items()}
    profile = resolve_profile(resolved["profile"])
    resolved["profile"] = profile
    settings = load_profile_settings(profile)
    inputs = settings.get("inputs") or {}
    if profile == "rehearsal" and inputs:  # the paper's three inputs, written by mammoclip_kit.course.rehearsal
        folder = env.default_data_root() / str(inputs.get("folder", "rehearsal"))
        for name in ("data_root", "checkpoint", "text_encoder"):
            if not resolved[name]:
                resolved[name] = str(folder / str(inputs[name]))
    if resolved["data_root"]:
        data_root, is_cohort = Path(resolved["data_root"]).expanduser(), False
    else:
        if profile in PAPER_PROFILES:
            raise ValueError(f"the {profile} profile runs on real data: pass data_root (a folder holding vindr/, rsna/ "
                             "and/or reports/; runner: -p data_root=FOLDER; --data-root on the command line); see "
                             "README 'Real data'")
        preset = (settings.get("cohort") or {}).get("preset", profile)
        data_root, is_cohort = env.default_data_root() / "cohort" / preset, True
    output_dir = Path(resolved["output_dir"]).expanduser() if resolved["output_dir"] else env.default_runs_root() / profile
    seed = int(resolved["seed"] if resolved["seed"] is not None else 0)
    device = env.pick_device(resolved["device"])
    return RunContext(profile=profile, data_root=data_root, output_dir=output_dir, device=device, seed=seed,
                      settings=settings, params=resolved, notebook=notebook, is_cohort=is_cohort)


def setup_notebook(notebook: str, namespace: dict[str, Any] | None = None, *, quiet: bool = False,
                   **params: Any) -> RunContext:
    """The first call of every notebook: resolve parameters, seed, print the environment, return the context.

    ``namespace`` is usually ``globals()`` of the notebook: the vocabulary names defined there (by the ``parameters``
    cell, possibly overridden by papermill) are taken from it; keyword arguments win over it.
    """
    picked = {name: namespace[name] for name in PARAMETERS if namespace is not None and name in namespace}
    picked.update(params)
    env.tune_cpu_allocator()  # same numbers, ~20 % faster CPU steps (see its docstring)
    ctx = make_context(notebook, **picked)
    env.seed_everything(ctx.seed)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(env.versions_report(ctx.device))
        print(f"{'profile':<24}{ctx.profile}")
        print(f"{'data_root':<24}{ctx._describe_data()}")
        print(f"{'output_dir':<24}{ctx.output_dir.name} (under the runs folder)")
        print(f"{'seed':<24}{ctx.seed}")
    return ctx
