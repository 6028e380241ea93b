"""Constant values of the language (int, bool, set, list, range): their types, Python forms, text, suggestions.

One place formats a value for every message, drawing and report, so the CLI, the checker, the analysis and
`Pattern` print a parameter the same way; one place suggests the closest name for a typo; one place says
which Python values a parameter of each type accepts.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Union

from ..errors import ParameterError

__all__ = ["Value", "MAX_COLLECTION", "MAX_BITS", "describe", "format_value", "did_you_mean", "type_of_value",
           "python_value", "length"]

Value = Union[int, bool, float, frozenset, tuple, range]

MAX_COLLECTION = 1 << 16  # elements in one set/list/range constant; keeps a typo from eating memory
MAX_BITS = 1024           # magnitude of any constant, given or folded (semantics.FOLD_BITS): work stays small


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
        return "{" + ", ".join(map(format_value, sorted(value))) + "}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(format_value, value)) + "]"
    if isinstance(value, range):
        step = f", {format_value(value.step)}" if value.step != 1 else ""
        return f"range({format_value(value.start)}, {format_value(value.stop)}{step})"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int) and abs(value).bit_length() > 200:
        # a huge folded value: its digits would swamp the message (and str() refuses over 4300 digits)
        digits = int(abs(value).bit_length() * 0.30103) + 1
        return f"{'-' if value < 0 else ''}<a number of about {digits} digits>"
    return str(value)


def describe(value: object) -> str:
    """Any value a user passed, for a message: constants as format_value prints them (huge ints
    shortened), anything else as a repr cut to 80 characters."""
    if isinstance(value, (bool, int, float, frozenset, set, tuple, list, range)):
        try:
            return format_value(value)
        except (TypeError, ValueError):
            pass
    text = repr(value) if not isinstance(value, int) else format_value(int(value))
    return text if len(text) <= 80 else text[:77] + "..."


def did_you_mean(name: str, candidates: Iterable[str], what: str = "") -> str:
    """' (did you mean <what>'x'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {what}'{close[0]}'?)" if close else ""


def type_of_value(value: object) -> str:
    """The language type of a constant: int, bool, set, list or range."""
    for cls, name in ((bool, "bool"), (int, "int"), (float, "float"), (frozenset, "set"), (tuple, "list"),
                      (range, "range")):   # bool before int: a bool is an int in Python
        if isinstance(value, cls):
            return name
    raise TypeError(value)


def python_value(value: object, type_: str, where: str) -> Value:
    """Validate and normalise a parameter value given from Python.

    Args:
        value: what the user passed.
        type_: the declared parameter type (int, bool, set, list).
        where: how to name the parameter in an error, e.g. "parameter 'window' of 'sliding_window'".
    """
    def bad(expected: str) -> ParameterError:
        return ParameterError(f"{where} expects {expected}, got {describe(value)} ({type(value).__name__})")

    def as_int(x) -> int:
        # A bool is not an int here -- nor a numpy bool or a bool tensor (torch.tensor(True).__index__() is 1).
        if (isinstance(x, bool) or not hasattr(x, "__index__")
                or str(getattr(x, "dtype", "")) in ("bool", "torch.bool")):
            raise bad(f"{type_} of integers" if type_ in ("set", "list") else "an int")
        return int(x.__index__())

    def as_float(x) -> float:
        if isinstance(x, bool) or not (isinstance(x, (int, float)) or _is_float(x) or hasattr(x, "__index__")):
            raise bad("a float")
        try:
            v = float(x)
        except OverflowError:   # an int beyond the floats
            v = float("inf")
        if v != v or v in (float("inf"), float("-inf")):
            raise ParameterError(f"{where}: {describe(x)} is not a finite number")
        return v

    if type_ == "int":
        v = as_int(value)
        if abs(v).bit_length() > MAX_BITS:
            raise ParameterError(f"{where}: {describe(v)} is too large (at most 2**{MAX_BITS} in magnitude)")
        return v
    if type_ == "float":
        return as_float(value)
    if type_ == "bool":
        # numpy's bool scalar is numpy.bool_ before numpy 2 and numpy.bool from numpy 2 on.
        if isinstance(value, bool) or (type(value).__module__ == "numpy"
                                       and type(value).__name__ in ("bool_", "bool")):
            return bool(value)
        raise bad("a bool (True or False)")
    if type_ in ("set", "list"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise bad(f"a {type_} of integers")
        if type_ == "set" and isinstance(value, range) and length(value) > MAX_COLLECTION:
            return value   # symbolic: never materialised (compiler/check.py keeps it so)
        if hasattr(value, "__len__") and length(value) > MAX_COLLECTION:   # before iterating range(10**12)
            raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported")
        # a list may hold floats (per-head values of score terms); a set holds integers
        items = [as_float(x) if type_ == "list" and _is_float(x) else as_int(x) for x in value]
        if any(isinstance(x, int) and abs(x).bit_length() > MAX_BITS for x in items):
            raise ParameterError(f"{where}: an element is too large (at most 2**{MAX_BITS} in magnitude)")
        if len(items) > MAX_COLLECTION:
            raise ParameterError(f"{where}: at most {MAX_COLLECTION} elements are supported")
        return frozenset(items) if type_ == "set" else tuple(items)
    raise ParameterError(f"{where}: unknown type {type_!r}")


def _is_float(x) -> bool:
    """A Python float or a numpy / torch floating scalar."""
    return isinstance(x, float) or "float" in str(getattr(x, "dtype", ""))
