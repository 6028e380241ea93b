"""Progress for the long commands (verify, inspect, a first compile): step lines and a bar on a terminal.

Progress goes to stderr and only when stderr is a terminal, so piped or captured output stays exactly
the command's result. Each step records its time; :func:`time_line` says where the time went.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator, TextIO

__all__ = ["Progress", "time_line"]


class Progress:
    """Step lines ("generating the kernel ... 1.2 s") and a redrawn bar line, on a terminal only.

    Attributes:
        seconds: time per step name, added up over every `step` with that name.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._showing = False        # a line without its newline is on the screen

    def _write(self, text: str, *, end: str = "") -> None:
        with self._lock:
            self.stream.write("\r" + text + "\x1b[K" + end)   # \x1b[K: clear what a longer line left
            self.stream.flush()
            self._showing = not end

    @contextlib.contextmanager
    def step(self, text: str, *, name: str | None = None, tick: bool = False) -> Iterator[None]:
        """Time a step (added to `seconds[name or text]`); on a terminal show "text ..." and then its time.

        With `tick`, the elapsed seconds are redrawn every second while the step runs (for steps that
        give no progress of their own, such as a compiler in child processes).
        """
        start = time.perf_counter()
        stop = threading.Event()
        if self.enabled:
            self._write(f"{text} ...")
            if tick:
                def redraw():
                    while not stop.wait(1.0):
                        self._write(f"{text} ... {time.perf_counter() - start:.0f} s")
                threading.Thread(target=redraw, daemon=True).start()
        try:
            yield
        finally:
            stop.set()
            elapsed = time.perf_counter() - start
            key = name or text
            self.seconds[key] = self.seconds.get(key, 0.0) + elapsed
            if self.enabled:
                self._write(f"{text} ... {elapsed:.1f} s", end="\n")

    def bar(self, done: int, total: int, text: str = "", *, width: int = 24) -> None:
        """Redraw one bar line: [#####.......] done/total text."""
        if not self.enabled:
            return
        filled = width if total <= 0 else min(width, width * done // total)
        self._write(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}".rstrip())

    def done(self) -> None:
        """End a bar line (the next output starts on a fresh line)."""
        if self.enabled and self._showing:
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()
                self._showing = False


def time_line(seconds: dict[str, float]) -> str:
    """'time 41.2 s: backward kernels 20.1 s (49%), ...' from per-step seconds (a 'total' entry if any)."""
    total = seconds.get("total", sum(seconds.values()))
    parts = sorted(((v, k) for k, v in seconds.items() if k != "total" and v >= 0.05), reverse=True)
    share = (lambda v: f" ({100 * v / total:.0f}%)") if total > 0 else (lambda v: "")
    return f"time {total:.1f} s: " + ", ".join(f"{k} {v:.1f} s{share(v)}" for v, k in parts)
