"""The command line: `attnpat check / show / list`, run in-process through attnpat.cli.main."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

import attnpat
from attnpat import PatternSyntaxError
from attnpat.cli import main, parse_input, parse_set
from attnpat.compiler.parse import parse_expr, parse_module
from attnpat import draw

WINDOW = """\
# A causal sliding window.
pattern window(w: int = 3):
    require w >= 1
    mask causal and q - k < w

# Example: not a description.
pattern docs():
    input doc: int[k]
    mask causal and doc[q] == doc[k]

pattern heads(ws: list = [1, 2]):
    mask causal and q - k < ws[h]

pattern nodefault(n: int):
    require n >= 2
    mask q - k < n
"""


@pytest.fixture
def attn(tmp_path):
    """Write pattern text to a file and return its path."""
    def write(text: str, name: str = "pats.attn") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def grid_rows(out: str) -> list[str]:
    """The drawn rows of `attnpat show` output: 'label  cells' lines after the 'q \\ k' axis line."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.lstrip().startswith("q \\ k"))
    rows = []
    for line in lines[start + 1:]:
        parts = line.split()
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            break
        rows.append(line)
    return rows


# -- check -----------------------------------------------------------------------------------------------

def test_check_ok(capsys, attn):
    path = attn(WINDOW)
    status, out, err = run(capsys, "check", path)
    assert status == 0, err
    assert out.startswith(f"{path}: ok (4 patterns")
    assert "nodefault checked with placeholder values n=2" in out


def test_check_library(capsys):
    status, out, err = run(capsys, "check")
    assert status == 0, err
    lines = out.splitlines()
    assert lines and all(": ok (" in line for line in lines)
    assert any(line.startswith("patterns/sliding_window.attn: ok") for line in lines)


def test_check_library_name(capsys):
    status, out, _ = run(capsys, "check", "sliding_window")
    assert status == 0
    assert out == "patterns/sliding_window.attn: ok (1 pattern)\n"


def test_check_bad_file(capsys, attn):
    good = attn(WINDOW, "good.attn")
    bad = attn("pattern a(window: int = 4):\n    mask causal and q - k < windw\n", "bad.attn")
    status, out, err = run(capsys, "check", good, bad)
    assert status == 1
    assert f"{good}: ok" in out
    assert f"{bad}:2:29: error: unknown name 'windw' (did you mean 'window'?)" in err
    assert "    mask causal and q - k < windw\n" in err
    assert "^^^^^" in err
    assert f"{bad}: 1 of 1 pattern failed" in err


def test_check_syntax_error(capsys, attn):
    bad = attn("pattern a():\n    mask q <\n")
    status, out, err = run(capsys, "check", bad)
    assert status == 1
    assert err.startswith(f"{bad}:2:")
    assert "error: unexpected end of line" in err


def test_check_missing_file(capsys, tmp_path):
    status, _, err = run(capsys, "check", str(tmp_path / "nope.attn"))
    assert status == 1
    assert "cannot read" in err


def test_check_set_and_requirement(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "check", path, "--set", "n=3")
    assert status == 0 and "placeholder" not in out
    status, _, err = run(capsys, "check", path, "--set", "n=1")
    assert status == 1
    assert "requirement of 'nodefault' failed: n >= 2 (n = 1)" in err
    status, _, err = run(capsys, "check", path, "--set", "zz=1")
    assert status == 1
    assert "no checked pattern has a parameter 'zz'" in err


# -- show ------------------------------------------------------------------------------------------------

def test_show_sliding_window_exact(capsys, attn):
    path = attn(WINDOW)
    status, out, err = run(capsys, "show", f"{path}:window", "--q-len", 6)
    assert status == 0, err
    assert out.splitlines()[0] == "window(w=3)  q_len=6 kv_len=6  density 41.7% (15 of 36 pairs)"
    assert "mask k <= q and q - k < 3" in out
    assert grid_rows(out) == [
        "    0  █·····",
        "    1  ██····",
        "    2  ███···",
        "    3  ·███··",
        "    4  ··███·",
        "    5  ···███",
    ]


