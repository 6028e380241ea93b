"""Stage 1 -- parse: pattern text -> :class:`~attnpat.compiler.nodes.Module` (an AST with source spans).

The grammar lives in ``grammar.lark``; lark's LALR parser with an indentation post-lexer turns text into a
parse tree and a Transformer turns that into frozen AST nodes. Every lark error is translated into a
:class:`~attnpat.errors.PatternSyntaxError` that points at the offending text.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError,
)
from lark.indenter import Indenter

from ..errors import PatternError, PatternSyntaxError, Source, Span
from . import nodes as N
from .values import MAX_COLLECTION

__all__ = ["parse_module", "parse_expr", "MAX_LITERAL_DIGITS"]

MAX_LITERAL_DIGITS = 300   # digits in one integer literal (the folder's bound, FOLD_BITS, is about 308)

_BRACKETS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}


class _Indenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = list(_BRACKETS)
    CLOSE_PAREN_types = list(_BRACKETS.values())
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def handle_NL(self, token):
        if self.paren_level > 0:
            return
        yield token
        indent_str = token.rsplit("\n", 1)[1]
        indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield Token.new_borrow_pos(self.INDENT_type, indent_str, token)
        else:
            while indent < self.indent_level[-1]:
                self.indent_level.pop()
                yield Token.new_borrow_pos(self.DEDENT_type, indent_str, token)
            if indent != self.indent_level[-1]:
                # lark raises a position-less DedentError here; we know where it happened.
                raise _BadDedent(token.end_line or token.line, len(indent_str) + 1)


class _BadDedent(Exception):
    def __init__(self, line: int, column: int):
        self.line, self.column = line, column


@lru_cache(maxsize=None)
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", postlex=_Indenter(), propagate_positions=True,
                maybe_placeholders=True, start=["start", "expr_line"])


_READABLE = {
    "NAME": "a name", "INT": "a number", "_NL": "end of line", "_INDENT": "an indented block",
    "_DEDENT": "end of the indented block", "$END": "end of file", "TYPE": "a type (int, bool, set, list, float)",
    "AXIS": "'q' or 'k'", "_PATTERN": "'pattern'", "_REQUIRE": "'require'", "_INPUT": "'input'",
    "_MASK": "'mask'", "_SCORE": "'score'", "FLOAT": "a number", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '//' or '%'",
}


def _describe_terminal(name: str) -> str:
    if name in _READABLE:
        return _READABLE[name]
    try:
        pattern = _parser().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    return f"'{pattern.value}'" if pattern.type == "str" else name.lower()


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "_NL":
        return "end of line"
    if token.type == "_INDENT":
        return "unexpected indentation"
    if token.type == "_DEDENT":
        return "end of the indented block"
    return f"'{token.value}'"


def _span_at(source: Source, line: int, column: int, width: int = 1) -> Span:
    return Span(source, line, column, line, column + max(width, 1))


def _end_span(source: Source) -> Span:
    # Lines end at '\n' only, as lark counts them (see Source.line).
    lines = source.text.rstrip("\r\n").split("\n")
    return _span_at(source, len(lines), len(lines[-1].rstrip("\r")) + 1)


_OPENERS = {"(": ")", "[": "]", "{": "}"}


def _open_brackets(source: Source, line: int | None = None,
                   column: int | None = None) -> list[tuple[str, int, int]]:
    """Brackets still open before (line, column) (default: the end of the text): [(char, line, column)]."""
    stack: list[tuple[str, int, int]] = []
    for lineno, text in enumerate(source.text.split("\n"), start=1):
        if line is not None and lineno > line:
            break
        for col, ch in enumerate(text.split("#", 1)[0], start=1):
            if line is not None and lineno == line and col >= column:
                break
            if ch in _OPENERS:
                stack.append((ch, lineno, col))
            elif ch in _OPENERS.values() and stack and _OPENERS[stack[-1][0]] == ch:
                stack.pop()
    return stack


def _never_closed(source: Source) -> PatternSyntaxError | None:
    """The error for a bracket left open at the end of the file, pointing at the bracket."""
    stack = _open_brackets(source)
    if not stack:
        return None
    ch, line, col = stack[-1]
    return PatternSyntaxError(f"'{ch}' was never closed", _span_at(source, line, col))


def _syntax_error(exc: UnexpectedInput, source: Source) -> PatternSyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        ch = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else "?"
        what = "tab or space" if ch in " \t" else repr(ch)
        hint = _CHAR_HINTS.get(ch, "")
        return PatternSyntaxError(f"unexpected character {what}{hint}", _span_at(source, exc.line, exc.column))
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = sorted({_describe_terminal(t) for t in exc.expected if not t.startswith("__")})
        hint = ""
        if tok.type in ("$END", "_DEDENT"):
            unclosed = _never_closed(source)
            if unclosed is not None:
                return unclosed
        if tok.type == "_INDENT":
            msg = "unexpected indentation"
            expected = []   # the list of what may start a statement only confuses here
        elif tok.type == "$END":
            msg = "unexpected end of file"
        elif set(exc.expected) <= {"_NL"} and _starts_unindented_body(source, tok):
            msg, expected = f"expected an indented block after the pattern header, got {_token_text(tok)}", []
        else:
            msg = f"unexpected {_token_text(tok)}"
        if "INT" in exc.expected:   # every way to start an expression would do
            hint = ", expected an expression"
        elif expected and len(expected) <= 8:
            hint = f", expected {_join_or(expected)}"
        if tok.type != "$END" and str(tok.value) == "=":
            hint += " (to compare, write '==')"
        if tok.type == "NAME" and str(tok.value) in ("if", "else"):   # `mask a if c else b`
            hint = _CONDITIONAL_HINT
        if tok.type == "$END" or tok.line is None or tok.line < 1:
            span = _end_span(source)
        elif tok.type == "_NL":
            # Point just past the end of the line that was cut short.
            text = source.line(tok.line)
            span = _span_at(source, tok.line, len(text.split("#")[0].rstrip()) + 1)
        elif tok.type in ("_INDENT", "_DEDENT"):
            line = (tok.end_line or tok.line)
            span = _span_at(source, line, 1, len(source.line(line)) - len(source.line(line).lstrip()) or 1)
        else:
            span = _span_at(source, tok.line, tok.column, len(str(tok.value)))
        notes = ()
        if (tok.type != "$END" and str(tok.value) in _KEYWORDS and "NAME" in exc.expected
                and "INT" not in exc.expected):
            notes = (f"'{tok.value}' is a reserved word and cannot be used as a name",)
        if tok.line is not None and tok.line >= 1 and tok.type not in ("$END", "_DEDENT"):
            earlier = [b for b in _open_brackets(source, tok.line, tok.column) if b[1] < tok.line]
            if earlier:
                ch, line, col = earlier[-1]
                notes = (f"the '{ch}' at line {line}, column {col} is still open here",)
        return PatternSyntaxError(msg + hint, span, notes)
    if isinstance(exc, UnexpectedEOF):
        return _never_closed(source) or PatternSyntaxError("unexpected end of file", _end_span(source))
    return PatternSyntaxError("invalid syntax", _end_span(source))


_CONDITIONAL_HINT = (": the language has no 'a if c else b'; write (c and a) or (not c and b), or, to pick a "
                      "value per head, a list indexed by h, e.g. [64, 128, 256, 512][h % 4]")

_KEYWORDS = frozenset({"pattern", "require", "input", "mask", "score", "and", "or", "not", "in", "True", "False"})

_CHAR_HINTS = {
    "&": " (write 'and')", "|": " (write 'or')", "!": " (write 'not', or '!=' to compare)",
    "\u2212": " (a unicode minus: write '-')",
    "'": " (the language has no strings)", '"': " (the language has no strings)",
}


def _starts_unindented_body(source: Source, tok: Token) -> bool:
    """Whether `tok` starts a line right after a pattern header, at the header's indentation."""
    if tok.line is None or tok.line < 2 or tok.type in ("_NL", "_INDENT", "_DEDENT"):
        return False
    if source.line(tok.line)[:tok.column - 1].strip():
        return False
    previous = [source.line(i).split("#", 1)[0].rstrip() for i in range(1, tok.line)]
    previous = [p for p in previous if p.strip()]
    if not previous or not previous[-1].endswith(":") or not previous[-1].lstrip().startswith("pattern"):
        return False
    return tok.column - 1 <= len(previous[-1]) - len(previous[-1].lstrip())


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


