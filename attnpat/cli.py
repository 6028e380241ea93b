"""The `attnpat` command line.

    attnpat check [FILE_OR_NAME ...] [--set NAME=VALUE ...]   parse and check patterns (default: the library)
    attnpat show FILE_OR_NAME[:PATTERN] [options]             draw a pattern's mask in the terminal (or a PNG)
    attnpat explain FILE_OR_NAME[:PATTERN] --q-len N [...]    density, tiles, FLOPs, look-back, receptive field
    attnpat compile FILE_OR_NAME[:PATTERN] [--emit]           the kernel plan and cache entry, or its code
    attnpat list [FILE ...]                                   list patterns with parameters and a summary

Every subcommand is one function registered with :func:`command` in the table ``COMMANDS``: it adds its
arguments to an argparse sub-parser and returns an exit status. Mistakes in patterns, parameters or inputs
are reported as compiler-style messages on stderr (exit status 1), never as a traceback; bad usage exits
with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Iterable

from .compiler import nodes as N
from .compiler.check import type_of_value
from .compiler.parse import parse_expr
from .compiler.unparse import unparse_expr
from .errors import ArgumentError, InputError, ParameterError, PatternError, RequirementError, Source, Span
from .library import library_module, locate, module_name, pick_pattern, resolve_library, split_spec
from .pattern import Pattern

__all__ = ["main", "COMMANDS", "command", "constant_value", "parse_set", "parse_input", "describe_value",
           "summary"]

PROG = "attnpat"
DEFAULT_WIDTH = 96     # terminal columns for the cells of a drawing (not counting the row labels)
DEFAULT_HEIGHT = 64    # terminal rows for the cells of a drawing
DEFAULT_LEN = 32


# -- the command table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """One subcommand: `configure` adds its arguments, `run` does the work and returns an exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: decorate `run(args) -> int` with its name, one-line help and argument setup."""
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = Command(name, help, configure, run)
        return run
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="attnpat: a compiler for attention sparsity patterns.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):   # e.g. LANG=C: print '?' rather than fail on a '█' or '·'
        if not _unicode_ok(stream) and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
    try:
        return args.run(args)
    except PatternError as exc:
        _error(str(exc))
        return 1
    except BrokenPipeError:     # `attnpat list | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    sys.stdout.flush()
    print(message, file=sys.stderr)


# -- constant values on the command line --------------------------------------------------------------------

_WRAPPER_PREFIX = "pattern _p():"
_WRAPPER_COLUMN = 9   # parse_expr wraps the text as "    mask TEXT": TEXT starts in column 10 of line 2


def _user_span(span: Span | None, source: Source, offset: int) -> Span | None:
    """Move a span of parse_expr's output (which may point into its wrapper text) onto `source`."""
    if span is None:
        return None
    line, col, end_line, end_col = span.line, span.column, span.end_line, span.end_column
    if span.source.text.startswith(_WRAPPER_PREFIX):
        if line != 2:
            return Span(source, 1, 1 + offset, 1, len(source.text) + 1)
        col -= _WRAPPER_COLUMN
        end_col = end_col - _WRAPPER_COLUMN if end_line == 2 else len(source.text) + 1 - offset
    elif end_line != line:
        end_col = len(source.text) + 1 - offset
    return Span(source, 1, col + offset, 1, end_col + offset)