def test_show_set_ascii_and_axis(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "show", f"{path}:window", "--set", "w=2", "--kv-len", 10, "--ascii")
    assert status == 0
    lines = out.splitlines()
    axis = next(l for l in lines if l.lstrip().startswith("q \\ k"))
    assert axis == "q \\ k  0   4   8"
    assert grid_rows(out)[:3] == ["    0  x.........", "    1  xx........", "    2  .xx......."]
    assert "█" not in out


def test_show_bottom_right_alignment(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "show", f"{path}:window", "--q-len", 3, "--kv-len", 8, "--ascii")
    assert status == 0
    assert "q = i + 5" in out
    assert grid_rows(out) == [
        "    5  ...xxx..",
        "    6  ....xxx.",
        "    7  .....xxx",
    ]
    status, out, _ = run(capsys, "show", f"{path}:window", "--q-len", 2, "--kv-len", 8, "--q-offset", 0,
                         "--ascii")
    assert grid_rows(out) == ["    0  x.......", "    1  xx......"]


def test_show_downsampled(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "show", f"{path}:window", "--set", "w=64", "--q-len", 256,
                         "--width", 32, "--height", 16)
    assert status == 0
    assert "downsampled: each cell is 16 queries x 8 keys" in out
    rows = grid_rows(out)
    assert len(rows) == 16
    assert all(len(r.split()[1]) == 32 for r in rows)
    assert rows[0].split() == ["0", "▒▒" + "·" * 30]
    # Queries 128..143 see keys 65..143, and every one of them sees keys 80..127: cells 10-15 (keys 80-127)
    # are full, cells 8, 9, 16, 17 partial.
    assert rows[8].split() == ["128", "·" * 8 + "▒▒" + "█" * 6 + "▒▒" + "·" * 14]


def test_show_library_pattern(capsys):
    status, out, _ = run(capsys, "show", "sliding_window", "--set", "window=2", "--q-len", 4, "--ascii")
    assert status == 0
    assert out.startswith("sliding_window(window=2)")
    assert grid_rows(out) == ["    0  x...", "    1  xx..", "    2  .xx.", "    3  ..xx"]


def test_show_inputs(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "show", f"{path}:docs", "--kv-len", 5, "--input", "doc=0x2,1x3", "--ascii")
    assert status == 0
    assert grid_rows(out) == ["    0  x....", "    1  xx...", "    2  ..x..", "    3  ..xx.", "    4  ..xxx"]
    # A [batch, length] input: rows separated by '/'; --batch-index picks one.
    status, out, _ = run(capsys, "show", f"{path}:docs", "--kv-len", 3, "--input", "doc=0,0,0/0,1,1",
                         "--batch-index", 1, "--ascii")
    assert status == 0
    assert "b=1" in out.splitlines()[0]
    assert grid_rows(out) == ["    0  x..", "    1  .x.", "    2  .xx"]


def test_show_input_errors(capsys, attn):
    path = attn(WINDOW)
    status, _, err = run(capsys, "show", f"{path}:docs", "--kv-len", 6)
    assert status == 1
    assert "needs runtime input 'doc'" in err and "--input doc=" in err
    status, _, err = run(capsys, "show", f"{path}:docs", "--kv-len", 6, "--input", "doc=0,1")
    assert status == 1 and "runtime input 'doc' must have shape [6] or [1, 6] (int[k] with kv_len = 6), got [2]" in err
    status, _, err = run(capsys, "show", f"{path}:docs", "--kv-len", 6, "--input", "doc=0,x,1")
    assert status == 1 and "'x' is not an integer" in err
    status, _, err = run(capsys, "show", f"{path}:docs", "--kv-len", 2, "--input", "doc=0,0", "--input", "foo=1")
    assert status == 1 and "no runtime input 'foo'" in err
    status, _, err = run(capsys, "show", f"{path}:docs", "--kv-len", 2, "--input", "doc=0,0/1,1",
                         "--batch-index", 2)
    assert status == 1 and "--batch-index 2 is out of range" in err