class _ToAST(Transformer):
    """Parse tree -> AST nodes, each carrying its span."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _span(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, tok: Token) -> Span:
        return Span(self.source, tok.line, tok.column, tok.end_line, tok.end_column)

    @v_args(meta=True)
    def start(self, meta, children):
        return N.Module(tuple(children), self._span(meta))

    def expr_line(self, children):
        return children[0]

    @v_args(meta=True)
    def pattern(self, meta, children):
        name, params, *body = children
        header = Span(self.source, meta.line, meta.column, name.end_line, name.end_column)
        return N.PatternDef(str(name), tuple(params or ()), tuple(body), header)

    def params(self, children):
        return [c for c in children if c is not None]

    @v_args(meta=True)
    def param(self, meta, children):
        name, type_, default = children
        return N.Param(str(name), str(type_), default, self._span(meta))

    @v_args(meta=True)
    def require(self, meta, children):
        return N.Require(children[0], self._span(meta))

    @v_args(meta=True)
    def input_decl(self, meta, children):
        name, type_, axis = children
        if str(type_) == "float" and str(axis) == "h":
            return N.FloatInputDecl(str(name), "h", self._span(meta))
        if str(type_) == "float":
            raise PatternSyntaxError(f"float runtime inputs hold one value per head: write 'float[h]', not "
                                     f"'float[{axis}]'", self._tok_span(axis))
        if str(axis) == "h":
            raise PatternSyntaxError("an input with one value per head is a float input for score terms: "
                                     "write 'float[h]'", self._tok_span(type_))
        if str(type_) != "int":
            raise PatternSyntaxError(
                f"runtime inputs are integer tensors: write 'int[{axis}]', not '{type_}[{axis}]'",
                self._tok_span(type_))
        return N.InputDecl(str(name), str(axis), self._span(meta))

    @v_args(meta=True)
    def mask(self, meta, children):
        return N.Mask(children[0], self._span(meta))

    @v_args(meta=True)
    def score(self, meta, children):
        kind, expr = children
        if str(kind) not in N.SCORE_KINDS:
            raise PatternSyntaxError(f"unknown score term '{kind}': the terms are softcap(CAP), bias(EXPR) and "
                                     f"sink(EXPR)", self._tok_span(kind))
        return N.Score(str(kind), expr, self._span(meta))

    @v_args(meta=True)
    def let(self, meta, children):
        name, value = children
        return N.Let(str(name), value, self._span(meta))

    @v_args(meta=True)
    def or_expr(self, meta, children):
        return N.BoolOp("or", tuple(children), self._span(meta))

    @v_args(meta=True)
    def and_expr(self, meta, children):
        return N.BoolOp("and", tuple(children), self._span(meta))

    @v_args(meta=True)
    def not_(self, meta, children):
        return N.Unary("not", children[0], self._span(meta))

    @v_args(meta=True)
    def comparison(self, meta, children):
        left, rest = children[0], children[1:]
        ops = tuple(rest[0::2])
        return N.Compare(left, ops, tuple(rest[1::2]), self._span(meta))

    def comp_op(self, children):
        return " ".join(str(c) for c in children)

    @v_args(meta=True)
    def arith(self, meta, children):
        return self._fold(meta, children)

    @v_args(meta=True)
    def term(self, meta, children):
        return self._fold(meta, children)

    def _fold(self, meta, children):
        # Left-associative: a - b + c == (a - b) + c. Each partial result spans from `a` to its right operand.
        node = children[0]
        for op, right in zip(children[1::2], children[2::2]):
            span = None
            if node.span is not None and right.span is not None:
                span = Span(self.source, node.span.line, node.span.column, right.span.end_line,
                            right.span.end_column)
            node = N.BinOp(str(op), node, right, span)
        return node

    @v_args(meta=True)
    def neg(self, meta, children):
        return N.Unary("-", children[0], self._span(meta))

    def pos(self, children):
        return children[0]

    @v_args(meta=True)
    def subscript(self, meta, children):
        return N.Subscript(children[0], children[1], self._span(meta))

    @v_args(meta=True)
    def num(self, meta, children):
        text = str(children[0])
        if len(text) > MAX_LITERAL_DIGITS:   # before int(): Python refuses over 4300 digits, and work grows
            raise PatternSyntaxError(f"this number has {len(text)} digits; at most {MAX_LITERAL_DIGITS} are "
                                     f"allowed (constants in a mask must fit in 64 bits)", self._span(meta))
        return N.Num(int(text), self._span(meta))

    @v_args(meta=True)
    def float_num(self, meta, children):
        text = str(children[0])
        value = float(text) if len(text) <= MAX_LITERAL_DIGITS else float("inf")
        if not math.isfinite(value):
            raise PatternSyntaxError(f"the float {text[:40]} is too large", self._span(meta))
        return N.Float(value, self._span(meta))

    @v_args(meta=True)
    def true(self, meta, children):
        return N.BoolLit(True, self._span(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return N.BoolLit(False, self._span(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        return N.Name(str(children[0]), self._span(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        func, args = children
        positional, keywords = [], []
        for a in args or ():
            if isinstance(a, tuple):
                keywords.append(a)
            elif keywords:
                raise PatternSyntaxError("positional argument follows keyword argument", a.span)
            else:
                positional.append(a)
        return N.Call(str(func), tuple(positional), tuple(keywords), self._span(meta))

    def arguments(self, children):
        return [c for c in children if c is not None]

    def kwarg(self, children):
        return (str(children[0]), children[1])

    @v_args(meta=True)
    def set_lit(self, meta, children):
        return N.SetLit(tuple(children[0] or ()), self._span(meta))

    @v_args(meta=True)
    def list_lit(self, meta, children):
        return N.ListLit(tuple(children[0] or ()), self._span(meta))

    def exprlist(self, children):
        return [c for c in children if c is not None]


def _precheck(text: str, source: Source) -> None:
    """Refuse a set or list literal of more than MAX_COLLECTION elements before lark spends seconds on it:
    one pass counting the commas at each bracket's own depth (comments skipped)."""
    if text.count(",") < MAX_COLLECTION:
        return
    stack: list[list[int]] = []   # per open bracket: [offset, commas]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "([{":
            stack.append([i, 0])
        elif c in ")]}" and stack:
            start, commas = stack.pop()
            j = i - 1
            while j > start and text[j].isspace():
                j -= 1
            # elements: the commas, plus one unless a trailing comma ends the literal
            if commas + (text[j] != ",") > MAX_COLLECTION and text[start] in "[{":
                _too_many(source, text, start)
        elif c == "," and stack:
            stack[-1][1] += 1
            if stack[-1][1] > MAX_COLLECTION and text[stack[-1][0]] in "[{":
                _too_many(source, text, stack[-1][0])
        i += 1


