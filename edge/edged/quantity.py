"""Kubernetes resource quantities as edged needs them: CPU in millicores, memory in bytes.

A leaf module (podspec and volumes both read quantities, and podspec imports volumes). A value
that is not a quantity raises BadQuantity, a ValueError naming it.
"""

from __future__ import annotations

import re
from typing import Any

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


class BadQuantity(ValueError):
    """Not a quantity Kubernetes would accept here."""


def cpu_millis(value: Any) -> int:
    text = str(value)
    try:
        return int(float(text[:-1])) if text.endswith("m") else int(float(text) * 1000)
    except ValueError:
        raise BadQuantity(f"invalid cpu quantity {value!r}") from None


def memory_bytes(value: Any) -> int:
    m = _QUANTITY.match(str(value))
    if not m or m.group(2) not in _MEMORY_UNITS:
        raise BadQuantity(f"invalid memory quantity {value!r}")
    return int(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])