def describe_value(value: object) -> str:
    """A parameter value as pattern text: 8, True, {0, 1}, [1, 2], range(0, 8, 2)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (frozenset, set)):
        return "{" + ", ".join(map(str, sorted(value))) + "}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, range):
        return f"range({value.start}, {value.stop}, {value.step})" if value.step != 1 else \
            f"range({value.start}, {value.stop})"
    return str(value)


def _kind(value: object) -> str:
    try:
        return type_of_value(value)
    except TypeError:
        return type(value).__name__


_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "//": lambda a, b: a // b, "%": lambda a, b: a % b}
_VALUE_HINT = "a value is a number, True, False, a set {1, 2}, a list [1, 2] or range(...)"
_MAX_ELEMENTS = 1 << 16


def constant_value(expr: N.Expr, span_of: Callable[[N.Expr], Span | None] = lambda e: e.span):
    """Evaluate a literal expression from the command line to a Python value.

    Accepts integers (with + - * // % and unary minus), True/False, sets {..}, lists [..] and range(...).
    Anything else -- a name, a comparison, a call -- raises ParameterError pointing at it.

    Returns:
        int, bool, frozenset of ints, tuple of ints, or range.
    """
    def fail(message: str, e: N.Expr) -> ParameterError:
        return ParameterError(message, span_of(e))

    def integer(e: N.Expr, what: str) -> int:
        v = value(e)
        if isinstance(v, bool) or not isinstance(v, int):
            raise fail(f"{what} must be an integer, not {_kind(v)}", e)
        return v

    def value(e: N.Expr):
        if isinstance(e, N.Num):
            return e.value
        if isinstance(e, N.BoolLit):
            return e.value
        if isinstance(e, N.Unary):
            if e.op == "-":
                return -integer(e.operand, "the operand of '-'")
            v = value(e.operand)
            if not isinstance(v, bool):
                raise fail(f"the operand of 'not' must be True or False, not {_kind(v)}", e.operand)
            return not v
        if isinstance(e, N.BinOp):
            a = integer(e.left, f"the left operand of '{e.op}'")
            b = integer(e.right, f"the right operand of '{e.op}'")
            if e.op in ("//", "%") and b == 0:
                raise fail("division by zero", e.right)
            return _ARITH[e.op](a, b)
        if isinstance(e, (N.SetLit, N.ListLit)):
            kind = "set" if isinstance(e, N.SetLit) else "list"
            if len(e.elts) > _MAX_ELEMENTS:
                raise fail(f"a {kind} may hold at most {_MAX_ELEMENTS} elements", e)
            items = [integer(x, f"a {kind} element") for x in e.elts]
            return frozenset(items) if kind == "set" else tuple(items)
        if isinstance(e, N.Call) and e.func == "range":
            if e.kwargs or not 1 <= len(e.args) <= 3:
                raise fail(f"range() takes 1 to 3 arguments, {len(e.args) + len(e.kwargs)} given", e)
            args = [integer(a, "a range() argument") for a in e.args]
            if len(args) == 3 and args[2] == 0:
                raise fail("range() step must not be zero", e.args[2])
            return range(*args)
        if isinstance(e, N.Name):
            raise fail(f"'{e.id}' is not a constant; {_VALUE_HINT}", e)
        raise fail(f"'{unparse_expr(e)}' is not a constant value; {_VALUE_HINT}", e)

    return value(expr)


@dataclass(frozen=True)
class Setting:
    """One `--set NAME=VALUE`: the value, and spans of the name and of the value for error messages."""

    name: str
    value: object
    name_span: Span
    value_span: Span


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_set(text: str) -> Setting:
    """Parse one `--set NAME=VALUE` argument (VALUE is a constant pattern expression)."""
    source = Source("--set", text)
    name, sep, rest = text.partition("=")
    if not sep:
        raise ParameterError(f"--set expects NAME=VALUE, e.g. --set window=8; got '{text}'",
                             Span(source, 1, 1, 1, len(text) + 1))
    stripped = name.strip()
    lead = len(name) - len(name.lstrip())
    name_span = Span(source, 1, lead + 1, 1, lead + len(stripped) + 1)
    if not _NAME_RE.match(stripped):
        raise ParameterError(f"'{stripped}' is not a parameter name", name_span if stripped else
                             Span(source, 1, 1, 1, 2))
    offset = len(name) + 1
    if not rest.strip():
        raise ParameterError(f"--set {stripped}= needs a value; {_VALUE_HINT}",
                             Span(source, 1, offset + 1, 1, offset + 2))
    try:
        expr = parse_expr(rest, "--set")
    except PatternError as exc:
        raise type(exc)(exc.message, _user_span(exc.span, source, offset) if exc.span else None) from None
    value = constant_value(expr, lambda e: _user_span(e.span, source, offset))
    lead_v = len(rest) - len(rest.lstrip())
    value_span = Span(source, 1, offset + lead_v + 1, 1, offset + len(rest.rstrip()) + 1)
    return Setting(stripped, value, name_span, value_span)


def _parse_sets(texts: Iterable[str] | None) -> dict[str, Setting]:
    out: dict[str, Setting] = {}
    for text in texts or ():
        s = parse_set(text)
        if s.name in out:
            raise ParameterError(f"parameter '{s.name}' is set twice", s.name_span)
        out[s.name] = s
    return out


def _coerce(setting: Setting, param: N.Param, pattern: str):
    """Check a --set value against the declared parameter type; return the value to bind."""
    v, t = setting.value, param.type
    got = _kind(v)
    ok = (t == got) or (t == "set" and got in ("list", "range")) or (t == "list" and got == "range")
    if not ok:
        raise ParameterError(f"parameter '{param.name}' of pattern '{pattern}' is {t}, got {got} "
                             f"{describe_value(v)}", setting.value_span)
    if t == "set":
        return frozenset(v)
    if t == "list":
        return tuple(v)
    return v


def _bind(definition: N.PatternDef, settings: dict[str, Setting], *, strict: bool = True) -> dict[str, object]:
    """The --set values that apply to `definition`; with strict, an unknown name is an error."""
    declared = {p.name: p for p in definition.params}
    out = {}
    for name, s in settings.items():
        if name not in declared:
            if not strict:
                continue
            names = list(declared)
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else (
                f"; it has {', '.join(names)}" if names else "; it has no parameters")
            raise ParameterError(f"pattern '{definition.name}' has no parameter '{name}'{hint}", s.name_span)
        out[name] = _coerce(s, declared[name], definition.name)
    return out


# -- runtime inputs on the command line ------------------------------------------------------------------

_INT_RE = re.compile(r"\s*(-?\d+)\s*(?:x\s*(\d+)\s*)?\Z")


def parse_input(text: str) -> tuple[str, list[list[int]]]:
    """Parse `--input NAME=V1,V2,...`: returns (NAME, rows).

    `VxN` repeats V N times (`0x4,1x4` = `0,0,0,0,1,1,1,1`); `/` separates the rows of a [batch, length]
    input (`0,0,1/0,1,1`).
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    usage = f"write e.g. --input {name or 'doc'}=0,0,0,1,1,1 (or {name or 'doc'}=0x3,1x3)"
    if not sep or not _NAME_RE.match(name):
        raise InputError(f"--input expects NAME=V1,V2,...; got '{text}'; {usage}")
    rows = []
    for row_text in rest.split("/"):
        row: list[int] = []
        for item in row_text.split(","):
            m = _INT_RE.match(item)
            if m is None:
                raise InputError(f"--input {name}: '{item.strip()}' is not an integer (or VALUExCOUNT); {usage}")
            count = 1 if m.group(2) is None else int(m.group(2))
            if count > 1 << 24:
                raise InputError(f"--input {name}: repeat count {count} is too large")
            row.extend([int(m.group(1))] * count)
        rows.append(row)
    if len({len(r) for r in rows}) > 1:
        raise InputError(f"--input {name}: the rows separated by '/' have different lengths "
                         f"({', '.join(str(len(r)) for r in rows)})")
    return name, rows


# -- shared helpers --------------------------------------------------------------------------------------

def _open_spec(spec_text: str) -> tuple[N.Module, str]:
    """FILE_OR_NAME[:PATTERN] -> (module, chosen pattern name)."""
    spec, named = split_spec(spec_text)
    module, stem = locate(spec)
    return module, pick_pattern(module, stem, named)


def _definition(module: N.Module, name: str) -> N.PatternDef:
    return next(p for p in module.patterns if p.name == name)


def _signature(p: N.PatternDef) -> str:
    params = ", ".join(f"{x.name}: {x.type}" + ("" if x.default is None else f" = {unparse_expr(x.default)}")
                       for x in p.params)
    return f"{p.name}({params})"


def _uses(expr: N.Expr) -> set[str]:
    out: set[str] = set()

    def walk(x):
        if isinstance(x, N.Name):
            out.add(x.id)
        elif isinstance(x, tuple):
            for y in x:
                walk(y)
        elif hasattr(x, "__dataclass_fields__"):
            for f in x.__dataclass_fields__:
                if f != "span":
                    walk(getattr(x, f))
    walk(expr)
    return out


def _library_stems() -> list[str]:
    root = resources.files("attnpat.patterns")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".attn"))


