"""`attnpat explain`: what a pattern costs and sees at one shape."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .arguments import INPUT_HELP, Command, add_spec_arguments, collect_inputs, integer, pattern_from_args, positive


def _configure(p: argparse.ArgumentParser) -> None:
    add_spec_arguments(p)
    p.add_argument("--q-len", type=positive, metavar="N", required=True, help="queries (rows)")
    p.add_argument("--kv-len", type=positive, metavar="M", help="keys (columns); default: q_len")
    p.add_argument("--q-offset", type=integer, metavar="N",
                   help="absolute position of query row 0 (default: kv_len - q_len, i.e. bottom-right aligned)")
    for flag, default, metavar, text in (
            ("--layers", 1, "L", "stacked layers for the receptive field (default 1)"),
            ("--heads", 1, "H", "heads (counts are summed over heads; per-head patterns differ per head; default 1)"),
            ("--batch", None, "B", "batch size (default: the rows of the runtime inputs, or 1)"),
            ("--head-dim", 128, "D", "head dimension for the FLOP counts (4 * D per computed pair; default 128)"),
            ("--block-q", 128, "BQ", "query rows per tile (default 128, the forward kernel's)"),
            ("--block-k", 64, "BK", "keys per tile (default 64, the forward kernel's)")):
        p.add_argument(flag, type=positive, default=default, metavar=metavar, help=text)
    p.add_argument("--input", action="append", metavar="NAME=V1,V2,...", default=[], help=INPUT_HELP)
    p.add_argument("--ranks", type=positive, metavar="P",
                   help="also plan context parallelism over P ranks (contiguous shards of q_len; needs kv_len = "
                        "q_len): per-rank work and the bytes each receives, against all-gather and ring")
    p.add_argument("--layout", choices=("contiguous", "zigzag", "auto"), default="contiguous",
                   help="--ranks' layout: contiguous shards, zigzag (rank r holds chunks r and 2P-1-r of 2P), or "
                        "auto (both, and the one attnpat.distributed would choose, with why)")
    p.add_argument("--kv-heads", type=positive, metavar="HKV", help="kv heads for --ranks' bytes (default: heads)")
    p.add_argument("--bytes-per-element", type=positive, default=2, metavar="E",
                   help="element size for --ranks' bytes (default 2: fp16 / bf16)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def _run(args: argparse.Namespace) -> int:
    import json
    import time

    from ..compiler.analysis import analyze

    pattern = pattern_from_args(args)
    q_len = args.q_len
    kv_len = args.kv_len or q_len
    inputs, input_batch = collect_inputs(pattern, args.input, q_len, kv_len)
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
    ranks = _ranks(args, pattern, q_len, kv_len, batch, inputs) if args.ranks else None
    if args.json:
        print(json.dumps({**a.to_dict(), **(ranks[0] if ranks else {})}, indent=2))
        return 0
    print(a.report())
    if ranks:
        print(ranks[1])
    for text in args.input:
        print(f"  input {text.strip()}")
    print(f"(analysed in {elapsed:.2f} s; {a.evaluated:,} points evaluated one by one, inside partial tiles)")
    return 0


def _ranks(args, pattern, q_len: int, kv_len: int, batch: int, inputs: dict):
    """(JSON fields, report text) of the context-parallel plan over --ranks shards: "ranks" (per-rank rows of
    the layout used) and "layout"; with --layout auto also "layout_reason" and "ranks_by_layout"."""
    from ..distributed.plan import even_lengths, layout_chunks, layout_choice, make_plan, rank_rows, report
    if kv_len != q_len:
        raise InputError(f"--ranks shards one sequence (self-attention): --kv-len {kv_len} must equal --q-len")
    P = args.ranks
    tables = {n: t.numpy() for n, t in inputs.items()}
    row_bytes = 2 * batch * (args.kv_heads or args.heads) * args.head_dim * args.bytes_per_element
    if args.layout == "auto":
        chosen, why, plans = layout_choice(pattern.compiled, q_len, P, heads=args.heads, batch=batch, tables=tables)
        by_layout = {name: rank_rows(cplan, row_bytes, chunks) for name, (cplan, chunks) in plans.items()}
        texts = [report(cplan, row_bytes, chunks, name) for name, (cplan, chunks) in plans.items()]
        fields = {"ranks": by_layout[chosen], "layout": chosen, "layout_reason": why, "ranks_by_layout": by_layout}
        return fields, "\n".join(texts + [f"layout auto: {chosen}, because {why}"])
    if args.layout == "zigzag" and q_len % (2 * P):
        raise InputError(f"--layout zigzag cuts --q-len {q_len} into {2 * P} equal chunks: make it a multiple")
    chunks = layout_chunks(args.layout, even_lengths(q_len, P))
    cplan = make_plan(pattern.compiled, chunks.lengths, heads=args.heads, batch=batch, tables=tables)
    fields = {"ranks": rank_rows(cplan, row_bytes, chunks), "layout": args.layout}
    return fields, report(cplan, row_bytes, chunks, args.layout)


COMMAND = Command("explain", "what a pattern costs and sees at one shape: density, tiles, FLOPs, look-back, "
                             "empty rows, receptive field", _configure, _run)
