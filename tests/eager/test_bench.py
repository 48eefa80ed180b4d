"""`bench/bench_keras3.py --quick` on the backend KERAS_BACKEND names: the rows
it must report (no timing asserts)."""

import json
import pathlib

import pytest
from conftest import keras3_or_skip
from helpers import run_checked

keras = keras3_or_skip()
ROOT = pathlib.Path(__file__).resolve().parents[2]
BACKEND = keras.backend.backend()


def test_bench_keras3_quick(tmp_path):
    if BACKEND == "torch":
        pytest.skip("bench_keras3.py has no torch rows yet (issue 16, item 6)")
    run_checked(str(ROOT / "bench" / "bench_keras3.py"), "--quick", "--backend", BACKEND,
        "--out", str(tmp_path))
    report = json.loads((tmp_path / f"keras3_{BACKEND}.json").read_text())
    assert [row["num_classes"] for row in report["rows"]] == [10, 1000]
    assert all(row["centers_moved"] and row["cl_median_s"] > 0 for row in report["rows"])
    assert "cl step at C=1000 / at C=10" in (tmp_path / f"keras3_{BACKEND}.md").read_text()