# -- attnpat check ---------------------------------------------------------------------------------------

def _configure_check(p: argparse.ArgumentParser) -> None:
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


@dataclass
class _Outcome:
    error: PatternError | None = None
    placeholders: dict[str, object] | None = None
    unchecked: tuple[str, ...] = ()


def _check_one(module: N.Module, definition: N.PatternDef, params: dict[str, object]) -> _Outcome:
    missing = [p for p in definition.params if p.default is None and p.name not in params]
    if not missing:
        try:
            pattern = Pattern(module, definition.name, params)
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
            Pattern(module, definition.name, {**params, **trial})
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


def _check_targets(names: list[str]) -> list[tuple[str, Callable[[], tuple[N.Module, str | None]]]]:
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


@command("check", "parse and check pattern files (default: the whole library)", _configure_check)
def cmd_check(args: argparse.Namespace) -> int:
    settings = _parse_sets(args.set)
    used: set[str] = set()
    failed = 0
    for label, load in _check_targets(args.files):
        try:
            module, only = load()
        except PatternError as exc:
            _error(str(exc))
            failed += 1
            continue
        label = module_name(module) if module.patterns else label
        defs = [p for p in module.patterns if only is None or p.name == only]
        if not defs:
            _error(f"{label}: error: the file defines no pattern")
            failed += 1
            continue
        messages: list[str] = []
        notes: list[str] = []
        bad = 0
        for d in defs:
            params = _bind(d, settings, strict=False)
            used.update(params)
            outcome = _check_one(module, d, params)
            if outcome.error is not None:
                bad += 1
                if str(outcome.error) not in messages:
                    messages.append(str(outcome.error))
            elif outcome.placeholders:
                shown = ", ".join(f"{k}={describe_value(v)}" for k, v in outcome.placeholders.items())
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
                _error(m)
            _error(f"{label}: {bad} of {count} failed" + "".join(f"; {n}" for n in notes))
        else:
            extra = "".join(f"; {n}" for n in notes)
            print(f"{label}: ok ({count}{extra})")
    for name, s in settings.items():
        if name not in used:
            _error(str(ParameterError(f"no checked pattern has a parameter '{name}'", s.name_span)))
            failed += 1
    return 1 if failed else 0


