"""Cost of cl's cross-replica center update on 2 logical CPU replicas.

Compares, per step (B=256 per replica, D=512; each step draws its batch):
  synced    cl's exact update: one update from the global batch, the same
            deltas scattered into each copy (cl.graph.replicas)
  local     each replica gathers and scatters its own copy with its own
            batch, no communication: the wrong rule, the cost floor
  draw      the batch drawn and nothing else: reported beside the ratio
            as "less it", (synced - draw) / (local - draw) from the medians
for each front-end:
  graph     cl.center_loss inside strategy.run, graph mode (session.run)
  tf2       cl.tf2.CenterLoss called in strategy.run inside a tf.function
  keras3_tf cl.keras3.CenterLoss (TF backend) called in strategy.run inside a
            tf.function; skipped, with the reason, where the layer refuses
            to build under MirroredStrategy
  keras3_jax cl.keras3.CenterLoss.term (JAX backend) in one jax.jit step
            under keras.distribution.DataParallel over 2 forced host
            devices: the batch split by samples, the table replicated, XLA
            partitions the global batch's update; local is the floor's
            update per device in a shard_map (no communication). Runs in
            the JAX environment (--jax-python); skipped where there is none
and reports the median of the per-round ratios synced / local at each C.

Every (front-end, C) pair runs in a process of its own, one after the other,
so no measurement shares the machine with another's thread pools, and the
logical devices are set before TensorFlow initialises; --passes such
processes per pair (default 2), in ABBA order over C, pooled per C, so that
a drift of the machine's load during the run does not read as growth with C
(seen: synced 1.57x from 10^3 to 10^5 with the local floor 1.41x in one
single-pass run, 1.07x and 0.96x in the next). Writes a JSON list of
{"front_end", "classes", "synced_ms", "local_ms", "draw_ms", "ratio",
"ratio_less_draw", ...} to OUT/distribute.json. Usage:
  .venv/bin/python bench/bench_distribute.py [--out out/bench]
      [--front-ends graph,tf2,keras3_tf,keras3_jax] [--classes 1000,100000] [--steps 30]
      [--passes 2] [--jax-python .venv-jax/bin/python]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import goals
from timing import in_turn

B, D, ALPHA = 256, 512, 0.5
FRONT_ENDS = ("graph", "tf2", "keras3_tf", "keras3_jax")
JAX_PYTHON = ".venv-jax/bin/python"  # make venv-jax

WARMUP = 3


class Skip(Exception):
    """This front-end cannot run here; the message says why."""


def draw_fn(tf, num_classes):
    """One replica's batch drawn and nothing else: what every step of the TF
    rows spends before the update (reported, to read the ratios without it)."""
    def replica_fn():
        labels = tf.random.uniform([B], 0, num_classes, tf.int32)
        features = tf.random.normal([B, D])
        return features[:, 0] + tf.cast(labels, tf.float32)
    return replica_fn


def local_step_fn(tf, centers, num_classes):
    """One replica's wrong-but-cheapest step: its own copy, its own batch."""
    from cl import formulas

    def replica_fn():
        labels = tf.random.uniform([B], 0, num_classes, tf.int32)
        features = tf.random.normal([B, D])
        handle = centers.handle  # in replica context: this replica's copy
        rows = tf.raw_ops.ResourceGather(resource=handle, indices=labels, dtype=tf.float32)
        ids, deltas = formulas.center_update(labels, features, rows, ALPHA)
        scatter = tf.raw_ops.ResourceScatterSub(resource=handle, indices=ids, updates=deltas)
        with tf.control_dependencies([scatter]):
            return formulas.per_sample_center_loss(features, rows)
    return replica_fn


def graph_steps(tf, strategy, num_classes):
    import cl
    from cl.graph import table

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default(), strategy.scope():
        def synced_fn():
            labels = tf.random.uniform([B], 0, num_classes, tf.int32)
            features = tf.random.normal([B, D])
            return cl.center_loss(labels, features, alpha=ALPHA, num_classes=num_classes)

        local = table.centers_variable(num_classes, D, "local")
        ops = {}
        for variant, fn in (("synced", synced_fn), ("local", local_step_fn(tf, local, num_classes)),
                            ("draw", draw_fn(tf, num_classes))):
            out = strategy.run(fn)
            ops[variant] = tf.group(strategy.experimental_local_results(out))
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
    return {variant: (lambda op=op: session.run(op)) for variant, op in ops.items()}


