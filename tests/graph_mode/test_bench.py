"""`bench/bench_graph.py --quick` runs and reports what it must (no timing asserts)."""

import json
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench_graph.py"
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


LARGE = BENCH.parent / "bench_large.py"


def test_quick_large_bench_rows(tmp_path):
    """`bench/bench_large.py --quick`: one device and 4 shards, both variants,
    the row fields of out/bench/large.json (no timing asserts)."""
    result = subprocess.run([sys.executable, str(LARGE), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "large.json").read_text())
    assert {(r["variant"], r["engine"], r["shards"]) for r in rows} == {
        (v, e, s) for v in ("cl_term", "floor_gather_scatter")
        for e, s in (("graph", 1), ("graph_partitioned", 4))}
    for row in rows:
        assert row["bytes_per_shard"] == row["classes"] * row["dim"] * 4 // row["shards"]
        assert row["centers_shards"] == row["shards"]  # cl's table split too
        assert row["centers_moved"] is True
        assert row["median_step_s"] > 0 and row["peak_rss_mb"] > 0
    assert "step at C=10000 / C=100" in (tmp_path / "large.md").read_text()
