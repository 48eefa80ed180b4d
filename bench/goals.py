"""Every bench goal, met or not, from the files `make bench` wrote.

Run last by `make bench`:  python bench/goals.py [--out out/bench]
Reads results.json (bench_graph.py), distribute.json, keras3_<backend>.json and
large.json where present and prints one line per goal. Checks, never
asserts: the exit status is 0 whatever they read (timings on a shared
machine are not a test). Needs no TensorFlow.
"""

import argparse
import json
import statistics
from pathlib import Path


def line(label, value, goal, met):
    verdict = "n/a" if met is None else ("met" if met else "NOT met")
    shown = "n/a" if value is None else f"{value:.2f}x"
    return f"{verdict:>7}  {label}: {shown} (goal {goal})"


def paired(a, b):
    """Median of the per-round ratios where a and b were stepped in turn."""
    if a.get("steps_s") and b.get("steps_s") and len(a["steps_s"]) == len(b["steps_s"]):
        return statistics.median(x / y for x, y in zip(a["steps_s"], b["steps_s"]))
    return a["median_step_s"] / b["median_step_s"]


def results(rows):
    found = {(r["variant"], r["num_classes"]): r for r in rows}
    classes = sorted({r["num_classes"] for r in rows})
    c, c0 = classes[-1], classes[0]
    out = []
    for label, a, b, goal, ok in (
            (f"cl / softmax at C={c}", ("cl", c), ("softmax", c), "<= 1.05", lambda v: v <= 1.05),
            (f"dense_distmat_term / cl_term at C={c}", ("dense_distmat_term", c),
             ("cl_term", c), ">= 20", lambda v: v >= 20),
            (f"cl_term / floor_gather_scatter at C={c}", ("cl_term", c),
             ("floor_gather_scatter", c), "<= 3", lambda v: v <= 3),
            (f"floor_gather_scatter C={c} / C={c0}", ("floor_gather_scatter", c),
             ("floor_gather_scatter", c0), "<= 2", lambda v: v <= 2),
            (f"cl_term C={c} / C={c0}", ("cl_term", c), ("cl_term", c0), "<= 2",
             lambda v: v <= 2)):
        if a in found and b in found:
            same = a[1] == b[1] and found[a].get("phase") == found[b].get("phase")
            value = paired(found[a], found[b]) if same else \
                found[a]["median_step_s"] / found[b]["median_step_s"]
            out.append(line("results.json: " + label, value, goal, ok(value)))
    return out


def distribute(rows):
    out = []
    by = {(r["front_end"], r["classes"]): r for r in rows}
    for front_end in dict.fromkeys(r["front_end"] for r in rows):
        classes = sorted(c for f, c in by if f == front_end)
        for c in classes:
            ratio = by[front_end, c]["ratio"]
            out.append(line(f"distribute.json: {front_end} synced/local at C={c}", ratio,
                            "<= 1.6", ratio <= 1.6))
        if len(classes) > 1:
            growth = by[front_end, classes[-1]]["synced_ms"] / by[front_end, classes[0]]["synced_ms"]
            out.append(line(f"distribute.json: {front_end} synced C={classes[-1]} / "
                            f"C={classes[0]}", growth, "<= 1.2", growth <= 1.2))
    return out


def keras3(backend, data):
    rows = data["rows"]
    large = rows[-1]
    value = data.get("term_bare_over_floor")
    out = [line(f"keras3_{backend}.json: cl step C={large['num_classes']} / "
                f"C={rows[0]['num_classes']}", data["step_ratio"], "<= 1.5",
                data["step_ratio"] <= 1.5)]
    if value is not None:
        out.append(line(f"keras3_{backend}.json: term / floor at C={large['num_classes']}, "
                        f"measured alike", value, "<= 2", value <= 2))
    return out


def large(rows):
    by = {(r["variant"], r["engine"], r["classes"]): r for r in rows}
    out = []
    for (variant, engine, classes), row in sorted(by.items()):
        floor = by.get(("floor_gather_scatter", engine, classes))
        if variant == "cl_term" and floor and engine == "graph":
            value = paired(row, floor)
            out.append(line(f"large.json: {engine} cl_term / floor at C={classes}", value,
                            "<= 2", value <= 2))
    for variant in ("cl_term", "floor_gather_scatter"):
        sharded = sorted(c for v, e, c in by if v == variant and e == "graph_partitioned")
        if len(sharded) > 1:
            value = (by[variant, "graph_partitioned", sharded[-1]]["median_step_s"]
                     / by[variant, "graph_partitioned", sharded[0]]["median_step_s"])
            out.append(line(f"large.json: graph_partitioned {variant} step C={sharded[-1]} / "
                            f"C={sharded[0]}", value, "<= 2", value <= 2))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench")
    folder = Path(parser.parse_args().out)
    lines = []

    def read(name):
        path = folder / name
        return json.loads(path.read_text()) if path.exists() else None

    if (rows := read("results.json")):
        lines += results(rows)
    if (rows := read("distribute.json")):
        lines += distribute(rows)
    for backend in ("tensorflow", "jax", "torch"):
        if (data := read(f"keras3_{backend}.json")):
            lines += keras3(backend, data)
    if (rows := read("large.json")):
        lines += large(rows)
    print(f"Bench goals ({folder}; checks, not asserts):")
    print("\n".join(lines) if lines else "  no bench output found")


if __name__ == "__main__":
    main()