def eager_steps(tf, strategy, make_synced_fn, num_classes):
    """`make_synced_fn()` (called in the scope) returns the synced replica fn."""
    with strategy.scope():
        synced_fn = make_synced_fn()
        local = tf.Variable(tf.zeros([num_classes, D]), trainable=False, name="local")
    steps = {}
    for variant, fn in (("synced", synced_fn), ("local", local_step_fn(tf, local, num_classes)),
                        ("draw", draw_fn(tf, num_classes))):
        @tf.function
        def step(fn=fn):
            return strategy.experimental_local_results(strategy.run(fn))
        steps[variant] = lambda step=step: [t.numpy() for t in step()]
    return steps


def tf2_synced(tf, num_classes):
    import cl.tf2
    center = cl.tf2.CenterLoss(num_classes, D, alpha=ALPHA)

    def replica_fn():
        labels = tf.random.uniform([B], 0, num_classes, tf.int32)
        return center(labels, tf.random.normal([B, D]))
    return replica_fn


def keras3_synced(tf, num_classes):
    import keras
    if keras.backend.backend() != "tensorflow":
        raise Skip(f"KERAS_BACKEND is {keras.backend.backend()}, not tensorflow")
    from cl.keras3 import CenterLoss
    layer = CenterLoss(num_classes, alpha=ALPHA, weight=0.01)
    try:
        layer.build([(None, D), (None,)])
    except Exception as error:  # NotImplementedError/ValueError: refused; else: in the works
        raise Skip(f"cl.keras3.CenterLoss does not build under MirroredStrategy here: "
                   f"{type(error).__name__}: {str(error).splitlines()[0]}") from None

    def replica_fn():
        labels = tf.random.uniform([B], 0, num_classes, tf.int32)
        return layer([tf.random.normal([B, D]), labels], training=True)
    return replica_fn


def jax_steps(num_classes):
    """keras3_jax's {"synced": step, "local": step}."""
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["KERAS_BACKEND"] = "jax"
    import functools

    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from cl import formulas
    from cl.keras3 import CenterLoss
    devices = jax.devices()[:2]
    mesh = Mesh(np.array(devices), ("batch",))
    # As under fit: the layer sees the running distribution (it makes the
    # batch's rows whole on every device before the scatter).
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    layer = CenterLoss(num_classes, alpha=ALPHA, weight=0.01)
    layer.build([(None, D), (None,)])

    # Each step draws its batch, as the TF rows do: 2B samples split by
    # samples (each device draws its half: jax_threefry_partitionable), or B
    # per device with the device's own key.
    split = NamedSharding(mesh, P("batch"))

    def batch(key, size):
        label_key, feature_key = jax.random.split(key)
        return (jax.random.randint(label_key, [size], 0, num_classes),
                jax.random.normal(feature_key, [size, D]))

    def global_batch(key):
        return [jax.lax.with_sharding_constraint(t, split) for t in batch(key, 2 * B)]

    @functools.partial(jax.jit, donate_argnums=0)
    def synced(table, key):
        labels, features = global_batch(key)
        with keras.StatelessScope(state_mapping=[(layer.centers, table)]) as scope:
            loss = layer.term(labels, features, training=True)
        return scope.get_current_value(layer.centers), loss

    def local_update(table, key):  # on each device: its own copy, its own B
        labels, features = batch(jax.random.fold_in(key, jax.lax.axis_index("batch")), B)
        rows = table[labels]
        ids, deltas = formulas.center_update(labels, features, rows, ALPHA, backend=formulas.JAX)
        loss = formulas.per_sample_center_loss(features, rows, formulas.JAX)
        return table.at[ids].add(-deltas), loss
    local = jax.jit(jax.shard_map(local_update, mesh=mesh, in_specs=(P(), P()),
                                  out_specs=(P(), P("batch")), check_vma=False),
                    donate_argnums=0)

    @jax.jit
    def draw(key):
        labels, features = global_batch(key)
        return features[:, 0] + labels
    tables = {variant: jax.device_put(jnp.zeros((num_classes, D)), NamedSharding(mesh, P()))
              for variant in ("synced", "local")}
    key = jax.random.PRNGKey(0)

    def step(variant, function):
        tables[variant], loss = function(tables[variant], key)
        loss.block_until_ready()
    return {"synced": functools.partial(step, "synced", synced),
            "local": functools.partial(step, "local", local),
            "draw": lambda: draw(key).block_until_ready()}


