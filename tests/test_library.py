"""The standard pattern library (patterns/*.attn) against independent, loop-by-loop constructions.

Every library pattern is evaluated with `Pattern.dense_mask` and compared cell by cell with a plain
Python predicate written from the pattern's documented definition (nothing on the expected side goes
through attnpat's checker or evaluator; bigbird's random blocks use the specified `hash` builtin,
`hash32`, on Python ints). The file headers, their drawn examples, the defaults and every `require`
clause are checked too.
"""

from __future__ import annotations

import ast
import errno
import os
import re
import zlib
from importlib import resources

import numpy as np
import pytest
import torch

import attnpat
from attnpat.compiler.hashing import hash32

# --------------------------------------------------------------------------------------------------
# Independent definitions: predicate(P, q, k, h, i, inp) -> bool, with P the full parameter dict,
# q the absolute query position, k the key position, h the head, i the query row, and inp the runtime
# inputs of the current batch element (name -> list of ints).
# --------------------------------------------------------------------------------------------------


def _bigbird(P, q, k, h, i, inp):
    qb, kb = q // P["block"], k // P["block"]
    window = abs(qb - kb) <= P["window_blocks"] // 2
    glob = qb < P["global_blocks"] or kb < P["global_blocks"]
    rand = hash32(P["seed"], h, qb, kb) % P["key_blocks"] < P["random_blocks"]
    return window or glob or rand


def _per_seq(value):
    """An int[b] input's value for the current batch element (a drawn example gives it as a row)."""
    return value[0] if isinstance(value, list) else value


PREDICATES = {
    "full": lambda P, q, k, h, i, inp: True,
    "causal": lambda P, q, k, h, i, inp: k <= q,
    "sliding_window": lambda P, q, k, h, i, inp: 0 <= q - k < P["window"],
    "local": lambda P, q, k, h, i, inp: abs(q - k) <= P["radius"],
    "longformer": lambda P, q, k, h, i, inp: (abs(q - k) <= P["window"] // 2
                                              or q in P["globals"] or k in P["globals"]),
    "longformer_flags": lambda P, q, k, h, i, inp: (abs(q - k) <= P["window"] // 2
                                                    or inp["is_global"][q] != 0 or inp["is_global"][k] != 0),
    "dilated": lambda P, q, k, h, i, inp: (0 <= q - k < P["window"] * P["dilation"]
                                           and (q - k) % P["dilation"] == 0),
    "dilated_local": lambda P, q, k, h, i, inp: (abs(q - k) <= P["radius"] * P["dilation"]
                                                 and (q - k) % P["dilation"] == 0),
    "streaming_llm": lambda P, q, k, h, i, inp: k <= q and (k < P["sinks"] or q - k < P["window"]),
    "prefix_lm": lambda P, q, k, h, i, inp: k <= q or k < P["prefix"],
    "prefix_lm_dynamic": lambda P, q, k, h, i, inp: k <= q or k < inp["prefix_len"][i],
    "prefix_lm_lengths": lambda P, q, k, h, i, inp: k <= q or k < _per_seq(inp["prefix_len"]),
    "causal_padded": lambda P, q, k, h, i, inp: k <= q and k < _per_seq(inp["seq_len"]),
    "chunked_causal": lambda P, q, k, h, i, inp: k <= q and q // P["chunk"] == k // P["chunk"],
    "document": lambda P, q, k, h, i, inp: k <= q and inp["doc"][q] == inp["doc"][k],
    "document_full": lambda P, q, k, h, i, inp: inp["doc"][q] == inp["doc"][k],
    "document_sliding_window": lambda P, q, k, h, i, inp: (0 <= q - k < P["window"]
                                                           and inp["doc"][q] == inp["doc"][k]),
    "per_head": lambda P, q, k, h, i, inp: 0 <= q - k < P["windows"][h % len(P["windows"])],
    "bigbird": _bigbird,
    # score terms (softcap, bias, sink) change scores, not the mask: tests/test_scores.py checks them
    "gemma2_local": lambda P, q, k, h, i, inp: 0 <= q - k < P["window"],
    "gemma2_global": lambda P, q, k, h, i, inp: k <= q,
    "alibi": lambda P, q, k, h, i, inp: k <= q,
    "alibi_learned": lambda P, q, k, h, i, inp: k <= q,
    "gpt_oss_local": lambda P, q, k, h, i, inp: 0 <= q - k < P["window"],
    "gpt_oss_global": lambda P, q, k, h, i, inp: k <= q,
}

