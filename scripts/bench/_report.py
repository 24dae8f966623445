"""How every bench prints its result: one JSON object, or aligned ``name  value`` lines."""

from __future__ import annotations

import json
from typing import Any


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in result)
    for name, value in result.items():
        print(f"{name:<{width}}  {value}")
