"""Flower records ↔ he_agg bytes: every field read from a peer's message is type-checked here."""

from __future__ import annotations

from typing import Any

from ..errors import FormatError

__all__ = ["RECORD", "pack", "field_bytes", "field_list", "field_text", "field_int", "record_of"]

RECORD = "he_agg"  # the one ConfigRecord every he_agg message and reply carries


def pack(**fields: Any) -> Any:
    """A RecordDict holding one ConfigRecord ``he_agg`` with ``fields``."""
    from flwr.app import ConfigRecord, RecordDict

    return RecordDict({RECORD: ConfigRecord(dict(fields))})


def record_of(content: Any, what: str) -> Any:
    """The ``he_agg`` ConfigRecord of a message's content (FormatError if absent)."""
    try:
        return content.config_records[RECORD]
    except (KeyError, AttributeError):
        raise FormatError(f"{what}: the message carries no '{RECORD}' record") from None


def _get(record: Any, key: str, what: str) -> Any:
    if key not in record:
        raise FormatError(f"{what}: missing field '{key}'")
    return record[key]


def field_bytes(record: Any, key: str, what: str) -> bytes:
    value = _get(record, key, what)
    if not isinstance(value, bytes):
        raise FormatError(f"{what}: field '{key}' must be bytes")
    return value


def field_text(record: Any, key: str, what: str) -> str:
    value = _get(record, key, what)
    if not isinstance(value, str):
        raise FormatError(f"{what}: field '{key}' must be a string")
    return value


def field_int(record: Any, key: str, what: str) -> int:
    value = _get(record, key, what)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"{what}: field '{key}' must be an integer")
    return value


def field_list(record: Any, key: str, what: str, kind: type) -> list[Any]:
    value = _get(record, key, what)
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise FormatError(f"{what}: field '{key}' must be a list of {kind.__name__}")
    return list(value)
