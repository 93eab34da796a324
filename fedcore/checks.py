"""Checks of configuration fields, shared by every program that reads a run file
(fedcore, fedlink, the coordinator, the device, training): one wording for every
error, which names the field (``federation.rounds``) and what it got.

    table = check_table(settings.get("federation", {}), ["rounds", "seed"], "federation")
    rounds = number(table, "rounds", 10, 1, 1_000_000, integer=True, where="federation")
"""

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["is_int", "check_table", "check_number", "number", "boolean", "choice", "text"]


def is_int(value: object) -> bool:
    """A Python or numpy integer; bool is an int subclass but never a sensible count."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _label(key: str, where: str) -> str:
    return f"{where}.{key}" if where else key


def check_table(table: Any, allowed: Sequence[str], where: str) -> Dict[str, Any]:
    """`table` as a dict, refusing a non-table and keys outside `allowed`."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"[{where}]: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return dict(table)


def check_number(value: Any, label: str, low: float, high: float = math.inf, integer: bool = False,
                 open_high: bool = False) -> Any:
    """`value` as an int (`integer`: 3 and 3.0 pass, 3.5 and True do not) or a float in
    [low, high] ([low, high) with `open_high`; inf passes only where high is inf and closed)."""
    kind = "an integer" if integer else "a number"
    if math.isfinite(high):
        bounds = f"in [{low}, {high}{')' if open_high else ']'}"
    else:
        bounds = f">= {low}" if not open_high else f"finite and >= {low}"
    numeric = is_int(value) or (isinstance(value, (float, np.floating)) and not math.isnan(value)
                                and (not integer or (math.isfinite(value) and float(value).is_integer())))
    # Exact comparisons: a 400-digit integer is out of range, never an OverflowError.
    if not numeric or not low <= value <= high or (open_high and value == high):
        raise ConfigError(f"{label} must be {kind} {bounds}, got {_short(value)}")
    return int(value) if integer else float(value)


def number(table: Mapping[str, Any], key: str, default: Any, low: float, high: float = math.inf,
           integer: bool = False, where: str = "") -> Any:
    """table[key] (or `default`) checked by check_number, named `where.key` in errors."""
    return check_number(table.get(key, default), _label(key, where), low, high, integer)


def boolean(table: Mapping[str, Any], key: str, default: bool, where: str = "") -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{_label(key, where)} must be true or false, got {_short(value)}")
    return value


def choice(table: Mapping[str, Any], key: str, default: str, choices: Sequence[str], where: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{_label(key, where)} must be one of {list(choices)}, got {_short(value)}")
    return value


def text(table: Mapping[str, Any], key: str, default: Optional[str], where: str = "",
         empty: bool = True) -> Optional[str]:
    """A string field (None stays None when it is the default)."""
    value = table.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, str) or (not empty and not value):
        need = "a non-empty string" if not empty else "a string"
        raise ConfigError(f"{_label(key, where)} must be {need}, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    """repr(value), cut so that a hostile 10 MB value does not become a 10 MB message."""
    if is_int(value) and abs(int(value)) > 10**30:  # str() of a huge int is slow, even refused
        return f"an integer of {int(value).bit_length()} bits"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