def measure_one(front_end, num_classes, steps):
    """Runs in its own process: returns the row, or raises Skip."""
    if front_end == "keras3_jax":
        return dict(front_end=front_end, classes=num_classes,
                    times=in_turn(jax_steps(num_classes), steps, WARMUP))
    if front_end == "keras3_tf":
        os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if front_end == "graph":
        run = graph_steps(tf, strategy, num_classes)
    else:
        make = tf2_synced if front_end == "tf2" else keras3_synced
        try:
            run = eager_steps(tf, strategy, lambda: make(tf, num_classes), num_classes)
            run["synced"]()  # traces; a front-end that refuses at trace time is skipped
        except Skip:
            raise
        except Exception as error:
            if front_end != "keras3_tf":
                raise
            raise Skip(f"cl.keras3.CenterLoss refuses the step under MirroredStrategy: "
                       f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
    return dict(front_end=front_end, classes=num_classes, times=in_turn(run, steps, WARMUP))


def summarise(front_end, num_classes, passes):
    """One row from the passes' per-round times, pooled."""
    import numpy as np
    synced, local, draw = (np.concatenate([p[variant] for p in passes])
                           for variant in ("synced", "local", "draw"))
    medians = {name: 1e3 * float(np.median(times))
               for name, times in (("synced", synced), ("local", local), ("draw", draw))}
    return dict(front_end=front_end, classes=num_classes,
                synced_ms=medians["synced"], local_ms=medians["local"], draw_ms=medians["draw"],
                ratio=float(np.median(synced / local)),
                # What the update and its exchange cost, the batch's drawing left out.
                ratio_less_draw=(medians["synced"] - medians["draw"])
                / (medians["local"] - medians["draw"]),
                passes=len(passes), rounds=int(synced.size))


def child(args):
    try:
        row = measure_one(args.one, int(args.classes), args.steps)
    except Skip as skip:
        print("SKIP " + str(skip), flush=True)
        return
    print("ROW " + json.dumps(row), flush=True)


def figures(rows):
    """One line per front-end and C, the goals after them (bench/goals.py)."""
    lines = [f"{r['front_end']:<10} C={r['classes']:>6}: synced {r['synced_ms']:7.2f} ms, local "
             f"{r['local_ms']:7.2f} ms, synced/local {r['ratio']:.2f}x; drawing the batch "
             f"{r['draw_ms']:5.2f} ms, less it {r['ratio_less_draw']:.2f}x" for r in rows]
    return lines + [""] + goals.report("distribute.json", rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--front-ends", default=",".join(FRONT_ENDS))
    parser.add_argument("--classes", default="1000,100000")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--passes", type=int, default=2,
                        help="processes per (front-end, C), run in ABBA order and pooled")
    parser.add_argument("--jax-python", default=JAX_PYTHON,
                        help="the JAX environment's python, for keras3_jax")
    parser.add_argument("--one", choices=FRONT_ENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return child(args)
    rows = []
    for front_end in args.front_ends.split(","):
        classes = args.classes.split(",")
        # Passes in ABBA order (10^3, 10^5, 10^5, 10^3, ...), pooled per C: a
        # drift of the shared machine's load over the run then lands on both
        # C alike, and the growth 10^3 -> 10^5 is cl's, not the load's.
        order = [c for i in range(args.passes) for c in (classes if i % 2 == 0 else classes[::-1])]
        times, skipped = {c: [] for c in classes}, False
        python = args.jax_python if front_end == "keras3_jax" else sys.executable
        if not Path(python).exists():
            print(f"{front_end}: skipped: no {python} (make venv-jax)", flush=True)
            continue
        for num_classes in order:
            result = subprocess.run(
                [python, __file__, "--one", front_end, "--classes", num_classes,
                 "--steps", str(args.steps)], capture_output=True, text=True)
            lines = result.stdout.splitlines()
            found = [line for line in lines if line.startswith(("ROW ", "SKIP "))]
            if result.returncode != 0 or not found:
                sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
                raise SystemExit(f"{front_end} at C={num_classes} failed (exit {result.returncode})")
            if found[-1].startswith("SKIP "):
                print(f"{front_end}: skipped: {found[-1][5:]}", flush=True)
                skipped = True
                break  # the other C would be skipped alike
            times[num_classes].append(json.loads(found[-1][4:])["times"])
        if skipped:
            continue
        for num_classes in classes:
            rows.append(summarise(front_end, int(num_classes), times[num_classes]))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distribute.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(["", "2 logical CPU replicas, B=%d per replica, D=%d; median of the "
                     "per-round ratios; goals are checks, not asserts:" % (B, D)] + figures(rows)))
    print(f"Wrote {out / 'distribute.json'}")


if __name__ == "__main__":
    main()
