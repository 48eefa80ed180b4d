"""`python -m cl.demo --keras 3` at tiny settings, on the backend
KERAS_BACKEND names (structure, not science)."""

import csv
import math

from conftest import keras3_or_skip
from helpers import run_checked

keras = keras3_or_skip()
BACKEND = keras.backend.backend()


def test_demo_keras3_tiny_run(tmp_path):
    result = run_checked("-m", "cl.demo", "--keras", "3", "--out", str(tmp_path), "--epochs", "2",
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
