"""Stage codegen: a canonical pattern -> the Python source of its Triton kernel modules.

    plan.py        KernelPlan: band or table plan, runtime inputs, key intervals (stage plan)
    predicate.py   the predicate as Triton code, printed through compiler/semantics.py; helpers on demand
    bands.py       the one derivation of band-plan block loops (forward, dQ, dK/dV) and the FULL-tile test
    inputs.py      runtime inputs: names, tile arguments and the one emitter of their loads
    signature.py   the kernels' launch signatures, shared with the launchers and the AOT requests
    template.py    the one templating mechanism (${name} placeholders) over templates/*.py.txt
    forward.py     the forward module (attn_fwd)
    backward.py    the backward module (attn_bwd_dkdv, attn_bwd_dq)
"""

from .backward import generate_bwd
from .forward import generate
from .plan import KernelPlan, bound_code, key_families, plan
from .predicate import MAX_RUNS

__all__ = ["KernelPlan", "plan", "generate", "generate_bwd", "key_families", "bound_code", "MAX_RUNS"]
