"""cl's term against the bare gather + scatter floor at very many classes.

Run by `make bench`:  .venv/bin/python bench/bench_large.py --out out/bench
Writes DIR/large.json (a list of rows {"variant", "engine", "classes", "dim",
"shards", "median_step_s", "bytes_per_shard", "peak_rss_mb", ...}) and
DIR/large.md (rows and goal lines), and prints them.

All in TF1 graph mode, one step = one `session.run`, B=256, D=128, labels
drawn in-graph from a preset random pool, fixed (non-trained) features:
  engine "graph"              one whole [C, D] resource variable on one device
                              (C = 10^6: 512 MB).
      cl_term                 cl.center_loss forward + its built-in update
                              (bench/variants.py's cl_term)
      floor_gather_scatter    ResourceGather of B rows, ResourceScatterSub of
                              B rows (bench/variants.py's floor)
  engine "graph_partitioned"  the table split by rows into 4 shards by
                              `variable_scope(partitioner=fixed_size_partitioner(4))`,
                              shard k on logical CPU device k of 4
                              (C = 10^5 and 10^7: 10^7 x 128 float32 = 5.1 GB,
                              1.28 GB per shard).
      cl_term                 cl.center_loss built under that variable scope
      floor_gather_scatter    embedding_lookup of the B rows from the
                              PartitionedVariable, and each shard's part of
                              the update routed by tf.dynamic_partition to a
                              ResourceScatterSub on that shard

Every row is a process of its own (its own graph, session and peak RSS,
`resource.getrusage` ru_maxrss, initialisation included; the logical devices
are set before TensorFlow initialises). The sessions run with constant
folding off (see `session_config`: with it on, TensorFlow keeps a folded
zeros constant as big as the table, and peak RSS reads twice the table). A row's two variants at one C are
stepped in turn, one step each per round, so load bursts hit both alike; the
C = 10^7 rows run one process at a time (two 5.1 GB tables at once would
crowd a 24 GB machine). The tables start at zero (zeros_initializer run in
the session; nothing is fed from numpy) and no step reads a table densely:
once a sparse op has touched a resource variable, a dense read copies it.

Goals, printed and never asserted: at C = 10^6 on one device cl_term within
2x the floor; on 4 shards the step at C = 10^7 within 2x the step at 10^5.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import goals

BATCH, DIM, SHARDS = 256, 128, 4
WARMUP, REPEATS = 5, 60
VARIANTS = ("cl_term", "floor_gather_scatter")
# (engine, classes, shards, together): `together`: the two variants' processes
# alive at once and stepped in turn; else one after the other.
ROWS = (("graph", 1_000_000, 1, True),
        ("graph_partitioned", 100_000, SHARDS, True),
        ("graph_partitioned", 10_000_000, SHARDS, False))
QUICK_ROWS = (("graph", 1_000, 1, True),
              ("graph_partitioned", 100, SHARDS, True),
              ("graph_partitioned", 10_000, SHARDS, True))



# ---------------------------------------------------------------- the child

def shard_devices(shards):
    """Device function: shard k of a partitioned variable (and its
    initializer, reads and writes, which TF colocates) on CPU:k."""
    def device(op):
        found = re.search(r"/part_(\d+)(/|$)", op.name)
        return f"/device:CPU:{int(found.group(1)) % shards}" if found else ""
    return device


def centers_shards(tf, graph, dim):
    """The centers variables of the graph, in row order (one if whole)."""
    found = [v for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
             if "centers" in v.name and v.shape.rank == 2 and v.shape[1] == dim]

    def order(variable):
        part = re.search(r"/part_(\d+):", variable.name)
        return int(part.group(1)) if part else 0
    return sorted(found, key=order)


def build_partitioned_floor(tf, variants, batch, dim, num_classes, shards):
    labels = variants.batch_labels(batch, num_classes)
    features = variants.fixed_features(batch, dim, trainable=False)
    with tf.compat.v1.variable_scope(
            "floor", partitioner=tf.compat.v1.fixed_size_partitioner(shards)):
        table = tf.compat.v1.get_variable(
            "centers", [num_classes, dim], tf.float32,
            initializer=tf.compat.v1.zeros_initializer(), trainable=False,
            use_resource=True)
    parts = list(table)
    rows = tf.compat.v1.nn.embedding_lookup(parts, labels, partition_strategy="div")
    updates = variants.ALPHA * (rows - features)
    ends = []
    for part in parts:
        ends.append((ends[-1] if ends else 0) + part.shape.as_list()[0])
    starts = [0] + ends[:-1]
    shard = tf.cast(tf.searchsorted(tf.constant(ends), labels, side="right"), tf.int32)
    local = labels - tf.gather(tf.constant(starts), shard)
    ids = tf.dynamic_partition(local, shard, shards)
    deltas = tf.dynamic_partition(updates, shard, shards)
    return tf.group([tf.raw_ops.ResourceScatterSub(resource=part.handle, indices=i, updates=d)
                     for part, i, d in zip(parts, ids, deltas)])


def build_partitioned_cl_term(tf, variants, batch, dim, num_classes, shards):
    import cl
    labels = variants.batch_labels(batch, num_classes)
    features = variants.fixed_features(batch, dim, trainable=False)
    scope = tf.compat.v1.get_variable_scope()
    with tf.compat.v1.variable_scope(
            scope, partitioner=tf.compat.v1.fixed_size_partitioner(shards)):
        loss = cl.center_loss(labels, features, alpha=variants.ALPHA, num_classes=num_classes)
    return tf.group(loss)


def build(tf, variants, spec):
    variant, engine, num_classes, shards = (spec[k] for k in ("variant", "engine",
                                                               "classes", "shards"))
    batch, dim = spec["batch"], spec["dim"]
    if engine == "graph":
        step = variants.BUILDERS[variant](batch, dim, num_classes)[0]
    elif variant == "floor_gather_scatter":
        step = build_partitioned_floor(tf, variants, batch, dim, num_classes, shards)
    else:
        step = build_partitioned_cl_term(tf, variants, batch, dim, num_classes, shards)
    return step


def session_config(tf, shards):
    """`shards` CPU devices, constant folding off at both levels.

    With folding on, TensorFlow folds each [C/shards, D] zeros initializer
    into a constant that the session's cached init executor keeps for the
    session's life; the variable shares that buffer, so the first sparse
    write copies the whole table (copy-on-write). Seen: peak RSS 10.9 GB
    instead of 5.8 GB at C = 10^7 on 4 shards, cl and the bare floor alike;
    1.6 GB instead of 1.1 GB at C = 10^6 on one device. The steps themselves
    have nothing to fold (labels are drawn in-graph each step).
    """
    from tensorflow.core.protobuf import rewriter_config_pb2
    config = tf.compat.v1.ConfigProto(device_count={"CPU": shards})
    options = config.graph_options.optimizer_options
    options.opt_level = tf.compat.v1.OptimizerOptions.L0  # L1 forces folding on
    options.do_common_subexpression_elimination = True
    options.do_function_inlining = True
    options.do_constant_folding = False
    config.graph_options.rewrite_options.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
    return config


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def child(spec, reply, ask):
    """One row in this process: builds, answers "step" with seconds, then
    "report" with the row (and returns)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import resource

    import numpy as np
    import tensorflow as tf
    import variants  # bench/variants.py: this script's folder is on sys.path

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default(), graph.device(shard_devices(spec["shards"])):
        tf.compat.v1.set_random_seed(0)
        try:
            step = build(tf, variants, spec)
        except Exception as error:  # cl under a partitioner: not landed yet
            reply("SKIP " + f"{type(error).__name__}: {str(error).splitlines()[0]}")
            return
        tables = centers_shards(tf, graph, spec["dim"])
        probe = tf.constant(np.random.RandomState(0).randint(
            0, spec["classes"], 64).astype(np.int32))
        # A sparse read of 64 rows after the steps (zeros before): did they move?
        moved = tf.reduce_any(tf.not_equal(tf.compat.v1.nn.embedding_lookup(
            tables, probe, partition_strategy="div"), 0.0))
        init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
    with tf.compat.v1.Session(graph=graph, config=session_config(tf, spec["shards"])) as session:
        session.run(init)
        rss_ready = rss_mb()
        reply("READY")
        while ask() == "step":
            start = time.perf_counter()
            session.run(step)
            reply(f"T {time.perf_counter() - start!r}")
        centers_moved = bool(session.run(moved))
        devices = sorted({v.device for v in tables})
    table_bytes = spec["classes"] * spec["dim"] * 4
    reply("ROW " + json.dumps({
        **spec,
        "bytes_per_shard": table_bytes // spec["shards"],
        "table_bytes": table_bytes,
        "centers_shards": len(tables),
        "shard_devices": devices,
        "centers_moved": centers_moved,
        "rss_after_init_mb": rss_ready and round(rss_ready, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tensorflow": tf.__version__,
    }))


def child_main(specs):
    out = sys.stdout

    def reply(line):
        out.write(line + "\n")
        out.flush()

    def ask():
        return sys.stdin.readline().strip()

    shards = max(spec["shards"] for spec in specs)
    if shards > 1:  # before TensorFlow initialises
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * shards)
    for spec in specs:  # one spec per process, except in --quick
        child(spec, reply, ask)