# -- attnpat show ----------------------------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def _pattern_from_args(args: argparse.Namespace) -> Pattern:
    """The pattern named by args.spec with the --set values bound (every parameter must get a value)."""
    module, name = _open_spec(args.spec)
    definition = _definition(module, name)
    params = _bind(definition, _parse_sets(args.set))
    for p in definition.params:
        if p.default is None and p.name not in params:
            raise ParameterError(f"parameter '{p.name}' of pattern '{name}' has no default; give a value with "
                                 f"--set {p.name}=VALUE", p.span)
    return Pattern(module, name, params)


def _add_spec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="FILE_OR_NAME[:PATTERN]",
                   help="a .attn file or a library file/pattern name, optionally with :PATTERN")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="set a parameter: a number, True/False, {0, 1}, [1, 2] or range(...) (repeatable)")


_INPUT_HELP = ("a runtime input: one integer per key (int[k]) or query (int[q]); VxN repeats V N times; "
               "'/' separates rows of a [batch, length] input (repeatable)")


def _configure_show(p: argparse.ArgumentParser) -> None:
    _add_spec_arguments(p)
    p.add_argument("--q-len", type=_positive, metavar="N",
                   help=f"queries (rows); default: kv_len, or {DEFAULT_LEN}")
    p.add_argument("--kv-len", type=_positive, metavar="N",
                   help=f"keys (columns); default: q_len, or {DEFAULT_LEN}")
    p.add_argument("--q-offset", type=_integer, metavar="N",
                   help="absolute position of query row 0 (default: kv_len - q_len, i.e. bottom-right aligned)")
    p.add_argument("--batch-index", type=_non_negative, default=0, metavar="B", help="batch element b (default 0)")
    p.add_argument("--head", type=_non_negative, default=0, metavar="H", help="head h (default 0)")
    p.add_argument("--input", action="append", metavar="NAME=V1,V2,...", default=[], help=_INPUT_HELP)
    p.add_argument("--ascii", action="store_true", help="draw with x . + instead of █ · ▒")
    p.add_argument("--width", type=_positive, metavar="COLS",
                   help=f"at most this many key columns before downsampling (default {DEFAULT_WIDTH}, "
                        "or less on a narrow terminal)")
    p.add_argument("--height", type=_positive, default=DEFAULT_HEIGHT, metavar="ROWS",
                   help=f"at most this many query rows before downsampling (default {DEFAULT_HEIGHT})")
    p.add_argument("--png", metavar="OUT",
                   help="also write the mask as a PNG image to OUT: one pixel square per element up to 1024 "
                        "positions, else per tile, read from the closed-form block mask (any length)")


def _unicode_ok(stream) -> bool:
    try:
        "█▒·".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _collect_inputs(pattern: Pattern, texts: list[str], q_len: int, kv_len: int
                    ) -> tuple[dict[str, list[list[int]]], int]:
    given: dict[str, list[list[int]]] = {}
    for text in texts:
        name, rows = parse_input(text)
        if name in given:
            raise InputError(f"--input {name} is given twice")
        given[name] = rows
    declared = pattern.inputs
    for name in given:
        if name not in declared:
            have = ", ".join(declared) or "none"
            raise InputError(f"pattern '{pattern.name}' has no runtime input '{name}' (its inputs: {have})")
    for name, axis in declared.items():
        if name not in given:
            length = kv_len if axis == "k" else q_len
            half = length // 2
            example = f"0x{half},1x{length - half}" if half else "0"
            raise InputError(
                f"pattern '{pattern.name}' needs runtime input '{name}' (int[{axis}]: one integer per "
                f"{'key' if axis == 'k' else 'query'}, {length} values); pass it with --input {name}=V1,V2,... "
                f"e.g. --input {name}={example}")
    for name, rows in given.items():
        axis = declared[name]
        length = kv_len if axis == "k" else q_len
        if len(rows[0]) != length:
            raise InputError(f"--input {name} has {len(rows[0])} values, but '{name}' is int[{axis}]: one integer "
                             f"per {'key' if axis == 'k' else 'query'}, {length} values "
                             f"({'kv_len' if axis == 'k' else 'q_len'} = {length})")
    batches = {len(rows) for rows in given.values() if len(rows) > 1}
    if len(batches) > 1:
        raise InputError("runtime inputs given for different batch sizes: "
                         + ", ".join(f"{n} has {len(r)} rows" for n, r in given.items()))
    return given, (batches.pop() if batches else 1)


# Up to this many (query, key) pairs a downsampled drawing evaluates the dense mask; above it, it reads the
# closed-form block mask with the drawing's cells as tiles (no N^2 work, no size cap).
_DENSE_DRAW_LIMIT = 1 << 20