DEFAULTS = {
    "full": {},
    "causal": {},
    "sliding_window": {"window": 4096},
    "local": {"radius": 256},
    "longformer": {"window": 512, "globals": frozenset({0})},
    "longformer_flags": {"window": 512},
    "dilated": {"window": 1024, "dilation": 2},
    "dilated_local": {"radius": 512, "dilation": 2},
    "streaming_llm": {"sinks": 4, "window": 1020},
    "prefix_lm": {"prefix": 256},
    "prefix_lm_dynamic": {},
    "prefix_lm_lengths": {},
    "causal_padded": {},
    "chunked_causal": {"chunk": 8192},
    "document": {},
    "document_full": {},
    "document_sliding_window": {"window": 4096},
    "per_head": {"windows": (128, 256, 512, 1024)},
    "bigbird": {"block": 64, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3, "key_blocks": 64,
                "seed": 0},
    "gemma2_local": {"window": 4096, "cap": 50.0},
    "gemma2_global": {"cap": 50.0},
    "alibi": {"slopes": tuple(2.0 ** (-8 * (i + 1) / 8) for i in range(8))},
    "alibi_learned": {},
    "gpt_oss_local": {"window": 128},
    "gpt_oss_global": {},
}

# Parameter overrides tried for each pattern ({} = the defaults).
PARAMS = {
    "full": [{}],
    "causal": [{}],
    "sliding_window": [{"window": 1}, {"window": 2}, {"window": 3}, {"window": 5}, {}],
    "local": [{"radius": 0}, {"radius": 1}, {"radius": 2}, {"radius": 3}, {}],
    "longformer": [{"window": 1}, {"window": 2, "globals": {0, 5}}, {"window": 3, "globals": set()},
                   {"window": 4, "globals": [1, 30, 100]}, {}],
    "longformer_flags": [{"window": 1}, {"window": 2}, {"window": 5}, {}],
    "dilated": [{"window": 1, "dilation": 1}, {"window": 3, "dilation": 2}, {"window": 2, "dilation": 3},
                {"window": 4, "dilation": 1}, {"window": 1, "dilation": 4}, {}],
    "dilated_local": [{"radius": 0, "dilation": 1}, {"radius": 1, "dilation": 2}, {"radius": 2, "dilation": 3},
                      {"radius": 3, "dilation": 1}, {}],
    "streaming_llm": [{"sinks": 0, "window": 1}, {"sinks": 1, "window": 1}, {"sinks": 2, "window": 3},
                      {"sinks": 4, "window": 2}, {}],
    "prefix_lm": [{"prefix": 0}, {"prefix": 1}, {"prefix": 3}, {"prefix": 8}, {}],
    "prefix_lm_dynamic": [{}],
    "prefix_lm_lengths": [{}],
    "causal_padded": [{}],
    "chunked_causal": [{"chunk": 1}, {"chunk": 2}, {"chunk": 3}, {"chunk": 5}, {}],
    "document": [{}],
    "document_full": [{}],
    "document_sliding_window": [{"window": 1}, {"window": 2}, {"window": 3}, {"window": 6}, {}],
    "per_head": [{"windows": [1, 2, 4]}, {"windows": [3]}, {"windows": [1, 5, 2, 8, 3]}, {}],
    "bigbird": [{"block": 1, "window_blocks": 1, "global_blocks": 0, "random_blocks": 0, "key_blocks": 1},
                {"block": 2, "window_blocks": 3, "global_blocks": 1, "random_blocks": 2, "key_blocks": 8},
                {"block": 3, "window_blocks": 5, "global_blocks": 0, "random_blocks": 1, "key_blocks": 4,
                 "seed": 7},
                {"block": 4, "window_blocks": 1, "global_blocks": 2, "random_blocks": 3, "key_blocks": 5,
                 "seed": 123},
                {"block": 1, "window_blocks": 3, "global_blocks": 0, "random_blocks": 1, "key_blocks": 2,
                 "seed": 2**40 + 5},
                {}],
    "gemma2_local": [{"window": 1, "cap": 1}, {"window": 3, "cap": 30.0}, {}],
    "gemma2_global": [{"cap": 0.5}, {}],
    "alibi": [{"slopes": [1.0]}, {"slopes": [0.5, 2]}, {}],
    "alibi_learned": [{}],
    "gpt_oss_local": [{"window": 1}, {"window": 4}, {}],
    "gpt_oss_global": [{}],
}

