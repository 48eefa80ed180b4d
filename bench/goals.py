"""Every bench goal, written once: the table below.

Each bench prints its own goals with `report(name, data)` right after its
figures, and `make bench` ends with `python bench/goals.py [--out out/bench]`,
which prints every goal from the JSON files the benches wrote. Checks, never
asserts: the exit status is 0 whatever they read (timings on a shared
machine are not a test). Needs no TensorFlow.

A goal is a ratio of two measurements taken side by side in one run: where
two variants were stepped in turn, the median of the per-round ratios (two
steps taken back to back share the machine's load of the moment), else the
ratio of their medians.
"""

import argparse
import json
import statistics
from pathlib import Path


def paired(a, b):
    """Median of the per-round ratios a/b where both were stepped in turn."""
    if a.get("steps_s") and b.get("steps_s") and len(a["steps_s"]) == len(b["steps_s"]) \
            and a.get("phase", a.get("timed")) == b.get("phase", b.get("timed")):
        return statistics.median(x / y for x, y in zip(a["steps_s"], b["steps_s"]))
    return a["median_step_s"] / b["median_step_s"]


def _graph(data):
    """results.json (bench_graph.py): {(variant, C): row}."""
    found = {(r["variant"], r["num_classes"]): r for r in data}
    classes = sorted({c for _, c in found})
    return found, classes


def graph_goals(data):
    found, classes = _graph(data)
    c, c0 = classes[-1], classes[0]

    def ratio(a, ca, b, cb):
        if (a, ca) in found and (b, cb) in found:
            return paired(found[a, ca], found[b, cb])
        return None

    goals = [
        (f"cl / softmax, whole training step, C={c}", ratio("cl", c, "softmax", c), "<=", 1.05),
        (f"dense_distmat_term / cl_term, C={c}", ratio("dense_distmat_term", c, "cl_term", c),
         ">=", 20),
        (f"cl_term / floor_gather_scatter, C={c}", ratio("cl_term", c, "floor_gather_scatter", c),
         "<=", 1.5),
    ]
    goals += [(f"cl_term / blog_term (the blog's construction), C={k}",
               ratio("cl_term", k, "blog_term", k), "<=", 1.15) for k in classes if k >= 10_000]
    goals += [
        (f"floor_gather_scatter C={c} / C={c0}",
         ratio("floor_gather_scatter", c, "floor_gather_scatter", c0), "<=", 2),
        (f"cl_term C={c} / C={c0}", ratio("cl_term", c, "cl_term", c0), "<=", 2),
    ]
    return goals


def distribute_goals(rows):
    by = {(r["front_end"], r["classes"]): r for r in rows}
    goals = []
    for front_end in dict.fromkeys(r["front_end"] for r in rows):
        classes = sorted(c for f, c in by if f == front_end)
        goals += [(f"{front_end} synced / no-communication, 2 replicas, C={c}",
                   by[front_end, c]["ratio"], "<=", 1.5) for c in classes]
        if len(classes) > 1:
            goals.append((f"{front_end} synced C={classes[-1]} / C={classes[0]}",
                          by[front_end, classes[-1]]["synced_ms"]
                          / by[front_end, classes[0]]["synced_ms"], "<=", 1.2))
    return goals


def keras3_goals(data):
    rows = data["rows"]
    c, c0 = rows[-1]["num_classes"], rows[0]["num_classes"]
    return [
        (f"cl step C={c} / C={c0}", data["step_ratio"], "<=", 1.5),
        (f"term / floor (a bare gather + scatter) at C={c}, compiled alike",
         data.get("term_bare_over_floor"), "<=", 1.5),
        ("fit step with the layer / without it (MLP, B=256, D=128, C=1000)",
         data.get("fit_step_with_over_without"), "<=", 1.15),
    ]


def tf2_goals(data):
    return [(f"cl.tf2 term / floor (a bare gather + scatter) at C={r['num_classes']}, "
             f"both in a tf.function", r["term_over_floor"], "<=", 1.5) for r in data["rows"]]


def large_goals(rows):
    by = {(r["variant"], r["engine"], r["classes"]): r for r in rows}
    goals = []
    for (variant, engine, classes), row in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        floor = by.get(("floor_gather_scatter", engine, classes))
        if variant == "cl_term" and floor and engine == "graph":
            goals.append((f"{engine} cl_term / floor_gather_scatter, C={classes}",
                          paired(row, floor), "<=", 2))
    for variant in ("cl_term", "floor_gather_scatter"):
        sharded = sorted(c for v, e, c in by if v == variant and e == "graph_partitioned")
        if len(sharded) > 1:
            goals.append((f"graph_partitioned {variant} step C={sharded[-1]} / C={sharded[0]}",
                          by[variant, "graph_partitioned", sharded[-1]]["median_step_s"]
                          / by[variant, "graph_partitioned", sharded[0]]["median_step_s"],
                          "<=", 2))
    return goals


# The one table: each bench's JSON file -> a function of its data giving
# [(label, value or None, "<=" or ">=", bound)].
GOALS = {
    "results.json": graph_goals,
    "tf2.json": tf2_goals,
    "distribute.json": distribute_goals,
    "keras3_tensorflow.json": keras3_goals,
    "keras3_jax.json": keras3_goals,
    "keras3_torch.json": keras3_goals,
    "large.json": large_goals,
}


def line(label, value, sign, bound):
    met = None if value is None else (value <= bound if sign == "<=" else value >= bound)
    verdict = "n/a" if met is None else ("met" if met else "NOT met")
    shown = "n/a" if value is None else f"{value:.2f}x"
    return f"{verdict:>7}  {label}: {shown} (goal {sign} {bound})"


def report(name, data):
    """The goal lines of the bench file `name` (e.g. "results.json") for its data."""
    return [line(*goal) for goal in GOALS[name](data)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench")
    folder = Path(parser.parse_args().out)
    lines = []
    for name in GOALS:
        path = folder / name
        if path.exists():
            lines += [f"{name}:"] + ["  " + text for text in report(name, json.loads(path.read_text()))]
    print(f"Bench goals ({folder}; checks, not asserts):")
    print("\n".join(lines) if lines else "  no bench output found")


if __name__ == "__main__":
    main()
