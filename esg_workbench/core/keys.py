"""Key and cursor values to and from JSON, without losing type or precision.

Checkpoints and chunk bounds are stored as JSON. A datetime keeps its microseconds and
its zone (aware values are stored in UTC); a Decimal keeps every digit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any


def encode_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            return {"tstz": value.isoformat()}
        return {"ts": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"dec": str(value)}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, dt.time):
        return {"t": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    raise TypeError(f"cannot store a key value of type {type(value).__name__}")


def decode_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    (tag, text), = value.items()
    if tag == "f":
        return float(text)
    if tag == "tstz":
        return dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)
    if tag == "ts":
        return dt.datetime.fromisoformat(text)
    if tag == "d":
        return dt.date.fromisoformat(text)
    if tag == "dec":
        return Decimal(text)
    if tag == "b":
        return bytes.fromhex(text)
    if tag == "t":
        return dt.time.fromisoformat(text)
    if tag == "uuid":
        return uuid.UUID(text)
    raise ValueError(f"unknown key tag {tag!r}")


def encode_key(key: tuple | None) -> list | None:
    return None if key is None else [encode_value(v) for v in key]


def decode_key(data: list | None) -> tuple | None:
    return None if data is None else tuple(decode_value(v) for v in data)