def _cells(pattern: Pattern, q_len: int, kv_len: int, row_step: int, col_step: int, common: dict):
    from . import draw
    if (row_step == 1 and col_step == 1) or q_len * kv_len <= _DENSE_DRAW_LIMIT:
        return draw.mask_cells(pattern, q_len, kv_len, row_step=row_step, col_step=col_step, **common)
    return draw.tile_cells(pattern, q_len, kv_len, row_step=row_step, col_step=col_step, **common)


@command("show", "draw a pattern's mask in the terminal (rows: queries, columns: keys)", _configure_show)
def cmd_show(args: argparse.Namespace) -> int:
    from . import draw

    pattern = _pattern_from_args(args)
    name = pattern.name
    q_len = args.q_len or args.kv_len or DEFAULT_LEN
    kv_len = args.kv_len or args.q_len or DEFAULT_LEN
    inputs, input_batch = _collect_inputs(pattern, args.input, q_len, kv_len)
    if input_batch > 1 and args.batch_index >= input_batch:
        raise InputError(f"--batch-index {args.batch_index} is out of range: the runtime inputs have "
                         f"{input_batch} rows (batch elements)")
    batch = input_batch if input_batch > 1 else args.batch_index + 1

    ascii_only = args.ascii or not _unicode_ok(sys.stdout)
    width = args.width
    if width is None:
        width = DEFAULT_WIDTH
        if sys.stdout.isatty():
            columns = shutil.get_terminal_size((DEFAULT_WIDTH + 10, 24)).columns
            width = max(16, min(width, columns - 10))
    row_step = draw.steps_for(q_len, args.height)
    col_step = draw.steps_for(kv_len, width)
    common = dict(batch_index=args.batch_index, head=args.head, batch=batch, q_offset=args.q_offset,
                  inputs=inputs)
    png_grid = png_scale = None
    if args.png:
        # The image is at least as fine as the terminal (all steps are powers of two): compute it once, at
        # the image's resolution, and pool that for the terminal.
        png_row, png_col, png_scale = draw.png_layout(q_len, kv_len)
        png_grid = _cells(pattern, q_len, kv_len, png_row, png_col, common)
    if png_grid is not None and row_step % png_grid.row_step == 0 and col_step % png_grid.col_step == 0:
        grid = png_grid.coarsen(row_step, col_step)
    else:
        grid = _cells(pattern, q_len, kv_len, row_step, col_step, common)

    used = _uses(pattern.checked.expr)
    where = []
    if "b" in used or args.batch_index or input_batch > 1:
        where.append(f"b={args.batch_index}")
    if "h" in used or args.head:
        where.append(f"h={args.head}")
    params_text = ", ".join(f"{k}={describe_value(v)}" for k, v in pattern.params.items())
    header = f"{name}({params_text})  q_len={q_len} kv_len={kv_len}"
    if where:
        header += "  " + " ".join(where)
    if grid.exact:
        header += f"  density {100 * grid.density:.1f}% ({grid.allowed} of {grid.total} pairs)"
    else:
        lo, hi = grid.allowed_range
        header += (f"  density {100 * lo / grid.total:.1f}% to {100 * hi / grid.total:.1f}% (tile level: too "
                   f"many partial tiles to count; 'attnpat explain' gives the exact value)")
    print(header)
    expr = pattern.expression()
    print(f"mask {expr if len(expr) <= 300 else expr[:297] + '...'}")
    for text in args.input:
        print(f"input {text.strip()}")
    if args.q_offset is not None:
        print(f"query row i is at position q = i + {args.q_offset} (--q-offset)")
    elif q_len != kv_len:
        print(f"query row i is at position q = i + {grid.q_start} (kv_len - q_len: aligned bottom-right)")
    print(draw.legend(grid, ascii=ascii_only))
    for line in draw.render_text(grid, ascii=ascii_only):
        print(line)

    if png_grid is not None:
        try:
            w, h = draw.write_png(args.png, png_grid, png_scale)
        except OSError as exc:
            raise ArgumentError(f"cannot write '{args.png}': {exc.strerror or exc}") from None
        unit = "element" if not png_grid.downsampled else f"{png_grid.row_step}x{png_grid.col_step} tile"
        print(f"wrote {args.png}: {w}x{h} pixels, {png_scale}x{png_scale} per {unit}")
    return 0


# -- attnpat explain -------------------------------------------------------------------------------------

