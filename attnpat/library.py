"""Finding patterns: files on disk, the standard library in `attnpat.patterns`, and `FILE:PATTERN` specs."""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from importlib import resources

from .compiler import nodes as N
from .compiler.parse import parse_module
from .compiler.values import did_you_mean
from .errors import ArgumentError, ParameterError, PatternError, PatternNameError

__all__ = ["library_names", "library_module", "resolve_library", "read_module", "split_spec", "pick_pattern"]


@lru_cache(maxsize=None)
def _library_files() -> dict[str, str]:
    root = resources.files("attnpat.patterns")
    return {p.name[:-5]: p.read_text() for p in root.iterdir() if p.name.endswith(".attn")}


@lru_cache(maxsize=None)
def library_module(stem: str) -> N.Module:
    """Parse the library file `patterns/<stem>.attn`."""
    return parse_module(_library_files()[stem], f"patterns/{stem}.attn")


@lru_cache(maxsize=None)
def _library_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for stem in sorted(_library_files()):
        for p in library_module(stem).patterns:
            index.setdefault(p.name, stem)
    return index


def library_names() -> list[str]:
    """Names of every pattern in the standard library."""
    return sorted(_library_index())


def resolve_library(name: str) -> tuple[N.Module, N.PatternDef] | None:
    """Find a library pattern by name (used when a pattern calls one its file does not define)."""
    stem = _library_index().get(name)
    if stem is None:
        return None
    module = library_module(stem)
    return module, next(p for p in module.patterns if p.name == name)


# What the checker's "did you mean" searches besides the calling file (see compiler.check.Resolver).
resolve_library.names = library_names


def read_module(path: str) -> N.Module:
    """Read and parse a `.attn` file."""
    try:
        # only a regular file: a FIFO, a device or a socket named x.attn would block or never end
        if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise PatternError(f"cannot read '{path}': not a regular file")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise PatternError(f"cannot read '{path}': {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PatternError(f"cannot read '{path}': not UTF-8 text") from None
    return parse_module(text, path)


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split 'FILE_OR_NAME[:PATTERN]' (a Windows drive letter is not a separator)."""
    if not isinstance(spec, str):
        raise ArgumentError(f"a pattern spec is a string such as 'sliding_window' or 'file.attn:name', "
                            f"got {type(spec).__name__} {spec!r}")
    head, sep, tail = spec.rpartition(":")
    if sep and head and not (len(head) == 1 and head.isalpha()) and "/" not in tail and "\\" not in tail:
        if "=" in tail:   # 'sliding_window:window=16': a parameter where a pattern name belongs
            name, _, value = tail.partition("=")
            raise ParameterError(f"'{spec}': a spec names a file and a pattern, not parameter values; write "
                                 f"load('{head}', {name.strip()}={value.strip()}) in Python or "
                                 f"--set {name.strip()}={value.strip()} on the command line")
        return head, tail
    return spec, None


def pick_pattern(module: N.Module, stem: str, pattern: str | None) -> str:
    """Choose which pattern of a file is meant: the named one, the one named like the file, or the only one."""
    names = [p.name for p in module.patterns]
    if pattern is not None and not isinstance(pattern, str):
        meant = next((p for p in module.patterns if p.name == stem), module.patterns[0] if module.patterns else None)
        param = meant.params[0].name if meant is not None and meant.params else "name"
        call = f"load('{stem}', {param}={pattern!r})" if stem else f"parse(text, {param}={pattern!r})"
        raise ArgumentError(f"the second argument names a pattern of the file, got {type(pattern).__name__} "
                            f"{pattern!r}; parameter values are keywords: {call}")
    if pattern is not None:
        if pattern not in names:
            hint = did_you_mean(pattern, names)
            raise PatternNameError(f"no pattern '{pattern}' in {module_name(module)}{hint}; "
                                   f"it has: {', '.join(names) or 'none'}")
        return pattern
    if not names:
        raise PatternNameError(f"{module_name(module)} defines no pattern")
    if stem in names:
        return stem
    if len(names) == 1:
        return names[0]
    raise ParameterError(f"{module_name(module)} defines several patterns ({', '.join(names)}); "
                         f"choose one, e.g. '{module_name(module)}:{names[0]}'")


def module_name(module: N.Module) -> str:
    span = module.span or next((p.span for p in module.patterns if p.span), None)
    return span.source.name if span is not None else "<string>"


def locate(spec: str) -> tuple[N.Module, str]:
    """Resolve a FILE_OR_NAME to a parsed module and the file stem used to pick its default pattern.

    An unknown name gets a "did you mean" from the library's pattern and file names; so does a `.attn`
    path that does not exist when its file name is close to a library name.
    """
    if spec.endswith(".attn") or os.sep in spec or "/" in spec or os.path.exists(spec):
        stem = os.path.basename(spec)[:-5] if spec.endswith(".attn") else spec
        try:
            return read_module(spec), stem
        except PatternError as exc:
            # 'sliding_windw.attn' that is not there: perhaps the library pattern was meant
            bare = spec.endswith(".attn") and os.path.basename(spec) == spec and not os.path.exists(spec)
            hint = did_you_mean(stem, _library_candidates(), "the library pattern ") if bare else ""
            if not hint:
                raise
            raise PatternError(exc.message + hint) from None
    if spec in _library_files():
        return library_module(spec), spec
    stem = _library_index().get(spec)
    if stem is not None:
        return library_module(stem), spec
    raise PatternNameError(f"no file or library pattern named '{spec}'{did_you_mean(spec, _library_candidates())}")


def _library_candidates() -> list[str]:
    """Names `locate` accepts for the library: every pattern name and every file name (without .attn)."""
    return library_names() + sorted(_library_files())