# (q_len, kv_len, q_offset, batch, heads)
SHAPES = [
    (7, 7, None, 1, 1),
    (16, 16, None, 2, 3),
    (5, 13, None, 1, 2),
    (1, 9, None, 2, 1),
    (33, 40, None, 2, 4),
    (0, 5, None, 1, 1),
    (6, 12, 3, 2, 2),     # explicit q_offset: queries sit at positions 3..8
    (4, 9, 0, 1, 1),      # q_offset = 0: top-left aligned
]


def _doc_ids(rng, length):
    if rng.random() < 0.5:   # packed documents: contiguous runs
        return np.cumsum(rng.random(length) < 0.3).tolist()
    return rng.integers(-2, 3, length).tolist()   # arbitrary ids: only equality matters


INPUTS = {
    "longformer_flags": lambda rng, ql, kl: {"is_global": rng.choice([0, 0, 0, 0, 0, 0, 1, 2, -1], kl).tolist()},
    "prefix_lm_dynamic": lambda rng, ql, kl: {
        "prefix_len": ([int(rng.integers(0, kl + 3))] * ql if rng.random() < 0.5
                       else rng.integers(0, kl + 3, ql).tolist())},
    "prefix_lm_lengths": lambda rng, ql, kl: {"prefix_len": int(rng.integers(-1, kl + 3))},
    "causal_padded": lambda rng, ql, kl: {"seq_len": int(rng.integers(-1, kl + 3))},
    "document": lambda rng, ql, kl: {"doc": _doc_ids(rng, kl)},
    "document_full": lambda rng, ql, kl: {"doc": _doc_ids(rng, kl)},
    "document_sliding_window": lambda rng, ql, kl: {"doc": _doc_ids(rng, kl)},
}


def make_inputs(name, rng, q_len, kv_len, batch):
    """Per-batch input rows (for the expected side) and what is passed to dense_mask."""
    if name not in INPUTS:
        return [{}] * batch, {}
    shared = batch == 1 or rng.random() < 0.25          # one row shared by the batch, passed 1-D
    rows = [INPUTS[name](rng, q_len, kv_len)] * batch if shared else \
        [INPUTS[name](rng, q_len, kv_len) for _ in range(batch)]
    passed = {}
    for key in rows[0]:
        if isinstance(rows[0][key], int):   # an int[b] input: [batch], or shared as an int, 0-d or [1]
            one = rows[0][key]
            passed[key] = (np.array([r[key] for r in rows], dtype=np.int64) if not shared else
                           [one, torch.tensor(one), torch.tensor([one])][int(rng.integers(0, 3))])
        elif shared:
            # (an empty Python list has no integer dtype: pass empty inputs as tensors)
            as_list = rng.random() < 0.5 and len(rows[0][key]) > 0
            passed[key] = rows[0][key] if as_list else torch.tensor(rows[0][key], dtype=torch.int64)
        else:
            passed[key] = np.array([r[key] for r in rows], dtype=np.int64)
    return rows, passed


def expected_mask(name, params, q_len, kv_len, *, batch=1, heads=1, q_offset=None, rows=None):
    P = {**DEFAULTS[name], **params}
    if "globals" in P:
        P["globals"] = set(P["globals"])
    q0 = kv_len - q_len if q_offset is None else q_offset
    pred = PREDICATES[name]
    rows = rows or [{}] * batch
    out = np.zeros((batch, heads, q_len, kv_len), dtype=bool)
    for b in range(batch):
        for h in range(heads):
            for i in range(q_len):
                for k in range(kv_len):
                    out[b, h, i, k] = bool(pred(P, q0 + i, k, h, i, rows[b]))
    return out


def _param_id(params):
    return ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"


