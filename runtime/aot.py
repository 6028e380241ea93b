"""Ahead-of-time compilation of generated kernels for a CUDA target, without a GPU.

``triton.compile`` lowers a kernel to PTX and a cubin for any ``GPUTarget``; the ``cuobjdump`` shipped in
the triton wheel then reads the cubin's resource usage (registers, stack, local memory = spills, shared
memory) and its SASS (HMMA / HGMMA = tensor-core MMA). The compile runs in a child process with the
interpreter switched off, because Triton fixes interpreter-or-compiler per process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

__all__ = ["AotReport", "compile_many", "TARGETS", "SMEM_LIMIT", "MAX_THREADS_REGS"]

TARGETS = {"sm_80": 80, "sm_86": 86, "sm_89": 89, "sm_90": 90, "sm_90a": 90}
SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}   # bytes per block, opt-in maximum
MAX_THREADS_REGS = 65536   # registers per SM on all of these


@dataclass(frozen=True, slots=True)
class AotReport:
    """What one ahead-of-time compile showed."""

    kernel: str
    target: str
    dtype: str
    head_dim: int
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    registers: int
    stack_bytes: int
    spill_bytes: int
    shared_bytes: int
    mma_count: int
    mma_kind: str
    occupancy_blocks: int

    @property
    def spills(self) -> bool:
        return self.spill_bytes > 0 or self.stack_bytes > 0

    def to_dict(self) -> dict:
        return asdict(self)


def _cuobjdump() -> str:
    import importlib.util
    spec = importlib.util.find_spec("triton")
    path = os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise RuntimeError("cuobjdump is not in this triton wheel; cannot read cubins")
    return path


def _child(request: dict) -> dict:
    """Runs in the child process: compile and measure."""
    import importlib.util

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.util.spec_from_file_location("attnpat_aot_module", request["path"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, request["kernel"])
    dtype = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}[request["dtype"]]
    signature, constexprs = {}, {}
    for name in fn.arg_names:
        if name in request["constexprs"]:
            signature[name] = "constexpr"
            constexprs[name] = request["constexprs"][name]
        elif name in request["pointers"]:
            signature[name] = "*" + request["pointers"][name].replace("DT", dtype)
        elif name in request["floats"]:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    # As Triton's JIT specialises for contiguous torch tensors: pointers 16-byte aligned, unit strides
    # constant (given in constexprs) and the other strides multiples of 16.
    aligned = list(request["pointers"]) + list(request.get("divisible", []))
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    target = GPUTarget("cuda", TARGETS[request["target"]], 32)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                              options={"num_warps": request["num_warps"], "num_stages": request["num_stages"]})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        res = subprocess.run([_cuobjdump(), "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_cuobjdump(), "-sass", cubin], capture_output=True, text=True, check=True).stdout
    usage = {}
    for line in res.splitlines():
        if "Function " + request["kernel"] in line or "Function" not in line:
            for key in ("REG", "STACK", "SHARED", "LOCAL"):
                m = re.search(key + r":(\d+)", line)
                if m:
                    usage[key] = max(usage.get(key, 0), int(m.group(1)))
    hmma = len(re.findall(r"\bHMMA\.", sass))
    hgmma = len(re.findall(r"\bHGMMA\.", sass))
    shared = max(usage.get("SHARED", 0), int(compiled.metadata.shared))
    return {"registers": usage.get("REG", 0), "stack_bytes": usage.get("STACK", 0),
            "spill_bytes": usage.get("LOCAL", 0), "shared_bytes": shared,
            "mma_count": hmma + hgmma, "mma_kind": "HGMMA" if hgmma else ("HMMA" if hmma else "none")}


def _occupancy(registers: int, shared: int, num_warps: int, arch: int) -> int:
    threads = 32 * num_warps
    by_regs = MAX_THREADS_REGS // max(1, registers * threads)
    by_smem = SMEM_LIMIT[arch] // shared if shared else 32
    by_threads = 2048 // threads
    return max(0, min(by_regs, by_smem, by_threads, 32))


def compile_many(requests: list[dict], *, jobs: int | None = None) -> list[AotReport]:
    """Compile many kernels ahead of time, in `jobs` child processes (default: the CPU count).

    Each request names the generated module (path), kernel, target, dtype, head_dim, block_m, block_n,
    num_warps, num_stages, constexprs, pointers (name -> element type, 'DT' for the data dtype) and
    floats (fp32 scalar arguments).
    """
    for r in requests:
        if r["target"] not in TARGETS:
            raise ValueError(f"unknown target {r['target']!r}; known: {', '.join(TARGETS)}")
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(requests)))
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    chunks = [requests[i::jobs] for i in range(jobs)]
    procs = [subprocess.Popen([sys.executable, "-m", "attnpat.runtime.aot"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in chunks]
    outputs = [p.communicate(json.dumps(c)) for p, c in zip(procs, chunks)]
    results: list[AotReport | None] = [None] * len(requests)
    for j, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs)):
        if proc.returncode != 0:
            raise RuntimeError(f"ahead-of-time compiler process failed:\n{stderr[-4000:]}")
        for i, out in zip(range(j, len(requests), jobs), json.loads(stdout.strip().splitlines()[-1])):
            r = requests[i]
            if "error" in out:
                raise RuntimeError(f"ahead-of-time compile of {r['kernel']} ({r['path']}) for {r['target']} "
                                   f"failed: {out['error']}")
            arch = TARGETS[r["target"]]
            results[i] = AotReport(r["kernel"], r["target"], r["dtype"], r["head_dim"], r["block_m"],
                                   r["block_n"], r["num_warps"], r["num_stages"], out["registers"],
                                   out["stack_bytes"], out["spill_bytes"], out["shared_bytes"], out["mma_count"],
                                   out["mma_kind"], _occupancy(out["registers"], out["shared_bytes"],
                                                               r["num_warps"], arch))
    return results


if __name__ == "__main__":
    payload = json.loads(sys.stdin.read())
    requests = payload if isinstance(payload, list) else [payload]
    results = []
    for req in requests:
        try:
            results.append(_child(req))
        except Exception as exc:   # reported per request, so one bad config does not hide the others
            results.append({"error": f"{type(exc).__name__}: {exc}"[-4000:]})
    print(json.dumps(results if isinstance(payload, list) else results[0]))
