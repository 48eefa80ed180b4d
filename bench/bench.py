"""Cost of cl's center loss against softmax alone and other formulations.

Run by `make bench`:  .venv/bin/python bench/bench.py --out out/bench
Writes DIR/results.json (one row per variant and number of classes),
DIR/results.md (table, ratio checks, machine) and prints the table.

The variants are built in bench/variants.py. For each number of classes,
every variant gets a process of its own (own graph, session and peak RSS),
all alive at once, and the driver steps them in turn, one step each per
round: load bursts on a shared machine then hit every variant alike, so the
ratios of medians stay meaningful. The processes are forked from a server
that imported TensorFlow once; this driver never imports it.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

VARIANTS = ("softmax", "cl", "dense_distmat", "embedding_param",
            "cl_term", "dense_distmat_term", "floor_gather_scatter")
WARMUP = 5
MIN_REPEATS = 10
# A variant whose warm-up says `--repeats` steps would take longer than this
# gets fewer (never under MIN_REPEATS): keeps `make bench` near 5 minutes.
SECONDS_PER_VARIANT = 20.0


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


def measure(context, num_classes, batch, dim, repeats):
    """All variants at one number of classes, interleaved; returns their rows."""
    workers = [Worker(context, variant, num_classes, batch, dim) for variant in VARIANTS]
    try:
        for worker in workers:
            worker.receive()  # "ready": built and initialized
        warm = {w.variant: [w.step() for _ in range(WARMUP)] for w in workers}
        wanted = {name: min(repeats, max(MIN_REPEATS, int(
            SECONDS_PER_VARIANT / statistics.median(times)))) for name, times in warm.items()}
        times = {w.variant: [] for w in workers}
        while any(len(times[name]) < wanted[name] for name in times):
            for worker in workers:
                if len(times[worker.variant]) < wanted[worker.variant]:
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
                "repeats": len(ordered),
                "batch": batch,
                "dim": dim,
                **worker.report(),
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


def ratios(rows, largest, smallest):
    """The four checks: (label, value, floor text, met) — reported, never asserted."""
    median = {(r["variant"], r["num_classes"]): r["median_step_s"] for r in rows}

    def ratio(a, b):
        if a in median and b in median:
            return median[a] / median[b]
        return None

    checks = [
        (f"cl / softmax at C={largest}",
         ratio(("cl", largest), ("softmax", largest)), "<= 1.05", lambda v: v <= 1.05),
        (f"dense_distmat_term / cl_term at C={largest}",
         ratio(("dense_distmat_term", largest), ("cl_term", largest)), ">= 20",
         lambda v: v >= 20),
        (f"cl_term / floor_gather_scatter at C={largest}",
         ratio(("cl_term", largest), ("floor_gather_scatter", largest)), "<= 3",
         lambda v: v <= 3),
        (f"floor_gather_scatter C={largest} / C={smallest}",
         ratio(("floor_gather_scatter", largest), ("floor_gather_scatter", smallest)),
         "~1 (<= 1.5)", lambda v: v <= 1.5),
    ]
    return [(label, value, floor, None if value is None else bool(met(value)))
            for label, value, floor, met in checks]


def whole(value):
    return "n/a" if value is None else f"{value:.0f}"


def markdown(rows, checks, info, elapsed_s):
    first = rows[0]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, device {first['device']}; "
        f"TensorFlow {first['tensorflow']}, Python {info['python']}, {info['platform']}.",
        f"B={first['batch']}, D={first['dim']}; optimizer {first['optimizer']}; "
        f"lambda={first['lambda']}, alpha={first['alpha']}. Whole run {elapsed_s:.0f} s.",
        "",
        "Steps of all variants at one C interleaved, each variant in its own process.",
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
    lines += ["", "Ratios of medians (floors are checks, not asserts):", ""]
    for label, value, floor, met in checks:
        shown = "n/a" if value is None else f"{value:.2f}"
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        lines.append(f"- {label}: {shown} (floor {floor}: {verdict})")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench", help="output folder")
    parser.add_argument("--classes", default="1000,10000,100000",
                        help="comma-separated numbers of classes")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed steps per variant (fewer for slow ones)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: C=10,100, B=8, D=16, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.classes, args.batch, args.dim, args.repeats = "10,100", 8, 16, 3
    classes = [int(c) for c in args.classes.split(",")]

    start = time.perf_counter()
    context = worker_context()
    rows = []
    for num_classes in classes:
        for row in measure(context, num_classes, args.batch, args.dim, args.repeats):
            print(f"C={num_classes:>6} {row['variant']:<21} "
                  f"{row['median_step_s'] * 1e3:9.2f} ms  peak RSS {whole(row['peak_rss_mb'])} MB",
                  flush=True)
            rows.append(row)
    elapsed = time.perf_counter() - start

    checks = ratios(rows, max(classes), min(classes))
    table = markdown(rows, checks, machine(), elapsed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "results.md").write_text(table)
    print()
    print(table, end="")
    print(f"Wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