CASES = [pytest.param(name, params, id=f"{name}[{_param_id(params)}]")
         for name, plist in PARAMS.items() for params in plist]


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", CASES)
def test_dense_mask_matches_independent_construction(name, params):
    pattern = attnpat.load(name, **params)
    rng = np.random.default_rng(zlib.crc32(f"{name}[{_param_id(params)}]".encode()))
    for q_len, kv_len, q_offset, batch, heads in SHAPES:
        rows, passed = make_inputs(name, rng, q_len, kv_len, batch)
        got = pattern.dense_mask(q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset, **passed)
        assert got.dtype == torch.bool and tuple(got.shape) == (batch, heads, q_len, kv_len)
        want = expected_mask(name, params, q_len, kv_len, batch=batch, heads=heads, q_offset=q_offset,
                             rows=rows)
        bad = np.argwhere(got.numpy() != want)
        assert bad.size == 0, (f"{pattern!r} on q_len={q_len}, kv_len={kv_len}, q_offset={q_offset}, "
                               f"batch={batch}, heads={heads}: first mismatch at [b, h, row, k] = "
                               f"{bad[0].tolist()} (expected {want[tuple(bad[0])]})")
        if q_offset is None and q_len and name not in CUT_KEYS:
            # bottom-right aligned queries always keep at least one key (their own position)
            assert bool(got.any(-1).all()), f"{pattern!r}: a query row with no key"


# Patterns whose runtime inputs may mask every key of a row (a sequence length of 0).
CUT_KEYS = {"causal_padded"}

# Patterns that read an int[k] runtime input at the query position (input[q]).
READS_INT_K_AT_Q = {"longformer_flags", "document", "document_full", "document_sliding_window"}


@pytest.mark.parametrize("name", sorted(READS_INT_K_AT_Q))
def test_no_queries_with_an_int_k_input_read_at_q(name):
    key = "is_global" if name == "longformer_flags" else "doc"
    got = attnpat.load(name).dense_mask(0, 5, **{key: [0, 0, 1, 1, 1]})
    assert tuple(got.shape) == (1, 1, 0, 5)


def test_every_library_pattern_is_covered():
    assert set(attnpat.library_names()) == set(PREDICATES) == set(DEFAULTS) == set(PARAMS)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_loads_with_defaults(name):
    p = attnpat.load(name)
    assert p.name == name
    assert p.params == DEFAULTS[name]
    rng = np.random.default_rng(0)
    rows, passed = make_inputs(name, rng, 6, 10, 1)
    assert set(p.inputs) == set(passed)
    got = p.dense_mask(6, 10, **passed)
    assert np.array_equal(got.numpy(), expected_mask(name, {}, 6, 10, rows=rows))


def test_per_head_windows_cycle_over_heads():
    p = attnpat.load("per_head", windows=[1, 3])
    m = p.dense_mask(8, 8, heads=5)
    for h in range(5):
        assert torch.equal(m[0, h], m[0, h % 2])
    assert not torch.equal(m[0, 0], m[0, 1])


def test_bigbird_heads_draw_different_random_blocks():
    p = attnpat.load("bigbird", block=2, window_blocks=1, global_blocks=0, random_blocks=2, key_blocks=8)
    m = p.dense_mask(32, 32, heads=4, batch=2)
    assert torch.equal(m[0], m[1])                       # the same for every batch element
    assert len({m[0, h].numpy().tobytes() for h in range(4)}) == 4


def test_bigbird_random_blocks_on_average():
    r, n = 3, 64
    p = attnpat.load("bigbird", block=1, window_blocks=1, global_blocks=0, random_blocks=r, key_blocks=n)
    m = p.dense_mask(n, n, heads=8)
    off_diagonal = m.sum(-1).double() - 1                # the window (own block) always counts one
    mean = float(off_diagonal.mean())
    assert abs(mean - r * (n - 1) / n) < 0.5, mean


def test_document_patterns_follow_each_batch_element():
    doc = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 1, 1, 2, 2, 2]])
    m = attnpat.load("document").dense_mask(6, 6, batch=2, doc=doc)
    assert m[0, 0, 3, 0] and not m[1, 0, 3, 0]
    assert m[1, 0, 5, 3] and not m[0, 0, 5, 3]


# --------------------------------------------------------------------------------------------------
# Loading and composition
# --------------------------------------------------------------------------------------------------

def test_load_by_file_and_pattern():
    assert attnpat.load("dilated:dilated_local", radius=2).name == "dilated_local"
    assert attnpat.load("dilated").name == "dilated"
    path = resources.files("attnpat.patterns") / "longformer.attn"
    p = attnpat.load(f"{path}:longformer_flags", window=4)
    assert p.name == "longformer_flags" and p.inputs == {"is_global": "k"}


