"""`python -m cl.demo` at tiny settings: files, table structure, sane values.

The science (center loss tightening the clusters) needs the default run;
at two epochs it is noise, so only structure and sanity are asserted here.
"""

import csv
import math
import os
import subprocess
import sys

import numpy as np

HEADER = ["lambda", "test_accuracy", "intra_class_distance", "inter_center_distance", "ratio"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_demo(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run([sys.executable, "-m", "cl.demo", *args],
                               capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def read_metrics(folder):
    with open(folder / "metrics.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == HEADER
    return [[float(value) for value in row] for row in rows[1:]]


def check_outputs(folder, lambdas):
    image = (folder / "features.png").read_bytes()
    assert image.startswith(PNG_SIGNATURE)
    import matplotlib.image
    height, width = matplotlib.image.imread(folder / "features.png").shape[:2]
    assert height > 100 and width > 100 * len(lambdas)  # one panel per lambda

    rows = read_metrics(folder)
    assert [row[0] for row in rows] == lambdas
    for _, accuracy, intra, inter, ratio in rows:
        assert all(math.isfinite(value) for value in (accuracy, intra, inter, ratio))
        assert 0 <= accuracy <= 1
        assert intra > 0 and inter > 0
        assert math.isclose(ratio, intra / inter, rel_tol=1e-3, abs_tol=1e-4)
    return rows


def test_digits_tiny_run(tmp_path):
    completed = run_demo("--out", str(tmp_path), "--epochs", "2", "--lambdas", "0.1,1")
    check_outputs(tmp_path, [0.0, 0.1, 1.0])
    assert str(tmp_path / "features.png") in completed.stdout
    assert str(tmp_path / "metrics.csv") in completed.stdout
    assert "Epoch 2/2" in completed.stdout  # Keras fit's per-epoch lines


def test_own_data_from_npz_is_flattened_relabelled_and_seeded(tmp_path):
    # 3 classes with labels 3, 7, 9 and 2-D samples of shape [4, 3].
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7, 9], 30)
    x = rng.normal(size=(len(y), 4, 3)) + y[:, None, None]
    np.savez(tmp_path / "data.npz", x=x, y=y)

    outputs = []
    for name in ("first", "second"):
        folder = tmp_path / name
        run_demo("--out", str(folder), "--data", str(tmp_path / "data.npz"),
                 "--epochs", "2", "--lambdas", "0.5", "--seed", "3")
        check_outputs(folder, [0.0, 0.5])
        outputs.append((folder / "metrics.csv").read_text())
    assert outputs[0] == outputs[1]  # same seed, same table


def test_rejects_non_positive_lambdas(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "cl.demo", "--out", str(tmp_path), "--lambdas", "0,0.1"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "--lambdas: must be positive" in completed.stderr
    assert not (tmp_path / "metrics.csv").exists()
