"""What the subcommands share: the command record, argument types, FILE_OR_NAME specs, `--set` and `--input`.

A `--set NAME=VALUE` value is an expression of the pattern language: it is parsed by the language's parser
and bound by putting it in place of the parameter's default, so the checker types and folds it exactly as
it would a default written in the file (its errors point into the --set text). An `--input` value is only
parsed here; `reference.prepare_inputs` validates it, as it does any runtime input.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

from ..compiler import nodes as N
from ..compiler.parse import parse_expr
from ..compiler.values import did_you_mean, format_value
from ..errors import InputError, ParameterError, Source, Span
from ..library import locate, pick_pattern, split_spec
from ..pattern import Pattern

__all__ = ["Command", "PROG", "error", "positive", "non_negative", "integer", "add_spec_arguments",
           "INPUT_HELP", "Setting", "parse_set", "parse_sets", "bind", "open_spec", "pattern_from_args",
           "parse_input", "collect_inputs", "heading", "unicode_ok"]

PROG = "attnpat"


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: `configure` adds its arguments, `run` does the work and returns an exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def error(message: str) -> None:
    """Print an error message on stderr, after whatever stdout holds so far."""
    sys.stdout.flush()
    print(message, file=sys.stderr)


def unicode_ok(stream) -> bool:
    """Whether `stream` can print the drawing characters."""
    try:
        "█▒·".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# -- argument types --------------------------------------------------------------------------------------

MAX_OPTION = 1 << 40   # as the block masks' positions (compiler/lower/blockmask.py MAX_POSITION)


def _int_type(what: str, low: int | None) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if low is not None and v < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        if abs(v) > MAX_OPTION:   # lengths, positions and indices: far beyond them nothing can be computed
            raise argparse.ArgumentTypeError(f"{text} is too large: at most 2**40 in magnitude")
        return v
    return convert


positive = _int_type("a positive integer", 1)
non_negative = _int_type("a non-negative integer", 0)
integer = _int_type("an integer", None)

INPUT_HELP = ("a runtime input: one integer per key (int[k]) or query (int[q]); VxN repeats V N times; "
              "'/' separates rows of a [batch, length] input (repeatable)")


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The FILE_OR_NAME[:PATTERN] argument and --set, for the commands that work on one pattern."""
    p.add_argument("spec", metavar="FILE_OR_NAME[:PATTERN]",
                   help="a .attn file or a library file/pattern name, optionally with :PATTERN")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="set a parameter: a number, True/False, {0, 1}, [1, 2] or range(...) (repeatable)")


# -- --set NAME=VALUE ------------------------------------------------------------------------------------

_VALUE_HINT = "a value is a number, True, False, a set {1, 2}, a list [1, 2] or range(...)"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Setting:
    """One `--set NAME=VALUE`: the name, the value's expression, and the name's span for error messages."""

    name: str
    expr: N.Expr
    name_span: Span


def parse_set(text: str) -> Setting:
    """Parse one `--set NAME=VALUE` argument (VALUE is an expression; its spans point into `text`)."""
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
    return Setting(stripped, parse_expr(text, "--set", offset=offset), name_span)


def parse_sets(texts: Iterable[str] | None) -> dict[str, Setting]:
    """Every --set of a command line, by name (a name set twice is an error)."""
    out: dict[str, Setting] = {}
    for text in texts or ():
        s = parse_set(text)
        if s.name in out:
            raise ParameterError(f"parameter '{s.name}' is set twice", s.name_span)
        out[s.name] = s
    return out


def bind(module: N.Module, definition: N.PatternDef, settings: dict[str, Setting], *,
         strict: bool = True) -> tuple[N.Module, N.PatternDef]:
    """`module` with the --set values as `definition`'s parameter defaults (strict: unknown names are errors)."""
    declared = [p.name for p in definition.params]
    if strict:
        for name, s in settings.items():
            if name not in declared:
                hint = did_you_mean(name, declared) or (
                    f"; it has {', '.join(declared)}" if declared else "; it has no parameters")
                raise ParameterError(f"pattern '{definition.name}' has no parameter '{name}'{hint}", s.name_span)
    params = tuple(dataclasses.replace(p, default=settings[p.name].expr) if p.name in settings else p
                   for p in definition.params)
    bound = dataclasses.replace(definition, params=params)
    patterns = tuple(bound if p is definition else p for p in module.patterns)
    return dataclasses.replace(module, patterns=patterns), bound


# -- patterns from the command line ----------------------------------------------------------------------

def open_spec(spec_text: str) -> tuple[N.Module, N.PatternDef]:
    """FILE_OR_NAME[:PATTERN] -> (module, the chosen pattern's definition)."""
    spec, named = split_spec(spec_text)
    module, stem = locate(spec)
    name = pick_pattern(module, stem, named)
    return module, next(p for p in module.patterns if p.name == name)


def pattern_from_args(args: argparse.Namespace) -> Pattern:
    """The pattern named by args.spec with the --set values bound (every parameter must get a value)."""
    module, definition = bind(*open_spec(args.spec), parse_sets(args.set))
    for p in definition.params:
        if p.default is None:
            raise ParameterError(f"parameter '{p.name}' of pattern '{definition.name}' has no default; give a "
                                 f"value with --set {p.name}=VALUE", p.span)
    return Pattern(module, definition.name)


def heading(pattern: Pattern) -> str:
    """The pattern's name with its bound parameters: sliding_window(window=64)."""
    return f"{pattern.name}({', '.join(f'{k}={format_value(v)}' for k, v in pattern.params.items())})"


# -- --input NAME=V1,V2,... ------------------------------------------------------------------------------

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


def _how_to_pass(name: str, axis: str, length: int) -> str:
    if axis == "b":
        return f"; pass one value per sequence with --input {name}=V1,V2,... (one value is shared by the batch)"
    half = length // 2
    example = f"0x{half},1x{length - half}" if half else "0"
    return f"; pass its {length} values with --input {name}=V1,V2,... e.g. --input {name}={example}"


def collect_inputs(pattern: Pattern, texts: list[str], q_len: int, kv_len: int) -> tuple[dict, int]:
    """The --input values of a command line as the pattern's runtime inputs, validated by prepare_inputs.

    Returns the inputs ([rows, length] int64 tensors) and the batch their rows give (1 when every input
    is a single row, shared by the batch).
    """
    from ..reference import prepare_inputs
    given: dict[str, list] = {}
    for text in texts:
        name, rows = parse_input(text)
        if name in given:
            raise InputError(f"--input {name} is given twice")
        given[name] = rows if len(rows) > 1 else rows[0]
    per_seq = [len(v) for n, v in given.items() if pattern.inputs.get(n) == "b" and not isinstance(v[0], list)]
    batch = max([len(v) for v in given.values() if isinstance(v[0], list)] + per_seq, default=1)
    return prepare_inputs(pattern.checked, q_len, kv_len, batch, given, how=_how_to_pass), batch
