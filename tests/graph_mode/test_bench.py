"""The benches run (`--quick`) and report what they must; their goals come
from one table, bench/goals.py (no timing asserts)."""

import json
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench_graph.py"
# `make bench` runs the benches in the TF 2.21 environment (.venv), never on
# the 2.15 line: there their runs would test a route nobody takes.
on_the_bench_line = pytest.mark.skipif(
    tuple(int(part) for part in tf.__version__.split(".")[:2]) < (2, 16),
    reason="make bench runs the benches on TF 2.21 (.venv)")
VARIANTS = {"softmax", "cl", "dense_distmat", "embedding_param",
            "cl_term", "blog_term", "dense_distmat_term", "floor_gather_scatter"}


@on_the_bench_line
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
        for variant in ("cl", "cl_term", "blog_term"):
            # Exactly one C x D float32 table, no optimizer slots, and moved.
            row = by_variant[variant]
            assert (row["centers_tables"], row["centers_bytes"], row["center_slot_bytes"]) == \
                (1, table_bytes, 0)
            assert row["centers_moved"] is True
        assert by_variant["dense_distmat"]["center_slot_bytes"] == table_bytes
        assert all(row["median_step_s"] > 0 for row in by_variant.values())
    assert "cl_term / floor_gather_scatter, C=100: " in result.stdout  # goals.py's lines


LARGE = BENCH.parent / "bench_large.py"


@on_the_bench_line
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
    assert "step C=10000 / C=100: " in (tmp_path / "large.md").read_text()  # goals.py's line


@on_the_bench_line
def test_quick_tf2_bench_rows(tmp_path):
    """`bench/bench_tf2.py --quick`: cl.tf2's term and the floor at each C."""
    result = subprocess.run([sys.executable, str(BENCH.parent / "bench_tf2.py"), "--quick",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "tf2.json").read_text())["rows"]
    assert [row["num_classes"] for row in rows] == [10, 1000]
    assert all(row["centers_moved"] and row["term_over_floor"] > 0 for row in rows)
    assert "cl.tf2 term / floor (a bare gather + scatter) at C=1000" in result.stdout


def test_every_goal_is_written_once_in_goals_py():
    """Issue 22 item 5, issue 24 item 5: the benches print their goals from
    bench/goals.py's table, and write no bound of their own."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("goals", BENCH.parent / "goals.py")
    goals = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(goals)
    written = {}
    for path in sorted(BENCH.parent.glob("bench_*.py")):
        source = path.read_text()
        found = [name for name in goals.GOALS if f'"{name}"' in source or
                 (name.startswith("keras3_") and "keras3_{" in source)]
        assert "goals.report(" in source, path.name
        assert "GOAL" not in source and "goal: <=" not in source, path.name
        written[path.name] = found
    assert sorted(name for found in written.values() for name in found) == sorted(goals.GOALS)
    rows = [{"variant": v, "num_classes": c, "median_step_s": t, "steps_s": [t, t], "phase": "small"}
            for v, t in (("cl_term", 1.2), ("blog_term", 1.0), ("floor_gather_scatter", 1.0))
            for c in (1000, 100000)]
    lines = goals.report("results.json", rows)
    assert "    met  cl_term / blog_term (the blog's construction), C=100000: 1.20x" \
        not in lines  # 1.2 > 1.15
    assert any(line.startswith("NOT met  cl_term / blog_term") for line in lines), lines
    assert any(line.startswith("    met  cl_term / floor_gather_scatter, C=100000: 1.20x")
               for line in lines), lines
