"""TF1 between-graph replication: a row-split centers table on 2 ps tasks.

In one process: gRPC servers for ps:0, ps:1, worker:0, worker:1 on
127.0.0.1. Each worker builds its own graph under
`replica_device_setter(ps_tasks=2)` and a `variable_scope(partitioner=4
shards)`, and trains through a session on its own server (learning rate 0,
so only the centers move). Checks, in the RESULT line:

  * where the shards live (round robin over the ps tasks), and which ops a
    step applies to them (row gathers and scatters, never a whole read);
  * worker 0 alone: after each step the table equals the rule on its batch;
  * the two workers alternating: each step applies the rule to its own
    batch, from the centers the other left;
  * the two at once, in threads, on disjoint classes: every row ends where
    its worker's own sequence of updates puts it, however they interleave.

argv: the tests/support folder, comma-separated free ports (4). Ends with
os._exit: in-process servers never shut down.
"""

import json
import os
import sys
import threading
import traceback

import numpy as np

sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference
import reference  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()
import cl  # noqa: E402

C, D_IN, D, B, ALPHA, SHARDS = 12, 5, 4, 8, 0.5, 4


def start_servers(ports):
    cluster = tf.train.ClusterSpec({
        "ps": [f"127.0.0.1:{port}" for port in ports[:2]],
        "worker": [f"127.0.0.1:{port}" for port in ports[2:]]})
    servers = {(job, task): tf.distribute.Server(cluster, job_name=job, task_index=task,
                                                 protocol="grpc", start=True)
               for job in ("ps", "worker") for task in range(2)}
    return cluster, servers


class Worker:
    """One worker's graph and session, as between-graph replication builds it."""

    def __init__(self, task, cluster, server):
        self.graph = tf.Graph()
        with self.graph.as_default():
            setter = tf.compat.v1.train.replica_device_setter(
                ps_tasks=2, worker_device=f"/job:worker/task:{task}", cluster=cluster)
            with tf.compat.v1.device(setter):
                self.labels = tf.compat.v1.placeholder(tf.int32, [B])
                self.inputs = tf.compat.v1.placeholder(tf.float32, [B, D_IN])
                weights = tf.compat.v1.get_variable(
                    "w", [D_IN, D], initializer=tf.compat.v1.random_normal_initializer(seed=7))
                self.features = tf.matmul(self.inputs, weights)
                with tf.compat.v1.variable_scope(
                        "model", partitioner=tf.compat.v1.fixed_size_partitioner(SHARDS)):
                    loss = tf.reduce_mean(cl.center_loss(self.labels, self.features, ALPHA, C))
                self.train_op = tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)
            self.table = cl.get_centers("model/center_loss")
            self.init = tf.compat.v1.global_variables_initializer()
        config = tf.compat.v1.ConfigProto(operation_timeout_in_ms=60000)
        self.session = tf.compat.v1.Session(server.target, graph=self.graph, config=config)

    def step(self, labels, inputs):
        """One training run; the features it used."""
        feed = {self.labels: labels, self.inputs: inputs}
        features = self.session.run(self.features, feed)
        self.session.run(self.train_op, feed)
        return features

    def centers(self):
        return np.concatenate(self.session.run(list(self.table)), axis=0)

    def shard_ops(self):
        """Types of the ops a training run applies to the shards' handles."""
        shards = {shard.op for shard in self.table}
        seen, stack, found = set(), [self.train_op], set()
        while stack:
            op = stack.pop()
            if op not in seen:
                seen.add(op)
                found.update(op.type for t in op.inputs if t.op in shards)
                stack.extend([t.op for t in op.inputs] + list(op.control_inputs))
        return sorted(found)


def main():
    ports = [int(port) for port in sys.argv[2].split(",")]
    cluster, servers = start_servers(ports)
    workers = [Worker(task, cluster, servers[("worker", task)]) for task in range(2)]
    workers[0].session.run(workers[0].init)
    rng = np.random.default_rng(11)
    result = {"devices": [shard.device for shard in workers[0].table],
              "rows": [shard.shape.as_list() for shard in workers[0].table],
              "shard_ops": workers[0].shard_ops()}

    def batch(classes):
        return (rng.choice(classes, size=B).astype(np.int32),
                rng.normal(size=[B, D_IN]).astype(np.float32))

    expected, errors = np.zeros([C, D], np.float32), []
    # Worker 0 alone, then the two alternating: each step the rule on its batch.
    for task in [0, 0, 0, 1, 0, 1, 1, 0]:
        labels, inputs = batch(np.arange(C))
        features = workers[task].step(labels, inputs)
        expected = reference.update_centers(labels, features, expected, ALPHA)
        errors.append(float(np.abs(workers[1 - task].centers() - expected).max()))
    result["sequential_errors"] = errors

    # Both at once, on disjoint classes: rows 0-5 are worker 0's, 6-11 worker 1's.
    start = workers[0].centers()
    expected = start.copy()
    plans = {task: [batch(np.arange(6) + 6 * task) for _ in range(6)] for task in range(2)}
    used = {}

    def train(task):
        used[task] = [workers[task].step(*plan) for plan in plans[task]]

    threads = [threading.Thread(target=train, args=(task,)) for task in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for task in range(2):
        rows = np.arange(6) + 6 * task
        mine = start.copy()
        for (labels, _), features in zip(plans[task], used[task]):
            mine = reference.update_centers(labels, features, mine, ALPHA)
        expected[rows] = mine[rows]
    result["concurrent_error"] = float(np.abs(workers[0].centers() - expected).max())
    result["moved"] = float(np.abs(expected - start).max())
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
