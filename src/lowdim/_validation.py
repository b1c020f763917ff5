"""One form for lowdim's argument checks.

Every helper raises :class:`ValueError` with the message ``"{name} must be <rule>, got {value!r}"``,
followed by ``"; {advice}"`` when ``advice`` is given, and returns the checked value (converted:
``float`` or ``int``) so that a check and an assignment can be one line::

    lr = check_positive("lr", lr, advice="the step size η of W ← W − η∇ℓ")

Booleans are refused where numbers are expected (``True`` is an ``int`` in Python). The names are
stable: the rest of the library uses them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

__all__ = [
    "check_choice",
    "check_fraction",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "fail",
]


def fail(name: str, rule: str, value, advice: str | None = None) -> ValueError:
    """The :class:`ValueError` of every check: ``"{name} must be {rule}, got {value!r}[; advice]"``.

    Returned, not raised, so that callers write ``raise fail(...)`` and linters see the raise.
    """
    msg = f"{name} must be {rule}, got {value!r}"
    return ValueError(f"{msg}; {advice}" if advice else msg)


def _real(value) -> float | None:
    """``float(value)`` for a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_positive(name: str, value, advice: str | None = None) -> float:
    """``value`` as a float if it is a finite real number ``> 0``; else ``ValueError``."""
    v = _real(value)
    if v is None or not (v > 0 and math.isfinite(v)):
        raise fail(name, "a positive finite number", value, advice)
    return v


def check_nonnegative(name: str, value, advice: str | None = None) -> float:
    """``value`` as a float if it is a finite real number ``>= 0``; else ``ValueError``."""
    v = _real(value)
    if v is None or not (v >= 0 and math.isfinite(v)):
        raise fail(name, "a non-negative finite number", value, advice)
    return v


def check_int(name: str, value, minimum: int | None = None, advice: str | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``; else ``ValueError``.

    Integral floats (``3.0``) are refused: counts and sizes are integers.
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (minimum is not None and value < minimum):
        rule = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise fail(name, rule, value, advice)
    return int(value)


def check_fraction(name: str, value, advice: str | None = None) -> float:
    """``value`` as a float if it is a real number in the open interval ``(0, 1)``; else ``ValueError``."""
    v = _real(value)
    if v is None or not 0 < v < 1:
        raise fail(name, "a number in the open interval (0, 1)", value, advice)
    return v


def check_choice(name: str, value, choices: Iterable, advice: str | None = None):
    """``value`` if it is one of ``choices``; else ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise fail(name, f"one of {choices}", value, advice)
    return value