def test_show_set_errors(capsys, attn):
    path = attn(WINDOW)
    cases = {
        "ww=4": "--set:1:1: error: pattern 'window' has no parameter 'ww' (did you mean 'w'?)",
        "w=q": "--set:1:3: error: the value of parameter 'w' must be a constant",
        "w={1, 2}": "--set:1:3: error: the value of parameter 'w' is set, but it is declared int",
        "w=True": "--set:1:3: error: the value of parameter 'w' is bool, but it is declared int",
        "w=3 +": "--set:1:",
        "w=": "needs a value",
        "w": "--set expects NAME=VALUE",
        "w=k < 3": "--set:1:3: error: the value of parameter 'w' must be a constant",
        "w=4 // 0": "--set:1:8: error: division by zero",
    }
    for text, expected in cases.items():
        status, out, err = run(capsys, "show", f"{path}:window", "--set", text)
        assert status == 1, text
        assert expected in err, (text, err)
        assert out == ""
    status, _, err = run(capsys, "show", f"{path}:window", "--set", "w=0")
    assert status == 1
    assert f"{path}:3:13: error: requirement of 'window' failed: w >= 1 (w = 0)" in err
    status, _, err = run(capsys, "show", f"{path}:window", "--set", "w=1", "--set", "w=2")
    assert status == 1 and "set twice" in err


def test_show_missing_parameter_and_pattern(capsys, attn):
    path = attn(WINDOW)
    status, _, err = run(capsys, "show", f"{path}:nodefault")
    assert status == 1
    assert "parameter 'n' of pattern 'nodefault' has no default; give a value with --set n=VALUE" in err
    status, out, _ = run(capsys, "show", f"{path}:nodefault", "--set", "n=2", "--q-len", 3, "--ascii")
    assert status == 0 and grid_rows(out) == ["    0  xxx", "    1  xxx", "    2  .xx"]
    status, _, err = run(capsys, "show", f"{path}:windoww")
    assert status == 1 and "no pattern 'windoww'" in err and "did you mean 'window'" in err
    status, _, err = run(capsys, "show", path)
    assert status == 1 and "defines several patterns" in err
    status, _, err = run(capsys, "show", "no_such_pattern_xyz")
    assert status == 1 and "no file or library pattern named 'no_such_pattern_xyz'" in err


def test_show_per_head_list(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "show", f"{path}:heads", "--head", 1, "--q-len", 3, "--ascii")
    assert status == 0
    assert "h=1" in out.splitlines()[0]
    assert grid_rows(out) == ["    0  x..", "    1  xx.", "    2  .xx"]
    status, _, err = run(capsys, "show", f"{path}:heads", "--head", 2, "--q-len", 3)
    assert status == 1 and "list index 2 is out of range" in err


def test_show_png(capsys, attn, tmp_path):
    path = attn(WINDOW)
    out_png = tmp_path / "w.png"
    status, out, _ = run(capsys, "show", f"{path}:window", "--q-len", 6, "--png", out_png)
    assert status == 0
    data = out_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert f"wrote {out_png}: {w}x{h} pixels, one cell per element" in out
    # Tile level for long sequences.
    out_png = tmp_path / "big.png"
    status, out, _ = run(capsys, "show", f"{path}:window", "--set", "w=100", "--q-len", 2048, "--png", out_png)
    assert status == 0 and "one cell per 16x16 tile (EMPTY / PARTIAL / FULL)" in out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_png_unwritable(capsys, attn, tmp_path):
    path = attn(WINDOW)
    status, _, err = run(capsys, "show", f"{path}:window", "--png", tmp_path / "no" / "dir" / "x.png")
    assert status == 1 and "cannot write" in err


# -- list ------------------------------------------------------------------------------------------------

def test_list_library(capsys):
    status, out, _ = run(capsys, "list")
    assert status == 0
    for name in attnpat.library_names():
        assert any(line.startswith(f"{name}(") for line in out.splitlines()), name
    assert "sliding_window(window: int = " in out


def test_list_file(capsys, attn):
    path = attn(WINDOW)
    status, out, _ = run(capsys, "list", path)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"window(w: int = 3)  [{path}]"
    assert lines[1] == "    A causal sliding window."
    assert f"docs()  input doc: int[k]  [{path}]" in lines
    # "Example:" comments are not summaries; the file's first comment is used instead.
    assert lines[lines.index(f"docs()  input doc: int[k]  [{path}]") + 1] == "    A causal sliding window."
    assert f"nodefault(n: int)  [{path}]" in lines


