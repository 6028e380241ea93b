"""Stage 6 -- cache: generated kernel modules, in memory and on disk.

An entry is one generated Python module, named by a sha256 over everything that changes what runs: the
canonical pattern key, the code-changing options, the attnpat and Triton versions and the target. Writes
go to a temporary file in the same directory and are renamed into place, so readers see a whole file or
none; every file ends with a checksum line, and a file that fails it (truncated, edited, half-written by
a crashed process) is a miss and is written again. Equivalent spellings of a pattern share one key and so
one entry.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import pickle
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

__all__ = ["cache_dir", "entry_key", "generator_digest", "get_module", "compiled_value", "store_compiled",
           "clear_memory",
           "CHECK_PREFIX"]

CHECK_PREFIX = "# attnpat-checksum: "
_MEMORY: dict[tuple[str, bool], object] = {}
_COMPILED: dict[str, object] = {}   # compiled values by entry key (bounded: see compiled_value)
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """The on-disk cache: $ATTNPAT_CACHE_DIR, else $XDG_CACHE_HOME/attnpat, else ~/.cache/attnpat."""
    env = os.environ.get("ATTNPAT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attnpat"


def entry_key(pattern_key: str, options: dict, target: str) -> str:
    """sha256 over the pattern key, code-changing options, versions and target."""
    from .._version import __version__
    from .backend import import_triton
    triton = import_triton()
    blob = json.dumps({"pattern": pattern_key, "options": options, "attnpat": __version__,
                       "generator": _generator_digest(), "triton": triton.__version__, "target": target},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


_GENERATOR_SUFFIXES = (".py", ".txt", ".lark")


def generator_digest(root=None) -> str:
    """A digest of every file of the code generator (each .py, .txt and .lark file under `root`, default the
    installed attnpat.compiler package, with its relative path), so a changed generator never reuses old
    entries; raises RuntimeError if there is no such file (a broken install would otherwise hash nothing)."""
    from importlib import resources
    root = resources.files("attnpat.compiler") if root is None else root
    files = sorted(_generator_files(root, ""))
    if not files:
        raise RuntimeError(f"attnpat: no code generator files under {root}; the installation is broken")
    h = hashlib.sha256()
    for rel, item in files:
        data = item.read_bytes()
        # path and length first: moving or splitting a file changes the digest even if the bytes do not
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def _generator_files(folder, prefix: str):
    for item in folder.iterdir():
        if item.is_dir():
            if item.name != "__pycache__":
                yield from _generator_files(item, f"{prefix}{item.name}/")
        elif item.name.endswith(_GENERATOR_SUFFIXES):
            yield f"{prefix}{item.name}", item


@functools.lru_cache(maxsize=None)
def _generator_digest() -> str:
    return generator_digest()


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _read_valid(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    body, sep, last = text.rpartition("\n" + CHECK_PREFIX)
    if not sep or last.strip() != _checksum(body + "\n"):
        return None
    return text


def _write_atomic(path: Path, body: str) -> None:
    _replace_atomic(path, (body + CHECK_PREFIX + _checksum(body) + "\n").encode("utf-8"))


def _replace_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path` and rename it into place: concurrent writers leave one
    whole file, and readers never see half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def get_module(key: str, make_source: Callable[[], str], *, interpret: bool):
    """Return the imported kernel module for `key`, generating and storing it on a miss.

    Args:
        key: the entry key (see entry_key).
        make_source: produces the module source on a miss.
        interpret: whether this process runs Triton's interpreter (kept apart in memory).
    Returns:
        (module, how) where how is 'memory', 'disk' or 'generated'.
    """
    with _LOCK:
        hit = _MEMORY.get((key, interpret))
        if hit is not None:
            return hit, "memory"
        path = cache_dir() / f"k_{key[:40]}.py"
        how = "disk"
        if _read_valid(path) is None:
            body = make_source()
            if not body.endswith("\n"):
                body += "\n"
            try:
                _write_atomic(path, body)
            except OSError as exc:
                raise _unusable(path, exc) from None
            how = "generated"
            if _read_valid(path) is None:   # another process replaced it between our write and read
                raise OSError(f"attnpat cache entry {path} keeps changing; is the cache directory shared "
                              f"with a different attnpat version?")
        module = _import(path, key, interpret)
        _MEMORY[(key, interpret)] = module
        return module, how


def _unusable(path: Path, exc: OSError) -> OSError:
    """A clear error for a cache entry that cannot be written, naming the path and what is in the way."""
    what = exc.strerror or str(exc)
    for parent in (path, *path.parents):
        if parent.exists() and (parent == path) == parent.is_dir():
            what = f"{parent} is {'a directory' if parent.is_dir() else 'a file, not a directory'}"
            break
    return type(exc)(exc.errno, f"attnpat cannot write the kernel cache entry {path}: {what}; remove it or "
                                f"set ATTNPAT_CACHE_DIR to a writable directory")


def _import(path: Path, key: str, interpret: bool):
    from .backend import import_triton
    import_triton()   # the interpreter-or-compiler choice must precede the module's own `import triton`
    name = f"attnpat_kernel_{key[:16]}_{'interp' if interpret else 'jit'}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def clear_memory() -> None:
    """Forget the in-memory entries (tests use it to force disk reads)."""
    with _LOCK:
        _MEMORY.clear()
        _COMPILED.clear()


# -- the compiled value (canonical form + plan), for a cold start without the simplifier ----------------------

def compiled_key(checked) -> str:
    """sha256 over the checked pattern (pickled: expression, parameters, inputs, spans), the attnpat version and
    the code generator's digest -- the kernel entries' ingredients that exist before simplifying."""
    from .._version import __version__
    h = hashlib.sha256(pickle.dumps(checked, protocol=5))
    h.update(json.dumps({"attnpat": __version__, "generator": _generator_digest()}, sort_keys=True).encode())
    return h.hexdigest()


def compiled_value(checked, build: Callable[[object], object]):
    """The compiled value of a checked pattern: from memory, else from its disk entry next to the kernels
    (c_<key>.pkl, checksummed like them; written by store_compiled when a kernel is made), else
    `build(checked)` -- the simplifier, seconds for some patterns. An unreadable or stale entry is a miss."""
    key = compiled_key(checked)
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit
    value = _read_pickle(_compiled_path(key), checked)
    if value is None:
        value = build(checked)
    _remember(key, value)
    return value


def store_compiled(compiled) -> None:
    """Write a compiled value's disk entry unless a good one exists: the runtime calls it when it makes a
    kernel, so that the next process's first call skips the simplifier (explaining a pattern writes nothing)."""
    key = compiled_key(compiled.checked)
    path = _compiled_path(key)
    if _read_pickle(path, compiled.checked) is not None:
        return
    try:
        body = pickle.dumps(compiled, protocol=5)
        _replace_atomic(path, body + hashlib.sha256(body).hexdigest().encode())
    except OSError:
        pass   # a read-only cache directory only costs the next process the simplifier
    _remember(key, compiled)


def _compiled_path(key: str) -> Path:
    return cache_dir() / f"c_{key[:40]}.pkl"


def _remember(key: str, value) -> None:
    with _LOCK:
        if len(_COMPILED) >= 256:
            _COMPILED.clear()
        _COMPILED[key] = value


def _read_pickle(path: Path, checked):
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body, digest = data[:-64], data[-64:]
    if len(data) <= 64 or hashlib.sha256(body).hexdigest().encode() != digest:
        return None
    try:
        value = pickle.loads(body)   # our own entry (checksummed), as trusted as the kernel modules beside it
    except Exception:
        return None
    return value if getattr(value, "checked", None) == checked else None
