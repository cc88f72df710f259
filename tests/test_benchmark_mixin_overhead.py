"""benchmarks/mixin_overhead.py: a tiny run through real fits prints its machine line and the ratio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, subprocess_env


def test_tiny_run_times_both_sides_and_prints_the_ratio(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mixin_overhead.py"), "--steps", "3", "--repeats", "1",
         "--warmups", "0", "--warmup-epochs", "1"],
        cwd=tmp_path, env=subprocess_env({"PYTHONPATH": str(ROOT)}), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # The machine, the date and the versions come first, as in benchmarks/losses.py.
    assert re.search(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC; .*cores.*torch .*lightning ", out, re.M), out
    times = re.search(r"time per training step .*: mixin ([\d.]+) ms, plain ([\d.]+) ms", out)
    ratio = re.search(r"^ratio mixin / plain: ([\d.]+)x \(median of per-pair ratios; ratio of medians ([\d.]+)x\); "
                      r"target <= 1\.05x (ok|MISSED) \(fewer than 5 pairs", out, re.M)
    assert times and ratio, out
    mixin_ms, plain_ms = float(times.group(1)), float(times.group(2))
    assert mixin_ms > 0 and plain_ms > 0
    # With one pair, the median of the per-pair ratios is that pair's ratio, which is the ratio of the times.
    assert float(ratio.group(1)) == float(ratio.group(2))
    assert abs(float(ratio.group(1)) - mixin_ms / plain_ms) < 2e-3
    # Nothing written where it ran: logger=False, no checkpoints.
    assert list(tmp_path.iterdir()) == []
