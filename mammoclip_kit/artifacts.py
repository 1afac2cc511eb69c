"""Build-if-missing artefacts and atomic writes: the one helper behind every "load if present, build if missing" step.

An artefact is an output (a file or a folder: a cohort, PNGs, tables, a checkpoint, a feature cache, a sweep) plus a
JSON *record* of the parameters it was built with. :func:`ensure` reuses the artefact when the record holds exactly the
same parameters and says the build completed, and builds it otherwise (or whenever ``retrain`` is set). The record is
written last and atomically, so an interrupted build is never mistaken for a finished one.

The atomic writers (:func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_write_csv`) write to a
temporary file in the same folder and rename it over the target: a reader sees the old file or the new one, never half
of one, and a failed write leaves the old file in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

RECORD_NAME = "params.json"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples → lists, paths → strings, numpy scalars → Python) for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    """:func:`atomic_write_text` of ``value`` as indented JSON (numpy scalars and paths converted)."""
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_default) + "\n")


def atomic_write_csv(path: str | os.PathLike, frame: Any, **to_csv: Any) -> Path:
    """Write a pandas DataFrame as CSV atomically (``index=False`` unless given)."""
    to_csv.setdefault("index", False)
    return atomic_write_text(path, frame.to_csv(**to_csv))


class Artifact:
    """An output at ``path`` and the record of the ``params`` it is (to be) built with.

    The record is ``<path>/params.json`` for a folder (a path without suffix) and ``<path>.params.json`` for a file,
    unless ``record`` names another file.
    """

    def __init__(self, path: str | os.PathLike, params: Mapping[str, Any], record: str | os.PathLike | None = None):
        self.path = Path(path)
        self.params = jsonable(dict(params))
        if record is not None:
            self.record = Path(record)
        elif self.path.suffix:
            self.record = self.path.with_name(self.path.name + ".params.json")
        else:
            self.record = self.path / RECORD_NAME

    def recorded(self) -> dict[str, Any]:
        """The record as stored ({} when it is missing or unreadable)."""
        try:
            value = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def is_current(self) -> bool:
        """True when the output exists and its record holds these parameters and a completed build."""
        record = self.recorded()
        return self.path.exists() and bool(record.get("complete")) and record.get("params") == self.params

    def differences(self) -> list[str]:
        """Names of the parameters whose recorded value differs (for a message saying why it is rebuilt)."""
        recorded = self.recorded().get("params") or {}
        return sorted(k for k in set(recorded) | set(self.params) if recorded.get(k) != self.params.get(k))

    def commit(self, **info: Any) -> Path:
        """Write the record (last, atomically): these parameters, ``complete: true`` and any extra ``info``."""
        return atomic_write_json(self.record, {"params": self.params, "complete": True, **info})


def ensure(path: str | os.PathLike, params: Mapping[str, Any], build: Callable[[Path], T], *,
           load: Callable[[Path], T] | None = None, retrain: bool = False, record: str | os.PathLike | None = None,
           name: str | None = None, verbose: bool | None = None) -> T | Path:
    """Return the artefact at ``path``: loaded when its record matches ``params``, else built (``build(path)``).

    ``load(path)`` gives the return value when the artefact is reused (default: ``path``); ``build(path)`` returns it
    after a build (``None`` means ``path``). ``retrain=True`` always builds. ``verbose`` (default
    :func:`mammoclip_kit.env.verbose`) also reports a reuse; a rebuild of a changed artefact is always reported. The record is written only after
    ``build`` returned, so a crash mid-build leaves an artefact that the next call builds again.
    """
    artifact = Artifact(path, params, record)
    label = name or Path(path).name
    if not retrain and artifact.is_current():
        from mammoclip_kit.env import verbose as env_verbose

        if verbose or (verbose is None and env_verbose()):
            print(f"{label}: reusing {Path(path).name} (same parameters; retrain=True recomputes)")
        return load(artifact.path) if load is not None else artifact.path
    if verbose is not False and artifact.recorded() and not retrain:
        print(f"{label}: parameters changed ({', '.join(artifact.differences()) or 'incomplete build'}); rebuilding")
    result = build(artifact.path)
    artifact.commit()
    return artifact.path if result is None else result


#: Suffixes of released (pickle-in-zip) checkpoint files (the same list as ``models.loader.REFERENCE_SUFFIXES``).
RELEASED_SUFFIXES = (".tar", ".pth", ".pt", ".ckpt")


def checkpoint_identity(source: str | os.PathLike) -> dict[str, Any]:
    """Which checkpoint ``source`` is, so that results can say what produced them.

    Returns ``{"checkpoint": source as given, "name", "kind", "sha256"}``: ``kind`` is ``"kit folder"`` (``sha256``:
    the ``weights_sha256`` its ``config.json`` records, else the hash of ``model.safetensors``), ``"released file"``
    (the SHA-256 of the file) or ``"missing"`` (no such path, e.g. a preset name; ``sha256`` None). ``sha256`` is cut
    to 12 hex digits, enough to tell two checkpoints apart. Reads only the files, never builds a model.
    """
    import hashlib

    def digest(path: Path) -> str:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                hasher.update(block)
        return hasher.hexdigest()

    path = Path(os.fspath(source)).expanduser()
    name = path.stem if path.suffix.lower() in RELEASED_SUFFIXES else path.name
    identity: dict[str, Any] = {"checkpoint": os.fspath(source), "name": name, "kind": "missing", "sha256": None}
    if path.is_dir():
        identity["kind"] = "kit folder"
        recorded = None
        try:
            recorded = json.loads((path / "config.json").read_text()).get("weights_sha256")
        except (OSError, ValueError, AttributeError):
            pass
        weights = path / "model.safetensors"
        identity["sha256"] = (recorded or (digest(weights) if weights.is_file() else None) or "")[:12] or None
    elif path.is_file():
        identity["kind"], identity["sha256"] = "released file", digest(path)[:12]
    return identity


def describe_checkpoint(identity: Mapping[str, Any] | None) -> str:
    """One line for a :func:`checkpoint_identity`: ``mammoclip (kit folder, sha256 681b5e8f468c)``."""
    if not identity:
        return "no checkpoint recorded"
    sha = identity.get("sha256")
    return f"{identity.get('name') or identity.get('checkpoint')} ({identity.get('kind')}" + \
        (f", sha256 {sha})" if sha else ")")
