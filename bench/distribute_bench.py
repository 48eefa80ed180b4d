"""Cost of cl's cross-replica center update on 2 logical CPU replicas.

Compares, per step (one session.run, graph mode, B=256 per replica, D=512):
  synced    cl.center_loss inside strategy.run: all-gather, one update from
            the global batch, scattered into each copy (cl.graph.replicas)
  local     each replica gathers and scatters its own copy with its own
            batch, no communication: the wrong rule, the cost floor
and prints the median ratio synced / local at each C. Usage:
  .venv/bin/python bench/distribute_bench.py [--classes 1000,100000] [--steps 30]
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

B, D = 256, 512


def build(strategy, variant, num_classes):
    import cl
    from cl import formulas
    from cl.graph import table

    def replica_fn():
        labels = tf.random.uniform([B], 0, num_classes, tf.int32)
        features = tf.random.normal([B, D])
        if variant == "synced":
            return cl.center_loss(labels, features, alpha=0.5, num_classes=num_classes)
        centers = table.centers_variable(num_classes, D, "local")
        handle = centers.handle
        rows = tf.raw_ops.ResourceGather(resource=handle, indices=labels, dtype=tf.float32)
        ids, deltas = formulas.center_update(labels, features, rows, 0.5)
        scatter = tf.raw_ops.ResourceScatterSub(resource=handle, indices=ids, updates=deltas)
        with tf.control_dependencies([scatter]):
            return formulas.per_sample_center_loss(features, rows)

    with strategy.scope():
        out = strategy.run(replica_fn)
        return tf.group(strategy.experimental_local_results(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", default="1000,100000")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    tf.compat.v1.disable_eager_execution()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rows = []
    for num_classes in map(int, args.classes.split(",")):
        graph = tf.Graph()
        with graph.as_default():
            steps = {v: build(strategy, v, num_classes) for v in ("synced", "local")}
            session = tf.compat.v1.Session(graph=graph)
            session.run(tf.compat.v1.global_variables_initializer())
            times = {v: [] for v in steps}
            for round_ in range(args.steps + 3):
                for variant, op in steps.items():  # alternate, so load hits both alike
                    start = time.perf_counter()
                    session.run(op)
                    if round_ >= 3:
                        times[variant].append(time.perf_counter() - start)
            session.close()
        ratio = float(np.median(np.array(times["synced"]) / np.array(times["local"])))
        rows.append(dict(classes=num_classes, synced_ms=1e3 * float(np.median(times["synced"])),
                         local_ms=1e3 * float(np.median(times["local"])), ratio=ratio))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
