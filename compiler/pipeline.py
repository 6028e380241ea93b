"""The compiler's stages in order, on one screen.

    stage      from                         to               where
    parse      text                         Module (AST)     compiler/parse.py
    check      Module, name, parameters     CheckedPattern   compiler/check.py, check_expr.py
    simplify   CheckedPattern               Canonical        compiler/simplify/
    plan       Canonical                    KernelPlan       compiler/codegen/plan.py
    codegen    Compiled                     kernel source    compiler/codegen/ (forward, backward)
    -- runtime --
    lower      Compiled + shape + inputs    BlockMask        compiler/lower/ (tables for the table plan)
    cache      kernel source                imported module  runtime/cache.py
    launch     module + tensors             output           runtime/kernel.py, runtime/autograd.py

Each stage is a pure function from one frozen, printable value to the next. `front` runs the stages a
`Pattern` needs to exist (parse, check); `back` runs the rest of the compiler (simplify, plan) and returns
the one frozen :class:`Compiled` value that code generation, lowering and the runtime read. `Pattern`
(attnpat/pattern.py) is the user's handle on these values.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import nodes as N
from .check import CheckedPattern, Resolver, check_pattern
from .codegen import KernelPlan, generate, generate_bwd, plan
from .parse import parse_module
from .simplify import Canonical, simplify

__all__ = ["Compiled", "STAGES", "parse", "check", "front", "back", "forward_source", "backward_source"]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A pattern through every compile-time stage: what the runtime needs, and nothing it would recompute.

    Attributes:
        checked: the closed, typed mask (stage check).
        canonical: the simplified IR, its text and the key shared by equivalent spellings (stage simplify).
        plan: the kernel strategy (stage plan): band loops or block-mask tables, inputs in argument order.
    """

    checked: CheckedPattern
    canonical: Canonical
    plan: KernelPlan

    @property
    def key(self) -> str:
        """The canonical key: equal for equivalent spellings, so they share kernels and cache entries."""
        return self.canonical.key

    @property
    def name(self) -> str:
        """The pattern's name."""
        return self.checked.name

    def __str__(self) -> str:
        return f"Compiled({self.name}: {self.canonical.text}; {self.plan.mode} plan)"


def parse(text: str, source_name: str = "<string>") -> N.Module:
    """Stage parse: pattern text -> the module's AST (syntax errors point at the text)."""
    return parse_module(text, source_name)


def check(module: N.Module, name: str, params: dict[str, object] | None = None,
          resolver: Resolver | None = None) -> CheckedPattern:
    """Stage check: bind parameters, inline calls, type-check and fold constants."""
    return check_pattern(module, name, params, resolver)


def front(module: N.Module, name: str, params: dict[str, object] | None = None,
          resolver: Resolver | None = None) -> CheckedPattern:
    """The stages a Pattern needs to exist: a parsed module in, the checked pattern out."""
    return check(module, name, params, resolver)


def back(checked: CheckedPattern) -> Compiled:
    """The rest of the compiler: simplify (raises EmptyPatternError for an empty mask), then plan."""
    canonical = simplify(checked)
    return Compiled(checked, canonical, plan(canonical))


def forward_source(compiled: Compiled) -> str:
    """Stage codegen, forward: the Python source of the pattern's forward kernel module."""
    return generate(compiled.canonical, compiled.plan)


def backward_source(compiled: Compiled) -> str:
    """Stage codegen, backward: the Python source of the pattern's dK/dV and dQ kernel module."""
    return generate_bwd(compiled.canonical, compiled.plan)


# The stage list as data: `attnpat` tools print it, and tests check it names every stage function above.
STAGES = (("parse", parse), ("check", check), ("simplify", simplify), ("plan", plan),
          ("codegen", forward_source), ("codegen", backward_source))
