"""Stage configurations: one way from a profile section plus notebook parameters to a typed config.

Every stage of the kit (preprocessing, tables, pretraining, zero-shot, probes, detection, robustness, FActOR) has a
dataclass config whose fields are the keys of its section in ``configs/profiles/<profile>.yaml``. Subclassing
:class:`StageConfig` gives each of them the same constructors:

* :meth:`StageConfig.from_dict` — a mapping (a YAML section, a ``config.json``) → config; unknown keys are an error
  naming them and the known ones;
* :meth:`StageConfig.from_context` — ``ctx.section(cls.SECTION)`` (optionally one sub-mapping of it), then the
  notebook's vocabulary parameters that the stage maps onto its fields (:attr:`StageConfig.PARAMETERS`, e.g.
  ``batch_size`` → ``batch_size``, ``num_workers`` → ``workers``), then explicit keyword overrides.

So a value is decided in one order everywhere: dataclass default < profile section < notebook parameter < keyword.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="StageConfig")


def reject_unknown(values: Iterable[str], known: Iterable[str], noun: str = "key", where: str | None = None) -> None:
    """Raise ``ValueError`` naming every key of ``values`` that is not in ``known`` (and the known ones).

    The message reads ``"<where>: unknown <noun>(s) [...]; known: [...]"`` (without the prefix when ``where`` is None).
    """
    known = set(known)
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown {noun}(s) {unknown}; known: {sorted(known)}")


class StageConfig:
    """Mixin for the dataclass config of one stage (see the module docstring).

    Subclasses set :attr:`SECTION` (the profile section they read), optionally :attr:`PARAMETERS` (vocabulary
    parameter → field) and :attr:`IGNORED` (section keys that belong to another config of the same stage).
    """

    SECTION: ClassVar[str | None] = None
    PARAMETERS: ClassVar[Mapping[str, str]] = {}
    IGNORED: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str | None = None) -> T:
        """Build from a mapping; keys in :attr:`IGNORED` are skipped, any other unknown key is an error."""
        values = {k: v for k, v in dict(values or {}).items() if k not in cls.IGNORED}
        reject_unknown(values, cls.field_names(), "setting", where or cls._where())
        return cls(**values)  # type: ignore[call-arg]

    @classmethod
    def from_context(cls: type[T], ctx: Any, *, subsection: str | None = None, **overrides: Any) -> T:
        """Profile section (or ``section[subsection]``) < vocabulary parameters the user set < ``overrides``.

        ``None`` overrides are ignored (a notebook passes its parameters through unchanged).
        """
        section = dict(ctx.section(cls.SECTION)) if cls.SECTION else {}
        where = cls._where() + (f".{subsection}" if subsection else "")
        if subsection is not None:
            section = dict(section.get(subsection) or {})
        params = getattr(ctx, "params", {}) or {}
        for parameter, name in cls.PARAMETERS.items():
            if params.get(parameter) is not None:
                section[name] = params[parameter]
        section.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(section, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON records of what an artefact was built with)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def _where(cls) -> str:
        return f"{cls.SECTION} section" if cls.SECTION else cls.__name__
