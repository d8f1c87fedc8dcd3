"""JSON from clients. Nesting deeper than the parser's recursion limit (about 1000 levels) raises
RecursionError inside `json.loads`; that is malformed input like any other, so it becomes the same
ValueError and the caller's documented 4xx / `bad_message`, not a 500 or a traceback."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """`json.loads`, with too deep nesting raised as ValueError (the client's error)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply (keep it under a few hundred levels)") from None
