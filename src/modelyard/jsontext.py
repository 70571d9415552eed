"""JSON text on the hot paths: orjson where it can, the standard library where it cannot.

A finished prediction's output is encoded three times (its `done` event, its row, the answer):
for an embedding of 3 x 384 floats that was 1.2 ms with `json.dumps`, and is a tenth of that
with orjson. What orjson refuses (an integer past 64 bits, a string with a lone surrogate) is
encoded as before, and so is what orjson would encode but `json.dumps` refuses (a datetime, a
dataclass) or encodes its own way (a subclass of str or int): `json.dumps` decides, as before. The
text differs from `json.dumps`'s in spacing, in how a float is spelt (`1e-5` for `1e-05`: the same
number), and in keeping non-ASCII characters as they are.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def encode(value: Any) -> bytes | None:
    """`value` as UTF-8 JSON, or None where orjson cannot encode it."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return None


def dumps(value: Any) -> str:
    """`value` as JSON text, for the database's JSON columns (SQLAlchemy's `json_serializer`)."""
    encoded = encode(value)
    return encoded.decode() if encoded is not None else json.dumps(value)