# --------------------------------------------------------------- the driver

class Worker:
    """A child process serving `specs` in order, driven over stdin/stdout."""

    def __init__(self, specs):
        self.errors = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(specs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True)

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.errors.seek(0)
            sys.stderr.write(self.errors.read()[-4000:])
            raise RuntimeError(f"a bench_large child died (exit {self.process.returncode})")
        return line.rstrip("\n")

    def send(self, word):
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def step(self):
        self.send("step")
        return float(self.receive()[2:])

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.errors.close()


def run_group(workers, repeats, together):
    """Each worker has sent READY for its current spec; returns their rows
    (None for a variant that answered SKIP)."""
    times = [[] for _ in workers]
    if together:
        for worker in workers:
            for _ in range(WARMUP):
                worker.step()
        for _ in range(repeats):
            for index, worker in enumerate(workers):
                times[index].append(worker.step())
    else:
        for index, worker in enumerate(workers):
            for _ in range(WARMUP):
                worker.step()
            times[index] = [worker.step() for _ in range(repeats)]
    rows = []
    for index, worker in enumerate(workers):
        worker.send("report")
        row = json.loads(worker.receive()[4:])
        row.update(median_step_s=statistics.median(times[index]), repeats=repeats,
                   timed=("in turn with the other variant" if together
                          else "alone, one process at a time"),
                   steps_s=times[index])
        rows.append(row)
    return rows


