"""examples/generate_window.py with a small --tokens: the ring cache's memory is flat and its tokens are the
full-cache run's (the script exits 1 otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "generate_window.py"


def test_generate_window_small():
    run = subprocess.run([sys.executable, str(SCRIPT), "--tokens", "60", "--window", "16"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert "ring memory flat: True" in run.stdout
    assert "tokens identical to the full-cache run: True" in run.stdout
    assert "capacity per layer: 16 entries" in run.stdout