def _configure_explain(p: argparse.ArgumentParser) -> None:
    _add_spec_arguments(p)
    p.add_argument("--q-len", type=_positive, metavar="N", required=True, help="queries (rows)")
    p.add_argument("--kv-len", type=_positive, metavar="M", help="keys (columns); default: q_len")
    p.add_argument("--q-offset", type=_integer, metavar="N",
                   help="absolute position of query row 0 (default: kv_len - q_len, i.e. bottom-right aligned)")
    p.add_argument("--layers", type=_positive, default=1, metavar="L",
                   help="stacked layers for the receptive field (default 1)")
    p.add_argument("--heads", type=_positive, default=1, metavar="H",
                   help="heads (counts are summed over heads; per-head patterns differ per head; default 1)")
    p.add_argument("--batch", type=_positive, metavar="B",
                   help="batch size (default: the rows of the runtime inputs, or 1)")
    p.add_argument("--head-dim", type=_positive, default=128, metavar="D",
                   help="head dimension for the FLOP counts (4 * D per computed pair; default 128)")
    p.add_argument("--block-q", type=_positive, default=128, metavar="BQ",
                   help="query rows per tile (default 128, the forward kernel's)")
    p.add_argument("--block-k", type=_positive, default=64, metavar="BK",
                   help="keys per tile (default 64, the forward kernel's)")
    p.add_argument("--input", action="append", metavar="NAME=V1,V2,...", default=[], help=_INPUT_HELP)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


@command("explain", "what a pattern costs and sees at one shape: density, tiles, FLOPs, look-back, "
                    "empty rows, receptive field", _configure_explain)
def cmd_explain(args: argparse.Namespace) -> int:
    import json
    import time

    from .compiler.analysis import analyze

    pattern = _pattern_from_args(args)
    q_len = args.q_len
    kv_len = args.kv_len or q_len
    inputs, input_batch = _collect_inputs(pattern, args.input, q_len, kv_len)
    batch = args.batch or input_batch
    if input_batch > 1 and batch != input_batch:
        raise InputError(f"--batch {batch} does not match the runtime inputs, which have {input_batch} rows "
                         f"(batch elements)")
    pattern.canonical   # simplify first (sympy, once per pattern): the time below is the analysis's own
    start = time.perf_counter()
    a = analyze(pattern, q_len, kv_len, heads=args.heads, batch=batch, q_offset=args.q_offset,
                layers=args.layers, block_q=args.block_q, block_k=args.block_k, head_dim=args.head_dim,
                **inputs)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(a.to_dict(), indent=2))
        return 0
    print(a.report())
    for text in args.input:
        print(f"  input {text.strip()}")
    print(f"(analysed in {elapsed:.2f} s; {a.evaluated:,} points evaluated one by one, inside partial tiles)")
    return 0


# -- attnpat compile -------------------------------------------------------------------------------------

def _configure_compile(p: argparse.ArgumentParser) -> None:
    _add_spec_arguments(p)
    p.add_argument("--emit", action="store_true",
                   help="print the generated Triton module instead of the plan")


def _bounds_text(lows: tuple[str, ...], highs: tuple[str, ...]) -> str:
    def one(parts, fn, default):
        if not parts:
            return default
        parts = [x.replace(" - 0", "") for x in parts]
        return parts[0] if len(parts) == 1 else f"{fn}({', '.join(parts)})"
    return f"{one(lows, 'max', '0')} <= k <= {one(highs, 'min', 'kv_len - 1')}"


@command("compile", "generate a pattern's Triton kernel: show the plan and cache entry, or print the code "
                    "(--emit)", _configure_compile)
def cmd_compile(args: argparse.Namespace) -> int:
    from . import compile as compile_kernel
    from .runtime import cache
    from .runtime.backend import target_name

    pattern = _pattern_from_args(args)
    kernel = compile_kernel(pattern)
    if args.emit:
        source = kernel.source()
        sys.stdout.write(source if source.endswith("\n") else source + "\n")
        return 0
    plan = kernel.plan
    params_text = ", ".join(f"{k}={describe_value(v)}" for k, v in pattern.params.items())
    rows = [("canonical", plan.text), ("key", plan.key)]
    if plan.mode == "band":
        rows.append(("plan", "band: each query block [q_lo, q_hi] computes its key blocks from linear bounds "
                             "(no block tables)"))
        for lows, highs in plan.families:
            rows.append(("", f"keys {_bounds_text(lows, highs)}"))
    else:
        rows.append(("plan", "table: each query block walks its PARTIAL tiles (with the predicate) and its FULL "
                             "tiles (without) from the block mask"))
    if plan.inputs:
        rows.append(("inputs", ", ".join(f"{n}: int[{a}] -> in{i}" for i, (n, a) in enumerate(plan.inputs))
                     + " (kernel arguments: new values never recompile)"))
    reads = [x for x, used in (("h", plan.uses_h), ("b", plan.uses_b)) if used]
    if reads:
        rows.append(("reads", ", ".join(reads) + " (the predicate depends on the "
                     + " and ".join({"h": "head", "b": "batch element"}[x] for x in reads) + ")"))
    directory = cache.cache_dir()
    rows.append(("cache", str(directory)))
    target = target_name()
    key = cache.entry_key(kernel.key, {"plan": plan.mode, "kernel": "fwd"}, target)
    path = directory / f"k_{key[:40]}.py"
    state = "cached" if path.is_file() else "not generated yet: the first call generates it"
    rows.append(("entry", f"{path.name} ({target}; {state})"))
    rows.append(("code", "add --emit to print the generated Triton module"))
    print(f"{pattern.name}({params_text})")
    width = max(len(r[0]) for r in rows)
    for label, text in rows:
        print(f"  {label:<{width}}  {text}".rstrip())
    return 0


