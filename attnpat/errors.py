"""The one exception family of attnpat.

Every mistake a user can make -- in a pattern file, in a parameter value, in the tensors handed to a
kernel -- raises a subclass of :class:`PatternError`. Messages read like a compiler's::

    patterns/bad.attn:3:29: error: unknown name 'windw' (did you mean 'window'?)
        mask causal and q - k < windw
                                ^^^^^
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Source",
    "Span",
    "PatternError",
    "PatternSyntaxError",
    "PatternNameError",
    "PatternTypeError",
    "ParameterError",
    "RequirementError", "RangeError",
    "EmptyPatternError",
    "InputError",
    "ArgumentError",
]


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """A pattern source text and the name it is reported under (a path or '<string>')."""

    name: str
    text: str

    def line(self, lineno: int) -> str:
        """Return line `lineno` (1-based) without its newline, or '' if out of range.

        Lines end at '\n' only (as the parser counts them): str.splitlines would also split at form
        feeds, '\u2028' and lone '\r', and then point at the wrong line.
        """
        lines = self.text.split("\n")
        if not 1 <= lineno <= len(lines):
            return ""
        line = lines[lineno - 1]
        return line[:-1] if line.endswith("\r") else line


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source: 1-based line and column of its first character, and its end (exclusive)."""

    source: Source = field(repr=False)
    line: int
    column: int
    end_line: int
    end_column: int

    def render(self) -> str:
        """Return the source line and a caret line under the span."""
        text = self.source.line(self.line)
        if not text and not 1 <= self.line <= self.source.text.count("\n") + 1:
            return ""   # a line past the end of the text: nothing to show
        start = max(self.column - 1, 0)
        if self.end_line == self.line and self.end_column > self.column:
            width = self.end_column - self.column
        else:
            width = max(len(text.rstrip()) - start, 1)
        width = max(1, min(width, max(len(text) - start, 1)))
        return f"    {text}\n    {' ' * start}{'^' * width}"


class PatternError(Exception):
    """Root of every error attnpat raises for a user's mistake."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, notes: tuple[str, ...] = ()):
        self.message = message
        self.span = span
        self.notes = tuple(notes)
        super().__init__(self._format())

    def _format(self) -> str:
        if self.span is None:
            head = f"error: {self.message}"
            body = ""
        else:
            s = self.span
            head = f"{s.source.name}:{s.line}:{s.column}: error: {self.message}"
            rendered = s.render()
            body = f"\n{rendered}" if rendered else ""
        notes = "".join(f"\n    note: {n}" for n in self.notes)
        return head + body + notes


class PatternSyntaxError(PatternError):
    """The text is not valid pattern syntax."""


class PatternNameError(PatternError):
    """A name is unknown, defined twice, or used where it cannot be."""


class PatternTypeError(PatternError):
    """An expression has the wrong type (int where bool is needed, a set indexed, ...)."""


class ParameterError(PatternError):
    """A parameter value (from a default, Python or the CLI) is missing or of the wrong type."""


class RequirementError(PatternError):
    """A pattern's `require` clause does not hold for the given parameter values."""


class RangeError(PatternError):
    """A value the mask computes may not fit in the integers an evaluator computes with (the language's
    integers are exact; an evaluator refuses rather than wrap)."""


class EmptyPatternError(PatternError):
    """A pattern allows no (query, key) pair at all."""


class InputError(PatternError, ValueError):
    """A runtime input (e.g. document ids) is missing or has the wrong shape, dtype or values."""


class ArgumentError(PatternError, ValueError):
    """A tensor or option given to a kernel has the wrong shape, dtype or device."""
