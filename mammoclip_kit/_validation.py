"""Small checks shared by the config readers (every YAML section and ``from_dict`` rejects unknown keys alike)."""

from __future__ import annotations

from collections.abc import Iterable


def reject_unknown(values: Iterable[str], known: Iterable[str], noun: str = "key", where: str | None = None) -> None:
    """Raise ``ValueError`` naming every key of ``values`` that is not in ``known`` (and the known ones).

    The message reads ``"<where>: unknown <noun>(s) [...]; known: [...]"`` (without the prefix when ``where`` is None).
    """
    known = set(known)
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown {noun}(s) {unknown}; known: {sorted(known)}")
