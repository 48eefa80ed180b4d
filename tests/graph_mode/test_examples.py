"""Each legacy example runs with short settings and reports what it shows."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "legacy_examples"

# script, short-run arguments, what its RESULT line must say.
CASES = [
    ("01_blog_compile_fit.py", ["--epochs", "3"],
     ["centers_moved=True", "unchanged_by_evaluate=True"]),
    ("02_session_loop.py", ["--steps", "100"], ["own_class_nearest=True"]),
    ("03_embedding_model.py", ["--epochs", "5"], ["centers_shape=(10, 16)"]),
    ("04_checkpoint_resume.py", ["--epochs", "2"],
     ["centers_equal_after_load_weights=True", "centers_equal_after_saver=True",
      "centers_moved_after_resume=True", "loss_continued=True"]),
]


def run_example(script, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def result_line(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, stdout
    return lines[0]


def number(line, key):
    return float(re.search(rf"\b{key}=([-+0-9.e]+)", line).group(1))


@pytest.mark.parametrize("script, args, expected", CASES, ids=[c[0] for c in CASES])
def test_example_runs_and_shows_its_point(script, args, expected):
    completed = run_example(script, args)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    line = result_line(completed.stdout)
    for fragment in expected:
        assert fragment in line
    if script == "01_blog_compile_fit.py":
        assert number(line, "test_accuracy") > 0.5
    if script == "02_session_loop.py":
        assert number(line, "center_to_class_mean") < 0.25 * number(line, "class_mean_gap")
    if script == "03_embedding_model.py":
        assert 0 < number(line, "test_center_ratio") < 0.5


def test_examples_are_all_tested_and_listed():
    scripts = sorted(path.name for path in EXAMPLES.glob("*.py"))
    assert scripts == sorted(case[0] for case in CASES)
    readme = (EXAMPLES / "README.md").read_text()
    for script in scripts:
        assert script in readme


def test_example_exits_non_zero_when_its_point_fails():
    # Without training the centers stay at zero: 03 must say so and fail.
    completed = run_example("03_embedding_model.py", ["--epochs", "0"])
    assert completed.returncode != 0
    assert "FAILED" in completed.stderr
