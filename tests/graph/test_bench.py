"""`bench/bench.py --quick` runs and reports what it must (no timing asserts)."""

import json
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench.py"
VARIANTS = {"softmax", "cl", "dense_distmat", "embedding_param",
            "cl_term", "dense_distmat_term", "floor_gather_scatter"}


def test_quick_bench_rows_and_memory_accounting(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().count("| cl |") >= 1
    for num_classes in {row["num_classes"] for row in rows}:
        by_variant = {row["variant"]: row for row in rows if row["num_classes"] == num_classes}
        assert set(by_variant) == VARIANTS
        table_bytes = num_classes * by_variant["cl"]["dim"] * 4
        for variant in ("cl", "cl_term"):
            # Exactly one C x D float32 table, no optimizer slots, and moved.
            row = by_variant[variant]
            assert (row["centers_tables"], row["centers_bytes"], row["center_slot_bytes"]) == \
                (1, table_bytes, 0)
            assert row["centers_moved"] is True
        assert by_variant["dense_distmat"]["center_slot_bytes"] == table_bytes
        assert all(row["median_step_s"] > 0 for row in by_variant.values())
