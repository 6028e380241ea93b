"""Constant values of the language (int, bool, set, list, range): their types, Python forms, text, suggestions.

One place formats a value for every message, drawing and report, so the CLI, the checker, the analysis and
`Pattern` print a parameter the same way; one place suggests the closest name for a typo; one place says
which Python values a parameter of each type accepts.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Union

from ..errors import ParameterError

__all__ = ["Value", "MAX_COLLECTION", "format_value", "did_you_mean", "type_of_value", "python_value", "length"]

Value = Union[int, bool, frozenset, tuple, range]

MAX_COLLECTION = 1 << 16  # elements in one set/list/range constant; keeps a typo from eating memory


def length(value) -> int:
    """len() of a set, list or range -- also of a range longer than sys.maxsize (len() overflows there)."""
    try:
        return len(value)
    except OverflowError:
        r = value
        return max(0, (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step)


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


def type_of_value(value: object) -> str:
    """The language type of a constant: int, bool, set, list or range."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, frozenset):
        return "set"
    if isinstance(value, tuple):
        return "list"
    if isinstance(value, range):
        return "range"
    raise TypeError(value)


def python_value(value: object, type_: str, where: str) -> Value:
    """Validate and normalise a parameter value given from Python.

    Args:
        value: what the user passed.
        type_: the declared parameter type (int, bool, set, list).
        where: how to name the parameter in an error, e.g. "parameter 'window' of 'sliding_window'".
    """
    def bad(expected: str) -> ParameterError:
        return ParameterError(f"{where} expects {expected}, got {value!r} ({type(value).__name__})")

    def as_int(x) -> int:
        # A bool is not an int here -- nor a numpy bool or a bool tensor (torch.tensor(True).__index__() is 1).
        if (isinstance(x, bool) or not hasattr(x, "__index__")
                or str(getattr(x, "dtype", "")) in ("bool", "torch.bool")):
            raise bad(f"{type_} of integers" if type_ in ("set", "list") else "an int")
        return int(x.__index__())

    if type_ == "int":
        return as_int(value)
    if type_ == "bool":
        # numpy's bool scalar is numpy.bool_ before numpy 2 and numpy.bool from numpy 2 on.
        if isinstance(value, bool) or (type(value).__module__ == "numpy"
                                       and type(value).__name__ in ("bool_", "bool")):
            return bool(value)
        raise bad("a bool (True or False)")
    if type_ in ("set", "list"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise bad(f"a {type_} of integers")
        if hasattr(value, "__len__") and length(value) > MAX_COLLECTION:   # before iterating range(10**12)
            raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported")
        items = [as_int(x) for x in value]
        if len(items) > MAX_COLLECTION:
            raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported")
        return frozenset(items) if type_ == "set" else tuple(items)
    raise ParameterError(f"{where}: unknown type {type_!r}")
