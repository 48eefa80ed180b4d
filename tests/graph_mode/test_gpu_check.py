"""`bench/gpu_check.py --short` (what `make gpu-check` runs on a GPU) on the
CPU: every correctness row of its one table says ok, in under a minute."""

import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow as tf

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def keras3_installed():
    try:
        from importlib.metadata import version
        return int(version("keras").split(".")[0]) >= 3
    except Exception:
        return False


@pytest.mark.skipif(tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 16),
                    reason="make gpu-check runs it on TF 2.21 (.venv)")
def test_gpu_check_short_on_cpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--short"],
                            capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split("|", 4)[1:]] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| check")]
    results = {(check, front_end): result for check, front_end, result, _ in rows}
    expected_ok = [(f"bad label {bad} refused", front_end)
                   for bad in (50, -1) for front_end in ("graph", "tf2")]
    expected_ok += [("mixed_float16 exact", "graph"),
                    ("2 replicas of 1 device = rule", "graph"),
                    ("2 replicas of 1 device = rule", "tf2")]
    for row in expected_ok:
        assert results.get(row) == "ok", (row, out)
    # Keras 3 rows: ok where Keras 3 is installed, else marked skipped (info).
    keras3_rows = [r for r in results if r[1] == "keras3_tf"]
    wanted = "ok" if keras3_installed() else "info"
    assert keras3_rows and all(results[r] == wanted for r in keras3_rows), out
    assert not any(result == "FAILED" for result in results.values()), out
    assert len([r for r in results if re.match(r"step time C=\d+", r[0])]) == 2, out
    assert "all correctness rows ok" in out
