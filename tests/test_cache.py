"""The kernel cache: one entry per canonical pattern, atomic writes, corruption is a miss."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import attnpat
from attnpat.runtime import cache


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "kernels"
    monkeypatch.setenv("ATTNPAT_CACHE_DIR", str(root))
    cache.clear_memory()
    yield root
    cache.clear_memory()


def _entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_cache_dir_follows_the_environment(cache_root):
    assert cache.cache_dir() == cache_root


def test_equivalent_spellings_share_one_entry(cache_root):
    spellings = [
        "pattern a(w: int = 8):\n    mask causal and q - k < w\n",
        "pattern b2():\n    mask not (k > q) and q - k <= 7\n",
        "pattern c():\n    mask 0 <= q - k < 8 and k <= q + 100\n",
    ]
    kernels = [attnpat.compile(attnpat.parse(t)) for t in spellings]
    assert len({k.key for k in kernels}) == 1
    modules = {id(k.module(_cpu())) for k in kernels}
    assert len(modules) == 1
    assert len([e for e in _entries(cache_root) if e.endswith(".py")]) == 1
    # a different pattern is a different entry
    attnpat.compile("causal").module(_cpu())
    assert len([e for e in _entries(cache_root) if e.endswith(".py")]) == 2


def _cpu():
    import torch
    return torch.device("cpu")


def test_truncated_or_edited_entry_is_a_miss(cache_root):
    kernel = attnpat.compile("sliding_window")
    key = cache.entry_key(kernel.key, {"plan": kernel.plan.mode, "kernel": "fwd"}, "test")
    _, how = cache.get_module(key, kernel.source, interpret=True)
    assert how == "generated"
    cache.clear_memory()
    _, how = cache.get_module(key, kernel.source, interpret=True)
    assert how == "disk"
    path = next(p for p in cache_root.iterdir() if p.suffix == ".py")
    text = path.read_text()
    for broken in (text[: len(text) // 2], text.replace("BLOCK_N", "BLOCK_Q", 1), ""):
        path.write_text(broken)
        cache.clear_memory()
        module, how = cache.get_module(key, kernel.source, interpret=True)
        assert how == "generated" and hasattr(module, "attn_fwd")
        assert path.read_text() == text


def test_key_covers_versions_options_and_target():
    base = cache.entry_key("abc", {"plan": "band"}, "interpreter")
    assert base != cache.entry_key("abd", {"plan": "band"}, "interpreter")
    assert base != cache.entry_key("abc", {"plan": "table"}, "interpreter")
    assert base != cache.entry_key("abc", {"plan": "band"}, "cuda:sm_90")
    assert len(base) == 64 and int(base, 16) >= 0


_WORKER = textwrap.dedent("""
    import sys, torch, warnings
    warnings.simplefilter("ignore")
    import attnpat
    pattern = attnpat.parse("pattern w():\\n    mask causal and q - k < 5\\n")
    kernel = attnpat.compile(pattern, block_m=16, block_n=16)
    q = torch.randn(1, 1, 20, 16)
    out = kernel(q, q, q)
    ref = attnpat.reference_attention(q, q, q, pattern)
    assert (out.double() - ref).abs().max() < 1e-4
    print("ok")