@pytest.mark.parametrize("spec, message", [
    ("slidng_window", "error: no file or library pattern named 'slidng_window' (did you mean 'sliding_window'?)"),
    ("documnt_full", "error: no file or library pattern named 'documnt_full' (did you mean 'document_full'?)"),
    ("prefix_lm_dynamc", "error: no file or library pattern named 'prefix_lm_dynamc' "
                         "(did you mean 'prefix_lm_dynamic'?)"),
    ("chunked", "error: no file or library pattern named 'chunked' (did you mean 'chunked_causal'?)"),
    ("zzzzzz", "error: no file or library pattern named 'zzzzzz'"),
    ("document:documnt_full", "error: no pattern 'documnt_full' in patterns/document.attn "
                              "(did you mean 'document_full'?); it has: document, document_full"),
])
def test_load_unknown_name_suggests_library_names(spec, message):
    with pytest.raises(attnpat.PatternNameError) as info:
        attnpat.load(spec)
    assert str(info.value) == message


def test_load_missing_file_suggests_a_library_pattern(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(attnpat.PatternError) as info:
        attnpat.load("sliding_windw.attn")
    assert type(info.value) is attnpat.PatternError
    missing = os.strerror(errno.ENOENT)   # 'No such file or directory'
    assert str(info.value) == (f"error: cannot read 'sliding_windw.attn': {missing} "
                               f"(did you mean the library pattern 'sliding_window'?)")
    for spec in ("nothing_like_it.attn", "sub/sliding_windw.attn"):   # nothing close; a path of its own
        with pytest.raises(attnpat.PatternError) as info:
            attnpat.load(spec)
        assert str(info.value) == f"error: cannot read '{spec}': {missing}"


def test_load_suggestions_search_library_file_names(monkeypatch):
    from attnpat import library
    stems = sorted(p.name[:-5] for p in resources.files("attnpat.patterns").iterdir() if p.name.endswith(".attn"))
    assert set(stems) <= set(library._library_candidates())
    assert set(attnpat.library_names()) <= set(library._library_candidates())
    # a library file whose name is no pattern's is suggested by its file name
    monkeypatch.setattr(library, "_library_candidates", lambda: ["sliding_window", "local_attention_family"])
    with pytest.raises(attnpat.PatternNameError, match=r"did you mean 'local_attention_family'\?"):
        attnpat.load("local_atention_family")


def test_cli_unknown_name_suggests_library_names(capsys):
    from attnpat.cli import main
    assert main(["show", "streaming_lm"]) == 1
    err = capsys.readouterr().err
    assert "error: no file or library pattern named 'streaming_lm' (did you mean 'streaming_llm'?)" in err
    assert main(["check", "dilatd"]) == 1
    assert "no file or library pattern named 'dilatd' (did you mean 'dilated'?)" in capsys.readouterr().err


def test_library_defines_no_reserved_names():
    from attnpat.compiler.check import RESERVED_INPUT_NAMES, RESERVED_PARAMETER_NAMES, RESERVED_PATTERN_NAMES
    for name in attnpat.library_names():
        module, d = attnpat.library.resolve_library(name)
        assert d.name not in RESERVED_PATTERN_NAMES
        assert not {p.name for p in d.params} & set(RESERVED_PARAMETER_NAMES)
        assert not {s.name for s in d.body if type(s).__name__ == "InputDecl"} & set(RESERVED_INPUT_NAMES)


def test_library_patterns_compose():
    # `causal` is both a builtin condition and a library pattern; calling it means the pattern.
    text = """
pattern mixed():
    mask causal() and not full() or document() and sliding_window(window=3)
"""
    p = attnpat.parse(text)
    assert p.inputs == {"doc": "k"}
    doc = [0, 0, 1, 1, 1, 1, 2, 2, 2]
    ref = attnpat.load("document_sliding_window", window=3).dense_mask(9, 9, doc=doc)
    assert torch.equal(p.dense_mask(9, 9, doc=doc), ref)

    text = """
pattern sinks_again(s: int = 2, w: int = 3):
    mask causal() and (k < s or sliding_window(window=w))
"""
    p = attnpat.parse(text, s=1, w=4)
    assert torch.equal(p.dense_mask(12, 12), attnpat.load("streaming_llm", sinks=1, window=4).dense_mask(12, 12))


# --------------------------------------------------------------------------------------------------
# Requirements
# --------------------------------------------------------------------------------------------------

# (pattern, parameter, a value its require clauses reject)
BAD_VALUES = [
    ("sliding_window", "window", 0), ("sliding_window", "window", -3),
    ("local", "radius", -1),
    ("longformer", "window", 0),
    ("longformer_flags", "window", 0),
    ("dilated", "window", 0), ("dilated", "dilation", 0), ("dilated", "dilation", -2),
    ("dilated_local", "radius", -1), ("dilated_local", "dilation", 0),
    ("streaming_llm", "sinks", -1), ("streaming_llm", "window", 0),
    ("prefix_lm", "prefix", -1),
    ("chunked_causal", "chunk", 0), ("chunked_causal", "chunk", -4),
    ("document_sliding_window", "window", 0),
    ("per_head", "windows", []),
    ("bigbird", "block", 0), ("bigbird", "block", -1),
    ("bigbird", "window_blocks", 0), ("bigbird", "window_blocks", 2),
    ("bigbird", "global_blocks", -1),
    ("bigbird", "random_blocks", -1), ("bigbird", "random_blocks", 65),
    ("bigbird", "key_blocks", 0),
    ("gemma2_local", "window", 0), ("gemma2_local", "cap", 0.0), ("gemma2_local", "cap", -1.0),
    ("gemma2_global", "cap", 0.0),
    ("alibi", "slopes", []),
    ("gpt_oss_local", "window", 0),
]

# Parameters that have no sensible constraint.
UNCONSTRAINED = {("longformer", "globals"), ("bigbird", "seed")}


def _bad_key(case):
    return tuple(case.values[:2]) if hasattr(case, "values") else case[:2]


@pytest.mark.parametrize("name,param,value", BAD_VALUES)
def test_requirement_rejects_bad_value(name, param, value):
    with pytest.raises(attnpat.RequirementError) as info:
        attnpat.load(name, **{param: value})
    assert param in str(info.value)


def test_every_parameter_is_validated_or_listed_as_free():
    covered = {_bad_key(c) for c in BAD_VALUES} | UNCONSTRAINED
    declared = {(name, param) for name in attnpat.library_names() for param in attnpat.load(name).params}
    assert declared == covered


def test_boundary_values_are_accepted():
    attnpat.load("sliding_window", window=1)
    attnpat.load("local", radius=0)
    attnpat.load("dilated", window=1, dilation=1)
    attnpat.load("streaming_llm", sinks=0, window=1)
    attnpat.load("prefix_lm", prefix=0)
    attnpat.load("chunked_causal", chunk=1)
    attnpat.load("per_head", windows=[1])
    attnpat.load("bigbird", block=1, window_blocks=1, global_blocks=0, random_blocks=0, key_blocks=1)
    attnpat.load("bigbird", random_blocks=64, key_blocks=64)


# --------------------------------------------------------------------------------------------------
# File headers and their drawn examples
# --------------------------------------------------------------------------------------------------

def _library_files():
    root = resources.files("attnpat.patterns")
    return {p.name: p.read_text() for p in root.iterdir() if p.name.endswith(".attn")}


@pytest.mark.parametrize("filename", sorted(_library_files()))
def test_file_opens_with_a_descriptive_comment(filename):
    text = _library_files()[filename]
    lines = text.splitlines()
    stem = filename[:-5]
    assert lines[0].startswith(f"# {stem} -- "), lines[0]
    header = []
    for line in lines:
        if line.startswith("pattern "):
            break
        assert line == "" or line.startswith("#"), line
        header.append(line)
    header_text = "\n".join(header)
    assert "# Source:" in header_text and "# Example:" in header_text
    module_names = re.findall(r"^pattern (\w+)\(", text, re.M)
    for name in module_names:
        assert name in header_text, f"{filename}: header does not mention pattern {name}"
        for param in attnpat.load(f"{stem}:{name}").params:
            assert re.search(rf"#\s+{param}\s", header_text), f"{filename}: parameter {param} undocumented"
    for line in lines:
        assert len(line) <= 106 and line == line.rstrip() and "\t" not in line, line
        if line.strip() and not line.startswith("#"):
            assert (len(line) - len(line.lstrip())) % 4 == 0, line


def _parse_call(text):
    call = ast.parse(text, mode="eval").body
    assert isinstance(call, ast.Call) and not call.args
    return call.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def _examples():
    """Every drawn example: (file, pattern, params, inputs, panels) with panels [(label, grid lines)]."""
    out = []
    for filename, text in sorted(_library_files().items()):
        lines = text.splitlines()
        for n, line in enumerate(lines):
            m = re.match(r"# Example: (\w+\(.*?\))(?: on .*)?$", line)
            if not m:
                continue
            name, params = _parse_call(m.group(1))
            inputs, j = {}, n + 1
            while not lines[j].startswith("#     "):
                w = re.match(r"# with (\w+) = (\[.*\])$", lines[j])
                if w:
                    inputs[w.group(1)] = ast.literal_eval(w.group(2))
                j += 1
            grid = []
            while j < len(lines) and lines[j].startswith("#     "):
                grid.append(lines[j][6:])
                j += 1
            if grid[0].strip()[0] in "x.":
                labels, grid_rows = [""], grid
            else:
                labels, grid_rows = re.split(r" {2,}", grid[0].strip()), grid[1:]
            split = [re.split(r" {2,}", row.strip()) for row in grid_rows]
            assert all(len(parts) == len(labels) for parts in split), f"{filename}: ragged example"
            panels = [(label, [parts[p] for parts in split]) for p, label in enumerate(labels)]
            out.append(pytest.param(filename, name, params, inputs, panels, id=f"{filename}:{name}"))
    return out


EXAMPLES = _examples()


def test_every_pattern_has_a_drawn_example():
    assert sorted(p.values[1] for p in EXAMPLES) == sorted(attnpat.library_names())


@pytest.mark.parametrize("filename,name,params,inputs,panels", EXAMPLES)
def test_drawn_example_is_correct(filename, name, params, inputs, panels):
    n = len(panels[0][1])
    labels = [label for label, _ in panels]
    heads, batch = 1, 1
    if labels[0].startswith("head"):
        heads = len(panels)
        assert labels == [f"head {h}" for h in range(heads)]
    elif labels[0].startswith("batch"):
        batch = len(panels)
        for b, label in enumerate(labels):
            m = re.fullmatch(rf"batch {b}: (\w+) = (-?\d+)", label)
            assert m, label
            inputs.setdefault(m.group(1), []).append([int(m.group(2))] * n)
    rows = [{key: (v[b] if batch > 1 else v) for key, v in inputs.items()} for b in range(batch)]
    want = expected_mask(name, params, n, n, batch=batch, heads=heads, rows=rows)
    for idx, (_, grid) in enumerate(panels):
        drawn = np.array([[c == "x" for c in row.split()] for row in grid])
        assert drawn.shape == (n, n), grid
        b, h = (idx, 0) if batch > 1 else (0, idx)
        assert np.array_equal(drawn, want[b, h]), f"{filename}: the example of {name} is wrong (panel {idx})"


def test_a_parameter_passed_where_a_pattern_name_belongs_says_how_to_pass_it():
    with pytest.raises(attnpat.ArgumentError, match=r"keywords: load\('sliding_window', window=4096\)"):
        attnpat.load("sliding_window", 4096)
    with pytest.raises(attnpat.ParameterError, match=r"load\('sliding_window', window=16\).*--set window=16"):
        attnpat.load("sliding_window:window=16")
    with pytest.raises(attnpat.ArgumentError, match="a pattern spec is a string"):
        attnpat.load(4096)


def test_an_input_axis_clash_points_at_the_callers_declaration_and_names_the_other_pattern():
    text = "pattern mine():\n    input doc: int[q]\n    mask document() and doc[q] > 0\n"
    with pytest.raises(attnpat.PatternTypeError) as info:
        attnpat.parse(text, name="mine.attn")
    err = info.value
    assert err.span.source.name == "mine.attn" and err.span.line == 2
    assert "int[q] in pattern 'mine' but int[k] in pattern 'document'" in err.message
    assert err.notes and "document.attn" in err.notes[0]


def test_a_neighbouring_position_hints_at_an_input_of_its_own():
    text = "pattern p():\n    input doc: int[k]\n    mask doc[k - 1] == doc[k]\n"
    with pytest.raises(attnpat.PatternTypeError, match="can only be indexed by q or k") as info:
        attnpat.parse(text)
    assert "input start: int[k]" in info.value.notes[0]