# -- attnpat inspect -------------------------------------------------------------------------------------

_DTYPE_NAMES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
                "fp32": "float32", "float32": "float32"}


def _configure_inspect(p: argparse.ArgumentParser) -> None:
    from .runtime.aot import TARGETS
    _add_spec_arguments(p)
    p.add_argument("--target", required=True, choices=sorted(TARGETS), help="the GPU architecture to compile for")
    p.add_argument("--dtype", default="bf16", choices=sorted(_DTYPE_NAMES), help="q/k/v dtype (default bf16)")
    p.add_argument("--head-dim", type=_positive, default=128, metavar="D", help="head dimension (default 128)")
    p.add_argument("--backward", action="store_true", help="also compile the backward kernels")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", default=[],
                   help="a launch option as attnpat.compile takes it (repeatable): block_m, block_n, num_warps, "
                        "num_stages for the forward; bwd_block_m, bwd_block_n, bwd_num_warps, bwd_num_stages for "
                        "both backward kernels; dkdv_* and dq_* for one of them")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")


def _compile_options(texts: list[str]) -> dict[str, int]:
    """--option NAME=VALUE values; the names and values are checked by the Kernel, as for attnpat.compile."""
    options = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not re.fullmatch(r"\s*-?\d+\s*", value):
            raise ArgumentError(f"'--option' takes NAME=VALUE with an integer VALUE, got '{text}'")
        options[name.strip()] = int(value)
    return options


def inspect_requests(kernel, *, target: str, dtype, head_dim: int, backward: bool) -> list[dict]:
    """The ahead-of-time compile requests for a kernel's forward (and backward) programs."""
    from .runtime.kernel import aot_request
    requests = [aot_request(kernel, target=target, dtype=dtype, head_dim=head_dim)]
    if backward:
        from .runtime.autograd import bwd_aot_requests
        requests += bwd_aot_requests(kernel, target=target, dtype=dtype, head_dim=head_dim)
    return requests


@command("inspect", "compile a pattern's kernels ahead of time for a GPU target (no GPU needed) and report "
                    "registers, spills, shared memory, tensor-core MMA and occupancy", _configure_inspect)
def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    import torch

    from . import compile as compile_kernel
    from .runtime.aot import SMEM_LIMIT, TARGETS, compile_many

    pattern = _pattern_from_args(args)
    if not 16 <= args.head_dim <= 256:
        _error(f"--head-dim must be between 16 and 256, got {args.head_dim}")
        return 1
    dtype = getattr(torch, _DTYPE_NAMES[args.dtype])
    kernel = compile_kernel(pattern, **_compile_options(args.option))
    requests = inspect_requests(kernel, target=args.target, dtype=dtype, head_dim=args.head_dim,
                                backward=args.backward)
    reports = compile_many(requests)
    limit = SMEM_LIMIT[TARGETS[args.target]]
    warnings_out = []
    for r in reports:
        if r.spills:
            warnings_out.append(f"WARNING: {r.kernel} spills registers ({r.stack_bytes} bytes of stack, "
                                f"{r.spill_bytes} bytes of local memory): expect it to be slow")
        if r.shared_bytes > limit:
            warnings_out.append(f"WARNING: {r.kernel} needs {r.shared_bytes} bytes of shared memory, over the "
                                f"{limit} bytes a block may use on {args.target}: it will not launch")
        if r.mma_count == 0:
            warnings_out.append(f"WARNING: {r.kernel} uses no tensor-core MMA instructions")
    if args.json:
        print(json.dumps({"pattern": pattern.name, "key": kernel.key, "plan": kernel.plan.mode,
                          "target": args.target, "kernels": [r.to_dict() for r in reports],
                          "warnings": warnings_out}, indent=2))
        return 0
    params_text = ", ".join(f"{k}={describe_value(v)}" for k, v in pattern.params.items())
    print(f"{pattern.name}({params_text})  plan {kernel.plan.mode}  key {kernel.key}")
    print(f"target {args.target}, {args.dtype}, head dim {args.head_dim} (compiled ahead of time, no GPU)")
    header = ("kernel", "block", "warps", "stages", "regs", "spill B", "smem B", "MMA", "occupancy")
    rows = [(r.kernel, f"{r.block_m}x{r.block_n}", str(r.num_warps), str(r.num_stages), str(r.registers),
             str(r.stack_bytes + r.spill_bytes), str(r.shared_bytes), f"{r.mma_count} {r.mma_kind}",
             f"{r.occupancy_blocks} block(s)/SM, {r.occupancy_blocks * r.num_warps} warps")
            for r in reports]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
    for w in warnings_out:
        print(w, file=sys.stderr)
    return 0