def start(worker):
    """Waits for READY; returns False where the child skipped the spec."""
    line = worker.receive()
    if line.startswith("SKIP "):
        print(f"  skipped: {line[5:]}", flush=True)
        return False
    assert line == "READY", line
    return True


def measure(rows_spec, batch, dim, repeats, quick):
    specs = [[dict(variant=v, engine=e, classes=c, shards=s, batch=batch, dim=dim)
              for v in VARIANTS] for e, c, s, _ in rows_spec]
    rows = []
    if quick:  # one process for every row, one spec at a time: a smoke test, seconds
        flat = [spec for group in specs for spec in group]
        worker = Worker(flat)
        for _ in flat:
            if start(worker):
                rows += run_group([worker], repeats, False)
        worker.close()
        return rows
    for (engine, classes, shards, together), group in zip(rows_spec, specs):
        print(f"{engine} C={classes} shards={shards}", flush=True)
        if together:
            workers = [Worker([spec]) for spec in group]
            live = [w for w in workers if start(w)]
            rows += run_group(live, repeats, True)
        else:
            workers = []
            for spec in group:
                worker = Worker([spec])
                workers.append(worker)
                if start(worker):
                    rows += run_group([worker], repeats, False)
                worker.close()  # this one's table is freed before the next
        for worker in workers:
            worker.close()
    return rows


def markdown(rows, goal_lines, elapsed_s):
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"Machine: {cpu}, {os.cpu_count()} cores; TensorFlow "
             f"{rows[0]['tensorflow'] if rows else '?'}, Python {platform.python_version()}. "
             f"B={rows[0]['batch'] if rows else BATCH}, D={rows[0]['dim'] if rows else DIM}. "
             f"Whole run {elapsed_s:.0f} s.", "",
             "| engine | C | shards | variant | median ms | bytes per shard | peak RSS MB "
             "| repeats | timed | moved |",
             "|---|---:|---:|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['classes']} | {r['shards']} | {r['variant']} "
                     f"| {r['median_step_s'] * 1e3:.3f} | {r['bytes_per_shard']} "
                     f"| {r['peak_rss_mb']:.0f} | {r['repeats']} | {r['timed']} "
                     f"| {r['centers_moved']} |")
    lines += ["", "Goals (bench/goals.py; the median of per-round ratios where two variants "
              "were stepped in turn; checks, not asserts):", ""]
    lines += [f"- {text.strip()}" for text in goal_lines]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: C = 10^3 (one device), 10^2 and 10^4 (4 shards), "
                             "B = 16, D = 8, 3 repeats, all in one process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(json.loads(args.child))
    begin = time.perf_counter()
    if args.quick:
        rows = measure(QUICK_ROWS, 16, 8, 3, quick=True)
    else:
        rows = measure(ROWS, BATCH, DIM, args.repeats, quick=False)
    table = markdown(rows, goals.report("large.json", rows), time.perf_counter() - begin)
    if args.quick:
        table += "\n--quick: toy sizes, a smoke test; the goals mean nothing here.\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "large.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "large.md").write_text(table)
    print(table, end="")
    print(f"Wrote {out / 'large.json'} and {out / 'large.md'}")


if __name__ == "__main__":
    main()
