"""The README's Python snippet runs as pasted and logs per-class metrics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, subprocess_env


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def run_snippet(marker: str, directory: Path) -> str:
    """Run the README snippet that contains ``marker`` as a script in ``directory``; its last printed line."""
    script = directory / "snippet.py"
    script.write_text(next(snippet for snippet in readme_snippets() if marker in snippet))
    result = subprocess.run([sys.executable, str(script)], cwd=directory, env=subprocess_env({"OMP_NUM_THREADS": "1"}),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_the_tour_snippet_runs_as_pasted(tmp_path: Path) -> None:
    printed = eval(run_snippet("class MyModel(ImbalanceMixin", tmp_path))  # the snippet prints a dict
    assert sorted(printed) == sorted(f"val/recall/{c}" for c in range(10))
    assert all(0.0 <= value <= 1.0 for value in printed.values())
    assert not (tmp_path / "checkpoints").exists()  # nothing written where it was not asked for


def test_the_plain_pytorch_snippet_runs_as_pasted(tmp_path: Path) -> None:
    assert 0.5 < float(run_snippet("ImbalanceCriterion(", tmp_path)) <= 1.0  # ten classes: chance is 0.1


def test_the_two_stage_snippet_runs_as_pasted_and_changes_only_the_result_of_stage_two(tmp_path: Path) -> None:
    stage1, stage2 = (float(v) for v in run_snippet("ClassifierRetraining(epochs=10)", tmp_path).split())
    assert 0.1 < stage1 <= 1.0 and 0.1 < stage2 <= 1.0  # ten classes: chance is 0.1
    assert stage1 != stage2  # stage 2 re-trained the classifier


def test_every_python_snippet_is_tested() -> None:
    assert len(readme_snippets()) == 3, "a new README snippet needs a test here"