# -- attnpat verify --------------------------------------------------------------------------------------

def _configure_verify(p: argparse.ArgumentParser) -> None:
    _add_spec_arguments(p)
    p.add_argument("--examples", type=_positive, default=25, metavar="N", help="cases to draw (default 25)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu runs Triton's interpreter (small sizes); cuda the compiled kernels")
    p.add_argument("--forward-only", action="store_true", help="do not check gradients")
    p.add_argument("--max-len", type=_positive, default=96, metavar="N", help="longest sequence drawn")
    p.add_argument("--seed", type=_integer, default=None, help="hypothesis seed (default: derandomized)")


@command("verify", "property-test a pattern's kernels against the float64 dense reference (forward and "
                   "backward); print the smallest failing case as a Python snippet", _configure_verify)
def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    pattern = _pattern_from_args(args)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            _error("--device cuda: no CUDA device is available here")
            return 1
    result = verify(pattern, spec=args.spec, examples=args.examples, backward=not args.forward_only,
                    device=args.device, max_len=args.max_len, seed=args.seed)
    what = "forward" if args.forward_only else "forward and backward"
    if result.passed:
        print(f"{args.spec}: ok -- {result.examples} cases, {what}, match the float64 reference")
        return 0
    print(f"{args.spec}: FAILED after {result.examples} cases: {result.failure}", file=sys.stderr)
    print("smallest failing case:\n", file=sys.stderr)
    print(result.snippet, file=sys.stderr)
    return 1


# -- attnpat list ----------------------------------------------------------------------------------------

def _configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="list the patterns of these files (default: the library)")


def _comment_block_above(lines: list[str], index: int) -> list[str]:
    """The comment lines just above line `index` (0-based), skipping blank lines between them and it."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    block = []
    while i >= 0 and lines[i].lstrip().startswith("#"):
        block.append(lines[i].lstrip()[1:].strip())
        i -= 1
    return block[::-1]


def _leading_comment(lines: list[str]) -> list[str]:
    """The comment lines at the top of a file."""
    block = []
    for line in lines:
        if line.lstrip().startswith("#"):
            block.append(line.lstrip()[1:].strip())
        elif line.strip() or block:
            break
    return block


def _first_paragraph(block: list[str]) -> str:
    words = []
    for line in block:
        if not line:
            if words:
                break
            continue
        words.append(line)
    return " ".join(words)


def _shorten(text: str, limit: int = 110) -> str:
    m = re.search(r"(\.|;)(\s+[A-Z(]|\s*$)", text)    # the first sentence ("e.g. x" does not end one)
    if m:
        text = text[:m.start() + 1].rstrip(";")
    if len(text) <= limit:
        return text
    cut = text[:limit - 3].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "..."


def summary(definition: N.PatternDef) -> str:
    """A one-line description of a pattern, from the comments of its file.

    Uses, in order: the pattern's entry in a "Patterns:" list of the file's header comment, the comment
    directly above the pattern (unless it is an "Example:"), or the file's first comment paragraph.
    A leading "name -- " is dropped.
    """
    if definition.span is None:
        return ""
    lines = definition.span.source.text.splitlines()
    header = _leading_comment(lines)
    for entry in header:
        m = re.match(rf"{re.escape(definition.name)}\([^)]*\)\s+(.+)", entry)
        if m:
            return _shorten(m.group(1))
    above = _comment_block_above(lines, definition.span.line - 1)
    text = _first_paragraph(above)
    if not text or text.lower().startswith("example"):
        text = _first_paragraph(header)
    text = re.sub(r"^[\w.]+\s+--\s+", "", text)
    return _shorten(text)


def _list_entries(files: list[str]) -> list[tuple[N.PatternDef, str]]:
    from .library import library_names
    if not files:
        out = []
        for name in library_names():
            module, d = resolve_library(name)
            out.append((d, module_name(module)))
        return out
    out = []
    for f in files:
        module, _ = locate(split_spec(f)[0])
        out.extend((d, module_name(module)) for d in module.patterns)
    return out


@command("list", "list library patterns (or a file's) with their parameters and a summary", _configure_list)
def cmd_list(args: argparse.Namespace) -> int:
    for d, where in _list_entries(args.files):
        inputs = [s for s in d.body if isinstance(s, N.InputDecl)]
        line = _signature(d)
        if inputs:
            line += "  input " + ", ".join(f"{s.name}: int[{s.axis}]" for s in inputs)
        print(f"{line}  [{where}]")
        text = summary(d)
        if text:
            print(f"    {text}")
    return 0
