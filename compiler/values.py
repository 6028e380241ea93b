"""Constant values of the language (int, bool, set, list, range) as text, and name suggestions.

One place formats a value for every message, drawing and report, so the CLI, the checker, the analysis and
`Pattern` print a parameter the same way; one place suggests the closest name for a typo.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["format_value", "did_you_mean"]


def format_value(value: object) -> str:
    """A constant as pattern text: 8, True, {0, 1}, [1, 2], range(0, 8), range(0, 8, 2)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (frozenset, set)):
        return "{" + ", ".join(map(str, sorted(value))) + "}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, range):
        step = f", {value.step}" if value.step != 1 else ""
        return f"range({value.start}, {value.stop}{step})"
    return str(value)


def did_you_mean(name: str, candidates: Iterable[str], what: str = "") -> str:
    """' (did you mean <what>'x'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {what}'{close[0]}'?)" if close else ""