""")


def test_four_processes_compiling_at_once_leave_one_good_entry(cache_root):
    env = dict(os.environ, ATTNPAT_CACHE_DIR=str(cache_root))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().endswith("ok")
    entries = _entries(cache_root)
    assert [e for e in entries if e.endswith(".tmp")] == []
    py = [e for e in entries if e.endswith(".py")]
    assert len(py) == 1
    assert cache._read_valid(cache_root / py[0]) is not None


def _generator_copy(tmp_path):
    import shutil
    from importlib import resources
    root = tmp_path / "compiler"
    shutil.copytree(str(resources.files("attnpat.compiler")), root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_generator_digest_covers_every_template_and_file(tmp_path):
    root = _generator_copy(tmp_path)
    base = cache.generator_digest(root)
    assert base == cache.generator_digest(root)
    templates = sorted(root.rglob("*.py.txt"))
    assert templates, "the code generator has templates"
    for template in templates:   # a one-character edit of any template changes the digest
        text = template.read_text()
        template.write_text(text + " ")
        assert cache.generator_digest(root) != base, template
        template.write_text(text)
    assert cache.generator_digest(root) == base
    extra = root / "codegen" / "extra.py" if (root / "codegen").is_dir() else root / "extra.py"
    extra.write_text("X = 1\n")                       # a new module
    assert cache.generator_digest(root) != base
    extra.unlink()
    assert cache.generator_digest(root) == base
    (root / "parse.py").unlink()                      # a removed module
    removed = cache.generator_digest(root)
    assert removed != base
    (root / "notes.md").write_text("not code")       # files that cannot change the code do not count
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "x.py").write_text("")
    assert cache.generator_digest(root) == removed


def test_generator_digest_of_a_moved_file_differs(tmp_path):
    root = _generator_copy(tmp_path)
    base = cache.generator_digest(root)
    (root / "sub").mkdir()
    (root / "values.py").rename(root / "sub" / "values.py")
    assert cache.generator_digest(root) != base


def test_generator_digest_of_an_empty_tree_raises(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "README.md").write_text("")
    with pytest.raises(RuntimeError, match="no code generator files"):
        cache.generator_digest(tmp_path / "empty")


def test_the_installed_generator_has_a_digest():
    assert len(cache._generator_digest()) == 16


# -- the compiled value on disk: a second process's first call skips the simplifier -----------------------

_COLD = textwrap.dedent("""
    import sys, time, torch
    import attnpat
    from attnpat.compiler import pipeline
    if sys.argv[1] == "warm":   # the simplifier must not run: the value comes from the disk entry
        def refuse(checked):
            raise SystemExit("the simplifier ran")
        pipeline.simplify = refuse
    p = attnpat.load("bigbird", block=16, random_blocks=2)
    t = time.perf_counter()
    compiled = p.compiled
    print(compiled.key, compiled.plan.mode, f"{time.perf_counter() - t:.3f}")
    attnpat.compile(p).module(torch.device("cpu"))   # loading the kernel stores the compiled value
""")


def test_a_second_process_reads_the_compiled_value_from_disk(cache_root):
    env = dict(os.environ, ATTNPAT_CACHE_DIR=str(cache_root))

    def run(mode):
        p = subprocess.run([sys.executable, "-c", _COLD, mode], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:] + p.stdout
        return p.stdout.split()

    cold = run("cold")
    assert [e for e in _entries(cache_root) if e.startswith("c_") and e.endswith(".pkl")]
    warm = run("warm")
    assert warm[:2] == cold[:2]   # the same key and plan, without the simplifier


def test_compiled_values_corrupt_or_missing_are_rebuilt(cache_root, monkeypatch):
    from attnpat.compiler import pipeline
    p = attnpat.load("document_sliding_window", window=5)
    first = cache.compiled_value(p.checked, pipeline.back)
    assert _entries(cache_root) == []                                 # reading the value writes nothing
    cache.store_compiled(first)
    (entry,) = [e for e in cache_root.iterdir() if e.name.startswith("c_")]
    cache.clear_memory()

    def refuse(checked):
        raise AssertionError("rebuilt although the entry is good")
    assert cache.compiled_value(p.checked, refuse) == first          # read back from disk
    entry.write_bytes(entry.read_bytes()[:-3] + b"xyz")               # a damaged entry is a miss
    cache.clear_memory()
    built = []
    assert cache.compiled_value(p.checked, lambda c: built.append(c) or pipeline.back(c)) == first
    assert built == [p.checked]
    cache.clear_memory()
    other = attnpat.load("document_sliding_window", window=6)         # another pattern: another entry
    assert cache.compiled_value(other.checked, pipeline.back).key != first.key


def test_a_cache_directory_that_cannot_be_used_is_named_in_the_error(tmp_path, monkeypatch):
    import pytest
    from attnpat.runtime import cache
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("ATTNPAT_CACHE_DIR", str(blocker / "attnpat"))
    with pytest.raises(OSError, match=f"{blocker} is a file, not a directory.*ATTNPAT_CACHE_DIR"):
        cache.get_module("f" * 64, lambda: "x = 1\n", interpret=True)
    entry_dir = tmp_path / "ok"
    monkeypatch.setenv("ATTNPAT_CACHE_DIR", str(entry_dir))
    (entry_dir / f"k_{'e' * 40}.py").mkdir(parents=True)   # an entry replaced by a directory
    with pytest.raises(OSError, match=r"k_e+\.py is a directory; remove it"):
        cache.get_module("e" * 64, lambda: "x = 1\n", interpret=True)