def _too_many(source: Source, text: str, start: int):
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    raise PatternSyntaxError(f"a set or list literal may hold at most {MAX_COLLECTION} elements",
                             _span_at(source, line, column))


def _tree(text: str, source: Source, start: str = "start"):
    if not text.endswith("\n"):
        text += "\n"
    _precheck(text, source)
    try:
        return _parser().parse(text, start=start)
    except _BadDedent as exc:
        raise PatternSyntaxError("indentation does not match any outer block",
                                 _span_at(source, exc.line, 1, exc.column - 1)) from None
    except UnexpectedInput as exc:
        raise _syntax_error(exc, source) from None
    except LarkError as exc:  # anything else lark may raise is still the user's syntax
        raise PatternSyntaxError(f"invalid syntax ({type(exc).__name__})", _end_span(source)) from None
    except RecursionError:
        raise PatternSyntaxError("expression nested too deeply", _end_span(source)) from None


def _transform(tree, source: Source):
    try:
        return _ToAST(source).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, PatternError):
            raise exc.orig_exc from None
        if isinstance(exc.orig_exc, RecursionError):
            raise PatternSyntaxError("expression nested too deeply", _end_span(source)) from None
        raise
    except RecursionError:   # the transformer recurses once per nesting level: `- - - ... q`
        raise PatternSyntaxError("expression nested too deeply", _end_span(source)) from None


def parse_module(text: str, name: str = "<string>") -> N.Module:
    """Parse the text of a `.attn` file into a Module.

    Args:
        text: the file's contents.
        name: the name errors are reported under (usually the file's path).
    """
    source = Source(name, text)
    return _transform(_tree(text, source), source)


def parse_expr(text: str, name: str = "<expr>", *, offset: int = 0) -> N.Expr:
    """Parse one expression, text[offset:] (e.g. the VALUE of `--set NAME=VALUE`), with spans into `text`."""
    source = Source(name, text)
    if "\n" in text[offset:].strip():
        raise PatternSyntaxError("expected a single-line expression", _end_span(source))
    # The characters before `offset` are blanked rather than cut, so lark's lines and columns are those of
    # `text` and every span and error points into what the user wrote.
    blanked = "".join(c if c == "\n" else " " for c in text[:offset]) + text[offset:]
    return _transform(_tree(blanked, source, start="expr_line"), source)
