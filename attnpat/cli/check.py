"""`attnpat check`: parse and check pattern files (default: the whole library)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from ..compiler import nodes as N
from ..compiler.values import format_value
from ..errors import ParameterError, PatternError, RequirementError
from ..library import library_module, locate, module_name, pick_pattern, split_spec
from ..pattern import Pattern
from .arguments import Command, bind, error, parse_sets


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE_OR_NAME",
                   help="a .attn file, a directory of them, or a library file/pattern name, optionally "
                        "FILE:PATTERN (default: the whole library)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="a parameter value for every checked pattern that declares NAME (repeatable)")


# Placeholder values for parameters without a default, tried in order when no --set gives one.
_PLACEHOLDERS = {
    "int": (1, 2, 4, 8, 16, 64),
    "bool": (False, True),
    "set": (frozenset({0}), frozenset({0, 1})),
    "list": ((1,), (1, 2), (1, 2, 4, 8)),
}


@dataclass(frozen=True)
class _Outcome:
    error: PatternError | None = None
    placeholders: dict[str, object] | None = None
    unchecked: tuple[str, ...] = ()


def _check_one(module: N.Module, definition: N.PatternDef) -> _Outcome:
    missing = [p for p in definition.params if p.default is None]
    if not missing:
        try:
            pattern = Pattern(module, definition.name)
            pattern.canonical   # the simplifier proves a pattern empty (EmptyPatternError)
        except PatternError as exc:
            return _Outcome(error=exc)
        return _Outcome()
    # Parameters without a default: try placeholder values until one passes. If every attempt fails only
    # with requirement or parameter errors, the placeholders never got past the `require` clauses (which
    # are judged before the mask): report the pattern as not fully checked rather than as wrong.
    attempts = max(len(_PLACEHOLDERS[p.type]) for p in missing)
    errors = []
    for i in range(attempts):
        trial = {p.name: _PLACEHOLDERS[p.type][min(i, len(_PLACEHOLDERS[p.type]) - 1)] for p in missing}
        try:
            Pattern(module, definition.name, trial)
        except PatternError as exc:
            errors.append(exc)
            continue
        return _Outcome(placeholders=trial)
    real = [e for e in errors if not isinstance(e, (RequirementError, ParameterError))]
    if real:
        return _Outcome(error=real[0])
    return _Outcome(unchecked=tuple(p.name for p in missing))


def _fail(message: str):
    raise PatternError(message)


def _library_stems() -> list[str]:
    root = resources.files("attnpat.patterns")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".attn"))


def _targets(names: list[str]) -> list[tuple[str, Callable[[], tuple[N.Module, str | None]]]]:
    """(label, loader) per file to check; loader returns the module and the one pattern asked for, if any."""
    if not names:
        return [(f"patterns/{stem}.attn", lambda stem=stem: (library_module(stem), None))
                for stem in _library_stems()]
    out = []
    for name in names:
        if os.path.isdir(name):
            files = sorted(f for f in os.listdir(name) if f.endswith(".attn"))
            if not files:
                out.append((name, lambda name=name: _fail(f"'{name}' is a directory with no .attn files")))
            for f in files:
                path = os.path.join(name, f)
                out.append((path, lambda path=path: (locate(path)[0], None)))
            continue

        def load(name=name):
            spec, named = split_spec(name)
            module, stem = locate(spec)
            if named is not None:
                pick_pattern(module, stem, named)
            return module, named
        out.append((name, load))
    return out


def _run(args: argparse.Namespace) -> int:
    settings = parse_sets(args.set)
    used: set[str] = set()
    failed = 0
    for label, load in _targets(args.files):
        try:
            module, only = load()
        except PatternError as exc:
            error(str(exc))
            failed += 1
            continue
        label = module_name(module) if module.patterns else label
        defs = [p for p in module.patterns if only is None or p.name == only]
        if not defs:
            error(f"{label}: error: the file defines no pattern")
            failed += 1
            continue
        messages: list[str] = []
        notes: list[str] = []
        bad = 0
        for d in defs:
            used.update(p.name for p in d.params if p.name in settings)
            outcome = _check_one(*bind(module, d, settings, strict=False))
            if outcome.error is not None:
                bad += 1
                if str(outcome.error) not in messages:
                    messages.append(str(outcome.error))
            elif outcome.placeholders:
                shown = ", ".join(f"{k}={format_value(v)}" for k, v in outcome.placeholders.items())
                notes.append(f"{d.name} checked with placeholder values {shown}")
            elif outcome.unchecked:
                names = ", ".join(outcome.unchecked)
                notes.append(f"{d.name} not fully checked: no default for {names} and no placeholder value "
                             f"satisfies its 'require' clauses (give values with --set "
                             f"{outcome.unchecked[0]}=VALUE)")
        count = f"{len(defs)} pattern{'s' if len(defs) != 1 else ''}"
        if bad:
            failed += 1
            for m in messages:
                error(m)
            error(f"{label}: {bad} of {count} failed" + "".join(f"; {n}" for n in notes))
        else:
            extra = "".join(f"; {n}" for n in notes)
            print(f"{label}: ok ({count}{extra})")
    for name, s in settings.items():
        if name not in used:
            error(str(ParameterError(f"no checked pattern has a parameter '{name}'", s.name_span)))
            failed += 1
    return 1 if failed else 0


COMMAND = Command("check", "parse and check pattern files (default: the whole library)", _configure, _run)
