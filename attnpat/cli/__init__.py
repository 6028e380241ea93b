"""The `attnpat` command line.

    attnpat check [FILE_OR_NAME ...] [--set NAME=VALUE ...]   parse and check patterns (default: the library)
    attnpat show FILE_OR_NAME[:PATTERN] [options]             draw a pattern's mask in the terminal (or a PNG)
    attnpat explain FILE_OR_NAME[:PATTERN] --q-len N [...]    density, tiles, FLOPs, look-back, receptive field
    attnpat compile FILE_OR_NAME[:PATTERN] [--emit [--backward]]  the kernel plan and cache entry, or its code
    attnpat inspect FILE_OR_NAME[:PATTERN] --target sm_XX     registers, spills, shared memory (ahead of time)
    attnpat verify FILE_OR_NAME[:PATTERN] [...]               property-test the kernels against the reference
    attnpat list [FILE ...]                                   list patterns with parameters and a summary

Each subcommand is one module of this package exporting ``COMMAND``, a :class:`~.arguments.Command`: it
adds its arguments to an argparse sub-parser and returns an exit status. What they share (argument types,
FILE_OR_NAME specs, ``--set`` and ``--input``) is in :mod:`.arguments`. Mistakes in patterns, parameters
or inputs are reported as compiler-style messages on stderr (exit status 1), never as a traceback; bad
usage exits with status 2; bare `attnpat` prints the help (status 0), `attnpat --version` the version.

Start-up: this package and the light commands (check, show, explain, list) import neither torch nor
triton (tests/test_imports.py checks it; benchmarks/cli_startup.py times it); the commands that run or
compile kernels import them inside their `run`. A missing optional dependency (hypothesis for verify,
matplotlib for show --png) is reported with the pip command that installs it.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..compiler.values import format_value
from ..errors import PatternError
from . import check, compile, explain, inspect, list as list_, show, verify
from .arguments import PROG, Command, error, parse_input, parse_set, unicode_ok
from .inspect import inspect_requests
from .list import summary

__all__ = ["main", "COMMANDS", "Command", "build_parser", "parse_set", "parse_input", "summary",
           "inspect_requests", "describe_value"]

COMMANDS: dict[str, Command] = {m.COMMAND.name: m.COMMAND
                                for m in (check, show, explain, compile, inspect, verify, list_)}

describe_value = format_value   # the name this module gave it before compiler.values existed


# Optional dependencies (extras in pyproject.toml) and how to get them.
_OPTIONAL = {"hypothesis": "install it with: pip install 'attnpat[verify]'",
             "matplotlib": "install it with: pip install 'attnpat[plot]'"}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand in COMMANDS."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="attnpat: a compiler for attention sparsity patterns.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
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
    if getattr(args, "run", None) is None:    # bare `attnpat`: say what it can do
        parser.print_help()
        return 0
    for stream in (sys.stdout, sys.stderr):   # e.g. LANG=C: print '?' rather than fail on a '█' or '·'
        if not unicode_ok(stream) and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):
                pass
    try:
        return args.run(args)
    except PatternError as exc:
        error(str(exc))
        return 1
    except ModuleNotFoundError as exc:
        if exc.name not in _OPTIONAL:
            raise
        message = str(exc)
        error(f"{PROG}: {message}" if "pip install" in message else f"{PROG}: {message}; {_OPTIONAL[exc.name]}")
        return 1
    except BrokenPipeError:     # `attnpat list | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130
