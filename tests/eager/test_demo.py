"""The Keras 3 demo and bench at tiny settings (structure, not science)."""

import csv
import json
import math
import pathlib
import subprocess
import sys

import pytest
from conftest import keras3_or_skip

keras = keras3_or_skip()
ROOT = pathlib.Path(__file__).resolve().parents[2]
BACKEND = keras.backend.backend()


def run(*args):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_demo_keras3_tiny_run(tmp_path):
    result = run("-m", "cl.demo", "--keras", "3", "--out", str(tmp_path), "--epochs", "2",
                 "--lambdas", "0.5")
    assert f"on {BACKEND}" in result.stdout and "Epoch 2/2" in result.stdout
    assert (tmp_path / "features.png").read_bytes().startswith(b"\x89PNG")
    with open(tmp_path / "metrics.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["lambda", "test_accuracy", "intra_class_distance",
                       "inter_center_distance", "ratio"]
    assert [float(row[0]) for row in rows[1:]] == [0.0, 0.5]
    for row in rows[1:]:
        values = [float(value) for value in row]
        assert all(math.isfinite(value) for value in values) and 0 <= values[1] <= 1
        assert math.isclose(values[4], values[2] / values[3], rel_tol=1e-3, abs_tol=1e-4)


def test_bench_keras3_quick(tmp_path):
    if BACKEND == "torch":
        pytest.skip("bench_keras3.py has no torch rows yet (issue 16, item 6)")
    run(str(ROOT / "bench" / "bench_keras3.py"), "--quick", "--backend", BACKEND,
        "--out", str(tmp_path))
    report = json.loads((tmp_path / f"keras3_{BACKEND}.json").read_text())
    assert [row["num_classes"] for row in report["rows"]] == [10, 1000]
    assert all(row["centers_moved"] and row["cl_median_s"] > 0 for row in report["rows"])
    assert "cl step at C=1000 / at C=10" in (tmp_path / f"keras3_{BACKEND}.md").read_text()