def test_list_shows_inputs_of_called_patterns(capsys, attn):
    """A pattern that calls document() needs its runtime input doc too: list says so, and from where."""
    path = attn("pattern mine(w: int = 8):\n    mask document() and q - k < w\n\n"
                "pattern two():\n    input seg: int[q]\n    mask mine() and seg[q] >= 0 and two_helper()\n\n"
                "pattern two_helper():\n    mask mine(w=2) or causal\n")
    status, out, _ = run(capsys, "list", path)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"mine(w: int = 8)  input doc: int[k] (from document)  [{path}]"
    assert f"two()  input seg: int[q], doc: int[k] (from document)  [{path}]" in lines
    status, out, _ = run(capsys, "list")
    assert "document_sliding_window(window: int = 4096)  input doc: int[k]  [" in out


# -- usage -----------------------------------------------------------------------------------------------

def test_usage_errors(capsys):
    assert main([]) == 0                       # bare `attnpat`: the help, on stdout
    assert "usage: attnpat" in capsys.readouterr().out
    assert main(["show"]) == 2
    assert main(["show", "x", "--q-len", "0"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"attnpat {attnpat.__version__}\n"


def test_python_dash_m(tmp_path):
    path = tmp_path / "one.attn"
    path.write_text("pattern one():\n    mask causal\n")
    proc = subprocess.run([sys.executable, "-m", "attnpat", "check", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{path}: ok (1 pattern)\n"
    proc = subprocess.run([sys.executable, "-m", "attnpat.cli", "check", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"{path}: ok (1 pattern)\n", proc.stderr


# -- helpers ---------------------------------------------------------------------------------------------

VALUES = "pattern p(i: int = 0, t: bool = False, s: set = {7}, l: list = [7]):\n    mask True\n"


def _set_value(text: str, param: str):
    """The value `--set PARAM=TEXT` binds, by the checker's rules for a default."""
    from attnpat.cli.arguments import bind, parse_sets
    module = parse_module(VALUES)
    module, definition = bind(module, module.patterns[0], parse_sets([f"{param}={text}"]))
    return attnpat.Pattern(module, "p").params[param]


@pytest.mark.parametrize("text, param, value", [
    ("8", "i", 8), ("-3", "i", -3), ("2 * 64", "i", 128), ("7 // 2", "i", 3), ("-7 % 3", "i", 2),
    ("max(1, 2)", "i", 2), ("True", "t", True), ("False", "t", False), ("not True", "t", False),
    ("1 < 2", "t", True), ("{0, 1}", "s", frozenset({0, 1})), ("{}", "s", frozenset()),
    ("[1, 2, 2]", "l", (1, 2, 2)), ("range(4)", "s", frozenset(range(4))),
    ("range(0, 8, 2)", "s", frozenset({0, 2, 4, 6})),
])
def test_set_values(text, param, value):
    got = _set_value(text, param)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["q", "k - 1", "1 < 2", "{q}", "[True]", "range(0, 4, 0)", "True + 1",
                                  "doc[k]", "{1}"])
def test_set_values_rejected(text):
    with pytest.raises(attnpat.PatternError) as info:
        _set_value(text, "i")
    assert info.value.span is not None and info.value.span.source.name == "--set"
    assert info.value.span.column >= 3      # inside the value, after "i="


def test_parse_set_and_input():
    s = parse_set(" window = 2 * 4 ")
    assert s.name == "window" and s.expr == parse_expr("2 * 4")
    assert (s.name_span.column, s.expr.span.column, s.expr.span.end_column) == (2, 11, 16)
    with pytest.raises(PatternSyntaxError) as info:
        parse_set("window=(1")
    assert str(info.value).startswith("--set:1:8: error: '(' was never closed")
    assert parse_input("doc=0x2,1,-1x2") == ("doc", [[0, 0, 1, -1, -1]])
    assert parse_input("doc=0,1/1,1") == ("doc", [[0, 1], [1, 1]])
    with pytest.raises(attnpat.InputError):
        parse_input("doc=0,1/1")


def test_pool_and_steps():
    import numpy as np
    import torch
    mask = [[1, 1, 0], [0, 1, 1], [1, 0, 0]]
    assert draw.pool(np.array(mask, dtype=bool), 2, 2).tolist() == [[3, 1], [1, 0]]
    assert draw.pool(torch.tensor(mask, dtype=torch.bool), 2, 2).tolist() == [[3, 1], [1, 0]]
    assert draw.steps_for(96, 96) == 1
    assert draw.steps_for(97, 96) == 2
    assert draw.steps_for(4096, 96) == 64


def test_mask_cells_chunks_match_dense(monkeypatch):
    """Row chunks (with int[q] inputs sliced per chunk and q_offset moved) give exactly the dense mask."""
    import torch
    p = attnpat.parse("pattern p(w: int = 3):\n    input doc: int[k]\n    input pre: int[q]\n"
                      "    mask (causal and doc[q] == doc[k] and q - k < w) or k < pre[q]\n")
    doc = torch.tensor([0] * 7 + [1] * 9 + [2] * 4)
    pre = torch.arange(13) % 4
    dense = p.dense_mask(13, 20, doc=doc, pre=pre)[0, 0]
    monkeypatch.setattr(draw, "_CHUNK_ELEMENTS", 40)     # two rows per chunk
    grid = draw.mask_cells(p, 13, 20, inputs={"doc": doc, "pre": pre})
    assert (grid.counts.astype(bool) == dense.numpy()).all()
    assert grid.q_start == 7 and grid.allowed == int(dense.sum())
    coarse = draw.mask_cells(p, 13, 20, row_step=4, col_step=8, inputs={"doc": doc, "pre": pre})
    assert (coarse.counts == draw.pool(dense, 4, 8)).all()
    assert (grid.coarsen(4, 8).counts == coarse.counts).all()
    assert (grid.coarsen(4, 8).sizes == coarse.sizes).all()
    assert coarse.sizes.sum() == 13 * 20


# -- explain ---------------------------------------------------------------------------------------------

def test_explain_report(capsys, attn):
    path = attn(WINDOW)
    status, out, err = run(capsys, "explain", f"{path}:window", "--set", "w=8", "--q-len", 256, "--layers", 3,
                           "--block-q", 32, "--block-k", 16)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "window(w=8)  q_len=256 kv_len=256"
    text = "\n".join(lines)
    # 8 keys per query once the window is full: 36 + 248 * 8 allowed pairs
    allowed = 36 + 248 * 8
    assert f"density     {100 * allowed / 256 ** 2:.2f}% of pairs allowed ({allowed:,} of 65,536)" in text
    assert "tiles       32 x 16:" in text and "efficiency" in text
    assert "canonical   0 <= q - k <= 7" in text
    assert "look-back   7 positions: a decoder's KV cache needs 8 entries" in text
    assert "look-ahead  0 (causal: no query sees a later key)" in text
    assert "empty rows  none: every query attends to at least one key" in text
    assert "receptive   after 3 layers: 21 positions back from the last query (q = 255)" in text
    assert "FLOPs       kernel" in text and "of full causal attention" in text
    assert lines[-1].startswith("(analysed in ")


def test_explain_json(capsys):
    import json
    from attnpat.compiler.analysis import analyze
    status, out, err = run(capsys, "explain", "per_head", "--set", "windows=[2, 5]", "--q-len", 40,
                           "--kv-len", 64, "--heads", 3, "--head-dim", 64, "--json", "--layers", 2)
    assert status == 0, err
    d = json.loads(out)
    a = analyze(attnpat.load("per_head", windows=(2, 5)), 40, 64, heads=3, head_dim=64, layers=2)
    assert d == json.loads(json.dumps(a.to_dict()))
    assert d["pattern"] == "per_head(windows=[2, 5])" and d["heads"] == 3 and d["q_start"] == 24
    assert d["lookback"] == 4 and d["kv_cache"] == 5 and d["variants"] == 2
    assert d["flops"]["kernel"] == 4 * 64 * d["tile_pairs"]


def test_explain_inputs_and_errors(capsys, attn):
    path = attn(WINDOW)
    status, _, err = run(capsys, "explain", f"{path}:docs", "--q-len", 6)
    assert status == 1 and "needs runtime input 'doc'" in err and "--input doc=" in err
    status, out, err = run(capsys, "explain", f"{path}:docs", "--q-len", 5, "--input", "doc=0x2,1x3")
    assert status == 0, err
    assert "density     36.0% of pairs allowed (9 of 25)" in out and "input doc=0x2,1x3" in out
    # a [batch, length] input sets the batch
    status, out, err = run(capsys, "explain", f"{path}:docs", "--q-len", 3, "--input", "doc=0,0,0/0,1,1",
                           "--json")
    assert status == 0, err
    assert '"batch": 2' in out and '"allowed": 10' in out
    status, _, err = run(capsys, "explain", f"{path}:docs", "--q-len", 3, "--input", "doc=0,0,0/0,1,1",
                         "--batch", 3)
    assert status == 1 and "--batch 3 does not match" in err
    status, _, err = run(capsys, "explain", f"{path}:nodefault", "--q-len", 4)
    assert status == 1 and "has no default" in err
    assert main(["explain", "causal"]) == 2          # --q-len is required
    capsys.readouterr()


# -- compile ---------------------------------------------------------------------------------------------

def _code_names(source: str) -> set[str]:
    """The identifiers of a Python module's code: comments and strings (the docstring) left out."""
    import io
    import tokenize
    return {t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.NAME}


def test_compile_emit(capsys, attn):
    status, out, err = run(capsys, "compile", "document", "--emit")
    assert status == 0, err
    assert "def attn_fwd(" in out and "@triton.jit" in out
    compile(out, "<emitted>", "exec")        # it is a Python module
    names = _code_names(out)
    assert "doc" not in names and "in0_q" in names
    assert out.rstrip("\n") == attnpat.compile(attnpat.load("document")).source().rstrip("\n")
    # user-chosen names never reach the code: inputs become in0, in1, ...; parameters are folded
    path = attn("pattern my_pattern(my_window: int = 5):\n    input secret_ids: int[k]\n"
                "    input other_flag: int[q]\n"
                "    mask (causal and secret_ids[q] == secret_ids[k] and q - k < my_window) or k < other_flag[q]\n")
    status, out, err = run(capsys, "compile", path, "--set", "my_window=7", "--emit")
    assert status == 0, err
    names = _code_names(out)
    assert not names & {"secret_ids", "other_flag", "my_window", "my_pattern"}
    assert {"In0", "In1"} <= names and "In2" not in names


def test_compile_emit_backward(capsys):
    from attnpat.runtime.autograd import bwd_source
    status, out, err = run(capsys, "compile", "sliding_window", "--set", "window=8", "--emit", "--backward")
    assert status == 0, err
    compile(out, "<emitted>", "exec")
    assert out.rstrip("\n") == bwd_source(attnpat.compile(attnpat.load("sliding_window", window=8))).rstrip("\n")
    assert "@triton.jit" in out and "def attn_fwd(" not in out
    status, out, err = run(capsys, "compile", "sliding_window", "--backward")
    assert status == 1 and out == "" and "use it with --emit" in err


def test_compile_plan(capsys, attn, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNPAT_CACHE_DIR", str(tmp_path / "cache"))
    status, out, err = run(capsys, "compile", "sliding_window", "--set", "window=64")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "sliding_window(window=64)"
    text = "\n".join(lines)
    assert "canonical  0 <= q - k <= 63" in text
    assert f"key        {attnpat.load('sliding_window', window=64).key}" in text
    assert "plan       band:" in text and "keys q_lo - 63 <= k <= q_hi" in text
    assert f"cache      {tmp_path / 'cache'}" in text
    assert "entry      k_" in text and "not generated yet" in text
    assert not (tmp_path / "cache").exists()     # explaining the plan writes nothing
    status, out, err = run(capsys, "compile", "document")
    assert status == 0, err
    assert "plan       table:" in out and "inputs     doc: int[k] -> in0" in out
    status, out, _ = run(capsys, "compile", "per_head")
    assert "reads      h (the predicate depends on the head)" in out
    status, _, err = run(capsys, "compile", "sliding_window", "--set", "window=0")
    assert status == 1 and "requirement of 'sliding_window' failed" in err


# -- show at tile level ----------------------------------------------------------------------------------

def test_show_png_tile_level_is_fast(capsys, tmp_path):
    import time
    attnpat.load("sliding_window", window=4096).canonical    # simplification (sympy) is not what is timed
    out_png = tmp_path / "sw.png"
    start = time.perf_counter()
    status, out, err = run(capsys, "show", "sliding_window", "--q-len", 65536, "--png", out_png)
    elapsed = time.perf_counter() - start
    assert status == 0, err
    assert elapsed < 5.0, elapsed      # a guard against N^2 work (64K^2 pairs), not a benchmark
    lines = out.splitlines()
    allowed = 4096 * 4097 // 2 + (65536 - 4096) * 4096
    assert lines[0] == f"sliding_window(window=4096)  q_len=65536 kv_len=65536  density 6.1% ({allowed} of " \
                       f"{65536 ** 2} pairs)"
    assert "one cell per 512x512 tile (EMPTY / PARTIAL / FULL)" in out
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = grid_rows(out)
    assert rows[0].split()[1].startswith("▒") and rows[-1].split()[1].endswith("▒")


def test_show_without_size_cap(capsys):
    # Far beyond the dense drawing's cap: drawn from the block mask; too many partial tiles to count here.
    status, out, err = run(capsys, "show", "dilated", "--set", "window=4096", "--q-len", 1 << 20, "--ascii",
                           "--width", 16, "--height", 8)
    assert status == 0, err
    assert "tile level" in out.splitlines()[0] and "% to " in out.splitlines()[0]
    rows = grid_rows(out)
    assert len(rows) == 8 and rows[0].split()[1] == "++" + "." * 14


@pytest.mark.parametrize("spec, kw, q_len, kv_len, extra", [
    ("/heads", {}, 300, 300, {"head": 1}),
    ("sliding_window", {"window": 37}, 130, 300, {}),
    ("dilated", {"window": 9, "dilation": 3}, 257, 257, {}),
    ("document", {}, 200, 333, {"inputs": {"doc": [i // 50 for i in range(333)]}}),
    ("prefix_lm_dynamic", {}, 100, 100, {"inputs": {"prefix_len": [[7] * 100, [40] * 100]}, "batch": 2,
                                         "batch_index": 1}),
])
def test_tile_cells_match_dense_cells(attn, spec, kw, q_len, kv_len, extra):
    if spec == "/heads":
        p = attnpat.load(attn(WINDOW), "heads")
    else:
        p = attnpat.load(spec, **kw)
    for row_step, col_step in ((1, 1), (4, 8), (64, 32)):
        dense = draw.mask_cells(p, q_len, kv_len, row_step=row_step, col_step=col_step, **extra)
        tiles = draw.tile_cells(p, q_len, kv_len, row_step=row_step, col_step=col_step, **extra)
        assert tiles.exact and (tiles.row_step, tiles.col_step) == (row_step, col_step)
        assert tiles.counts.tolist() == dense.counts.tolist() and tiles.q_start == dense.q_start
        # without counting the partial tiles: the same levels, and bounds around the allowed pairs
        rough = draw.tile_cells(p, q_len, kv_len, row_step=row_step, col_step=col_step, count_budget=0,
                                **extra)
        lo, hi = rough.allowed_range
        assert lo <= dense.allowed <= hi
        # the block mask is sound: only a PARTIAL verdict may be loose
        assert ((rough.levels == 1) | (rough.levels == dense.levels)).all()


def test_cli_startup_benchmark_runs():
    """benchmarks/cli_startup.py (the start-up timings, a benchmark rather than a timed test) still runs."""
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_startup.py"
    proc = subprocess.run([sys.executable, str(script), "--repeat", "1", "--png-only"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[2].startswith("python -c pass (baseline)")
    assert lines[-1].startswith("attnpat show sliding_window 64K --png") and "matplotlib" in lines[-1]
