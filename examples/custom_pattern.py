"""Write your own pattern, see what it does, and verify its kernels before spending a GPU hour.

Shows: a new pattern written as text (a causal window plus a few "sink" tokens plus every 64th token as a
landmark), the checker catching a typo with a compiler-style message, the canonical form and key, what
`explain` reports, the kernel's plan, and `attnpat.verify` property-testing forward and backward against
the float64 reference on random shapes, GQA, dtypes. verify runs the kernels on `attnpat.kernel_device()`:
compiled on the GPU when there is one, under Triton's interpreter on the CPU otherwise (no GPU needed).
"""

from __future__ import annotations

import warnings

import attnpat
from attnpat.compiler.analysis import analyze
from attnpat.verify import verify

warnings.filterwarnings("ignore", message="attnpat: kernels run under Triton's interpreter")

TEXT = """
# A causal window, 4 sink tokens and a landmark every `stride` tokens.
pattern landmarks(window: int = 256, sinks: int = 4, stride: int = 64):
    require window >= 1 and sinks >= 0 and stride >= 1
    recent = q - k < window
    mask causal and (recent or k < sinks or k % stride == 0)
"""


def main() -> None:
    try:
        attnpat.parse(TEXT.replace("q - k < window", "q - k < windw"), name="landmarks.attn")
    except attnpat.PatternError as exc:
        print("a typo is caught before anything runs:\n" + str(exc) + "\n")

    pattern = attnpat.parse(TEXT, name="landmarks.attn", window=16, stride=8)
    print(f"canonical: {pattern.canonical.text}\nkey: {pattern.key}")
    print(f"plan: {attnpat.compile(pattern).plan.mode}\n")
    print(analyze(pattern, 2048, layers=4))
    print()
    dev = attnpat.kernel_device()
    result = verify(pattern, spec="landmarks.attn", examples=6, max_len=64, device=dev.type)
    print(f"verify: {'ok' if result.passed else 'FAILED'} after {result.examples} random cases "
          f"(forward and backward against float64, kernels on {dev.type})")
    if not result.passed:
        print(result.failure)
        print(result.snippet)
    assert result.passed


if __name__ == "__main__":
    main()
