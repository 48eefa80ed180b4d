"""Cost of cl's center loss against softmax alone and other formulations.

Run by `make bench`:  .venv/bin/python bench/bench_graph.py --out out/bench
Writes DIR/results.json (one row per variant and number of classes),
DIR/results.md (table, ratio checks, machine) and prints the table.

The variants are built in bench/variants.py. For each number of classes,
every variant gets a process of its own (own graph, session and peak RSS),
and the driver steps them in turn, one step each per round: load bursts on a
shared machine then hit every variant alike, so the ratios of medians stay
meaningful. The small ones (SMALL: ~1 ms steps) run first, at every C, in
rounds of their own before any big variant's process exists, so they do not
read the big ones' busy thread pools; then the big ones, all alive at once
per C. The processes are forked from a server
that imported TensorFlow once; this driver never imports it. At C=100000 the
seven processes together need about 12 GB of RAM.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

import goals

VARIANTS = ("softmax", "cl", "dense_distmat", "embedding_param",
            "cl_term", "blog_term", "dense_distmat_term", "floor_gather_scatter")
# Timed apart, first, before any big variant's process exists: a ~1 ms op
# timed in rounds between 300 ms steps reads the big steps' thread pools
# still spinning on the shared cores (seen: the floor 13.5 ms at C=100000
# against 0.7 ms alone), not its own cost.
SMALL = ("cl_term", "blog_term", "floor_gather_scatter")
WARMUP = 5
MIN_REPEATS = 10
# Time for the timed rounds at one number of classes: at C=100000 the
# variants get fewer than --repeats rounds (never under MIN_REPEATS), which
# keeps `make bench` to about 3 minutes on 2 cores.
SECONDS_PER_CLASSES = 150.0


def worker_context():
    """Workers forked from a server that has imported variants (TensorFlow)."""
    # The server must find variants.py; Python 3.11's forkserver does not pass
    # on sys.path (and would silently skip the preload), so use PYTHONPATH.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [here, os.environ.get("PYTHONPATH")]))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["variants"])
    return context


def serve(*args):
    """Runs in the worker, where the forkserver has imported variants already."""
    import variants
    variants.serve(*args)


class Worker:
    """One variant's process, driven over a pipe."""

    def __init__(self, context, variant, *args):
        self.variant = variant
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=serve, args=(theirs, variant, *args))
        self.process.start()
        theirs.close()

    def receive(self):
        try:
            return self.connection.recv()
        except EOFError:
            raise RuntimeError(f"the {self.variant} worker died; see its error above") from None

    def step(self):
        self.connection.send("step")
        return self.receive()

    def report(self):
        self.connection.send("report")
        row = self.receive()
        self.process.join()
        return row


def quantile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def measure(context, num_classes, batch, dim, repeats, variants=VARIANTS):
    """`variants` at one number of classes, interleaved; returns their rows.

    Every variant takes the same number of rounds, one step per round, so a
    load burst lands on all of them alike; `steps_s` keeps the per-round times
    so that same-C ratios can also be taken round by round.
    """
    workers = [Worker(context, variant, num_classes, batch, dim) for variant in variants]
    try:
        for worker in workers:
            worker.receive()  # "ready": built and initialized
        warm = [statistics.median([w.step() for _ in range(WARMUP)]) for w in workers]
        rounds = min(repeats, max(MIN_REPEATS, int(SECONDS_PER_CLASSES / sum(warm))))
        times = {w.variant: [] for w in workers}
        for _ in range(rounds):
            for worker in workers:
                times[worker.variant].append(worker.step())
        rows = []
        for worker in workers:
            ordered = sorted(times[worker.variant])
            rows.append({
                "num_classes": num_classes,
                "variant": worker.variant,
                "median_step_s": statistics.median(ordered),
                "p10_step_s": quantile(ordered, 0.1),
                "p90_step_s": quantile(ordered, 0.9),
                "repeats": rounds,
                "phase": "small" if worker.variant in SMALL else "big",
                "batch": batch,
                "dim": dim,
                **worker.report(),
                "steps_s": times[worker.variant],
            })
        return rows
    finally:
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join()


def machine():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    return {"cpu": model, "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def whole(value):
    return "n/a" if value is None else f"{value:.0f}"


def markdown(rows, goal_lines, info, elapsed_s):
    first = rows[0]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, device {first['device']}; "
        f"TensorFlow {first['tensorflow']}, Python {info['python']}, {info['platform']}; "
        f"cl {first['cl']}.",
        f"B={first['batch']}, D={first['dim']}; optimizer {first['optimizer']}; "
        f"lambda={first['lambda']}, alpha={first['alpha']}. Whole run {elapsed_s:.0f} s.",
        "",
        "Steps at one C interleaved, each variant in its own process; cl_term and the",
        "floor in rounds of their own, first, before any big variant's process ran.",
        "Peak RSS: while stepping (after initialization); step growth: that peak minus",
        "the RSS before the first step; process peak: including initialization.",
        "",
        "| C | variant | median ms | p10 ms | p90 ms | repeats | peak RSS MB "
        "| step growth MB | process peak MB | centers tables | centers MB "
        "| center slots MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_classes']} | {r['variant']} | {r['median_step_s'] * 1e3:.2f} "
            f"| {r['p10_step_s'] * 1e3:.2f} | {r['p90_step_s'] * 1e3:.2f} | {r['repeats']} "
            f"| {whole(r['peak_rss_mb'])} | {whole(r['step_rss_growth_mb'])} "
            f"| {whole(r['process_peak_rss_mb'])} | {r['centers_tables']} "
            f"| {r['centers_bytes'] / 2**20:.1f} | {r['center_slot_bytes'] / 2**20:.1f} |")
    lines += ["", "Goals (bench/goals.py; checks, not asserts): the median of the per-round",
              "ratios where two variants were stepped in the same rounds, else of medians.", ""]
    lines += [f"- {text.strip()}" for text in goal_lines]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench", help="output folder")
    parser.add_argument("--classes", default="1000,10000,100000",
                        help="comma-separated numbers of classes")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed rounds, one step of each variant per round "
                             f"(fewer where they would take over {SECONDS_PER_CLASSES:.0f} s)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: C=10,100, B=8, D=16, 3 repeats "
                             "(overrides those flags)")
    args = parser.parse_args()
    if args.quick:
        args.classes, args.batch, args.dim, args.repeats = "10,100", 8, 16, 3
    classes = [int(c) for c in args.classes.split(",")]

    start = time.perf_counter()
    context = worker_context()
    found = {}
    # The small variants first, at every C, before any big process has run:
    # nothing else of this run is alive then (no thread pools still spinning,
    # no gigabytes being freed), so their growth with C is the op's own.
    big = tuple(v for v in VARIANTS if v not in SMALL)
    for variants in (SMALL, big):
        for num_classes in classes:
            for row in measure(context, num_classes, args.batch, args.dim, args.repeats,
                               variants):
                print(f"C={num_classes:>6} {row['variant']:<21} "
                      f"{row['median_step_s'] * 1e3:9.2f} ms  peak RSS "
                      f"{whole(row['peak_rss_mb'])} MB", flush=True)
                found[num_classes, row["variant"]] = row
    rows = [found[c, v] for c in classes for v in big + SMALL]
    elapsed = time.perf_counter() - start

    table = markdown(rows, goals.report("results.json", rows), machine(), elapsed)
    if args.quick:
        table += "\n--quick: toy sizes, a smoke test; the floors mean nothing here.\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "results.md").write_text(table)
    print()
    print(table, end="")
    print(f"Wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
