"""JSON that every parser accepts: what `--json` prints and reports are written as.

Python's json module writes NaN and Infinity, which are not JSON (RFC 8259): jq, a
browser's JSON.parse and most other languages' parsers reject the whole document. A
metric undefined on one class (PR-AUC without positives) is NaN, so every report can
hold one; here it becomes null.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """`value` with every NaN or infinite float (numpy's too) replaced by None, recursively."""
    if isinstance(value, float):  # numpy.float64 is a float
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy scalar other than float64
        return finite_or_none(value.item())
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `value`; anything json cannot encode is written as its str()."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False, default=str)
