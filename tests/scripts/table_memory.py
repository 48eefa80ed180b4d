"""Peak memory of a big centers table, whole or in 4 shards, under default
session options: how many table-sizes the process grows by from building
the graph to after initialisation and one training step. Prints one RESULT
line. (TensorFlow constant-folds a zeros_initializer fill and keeps the
folded copy: 2x the table; cl's initializer is not folded.)"""

import json
import resource
import sys

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
import cl  # noqa: E402

C, D, B = 500_000, 128, 256


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def growth(partitioner):
    graph = tf.Graph()
    with graph.as_default():
        labels = tf.compat.v1.placeholder(tf.int32, [B])
        features = tf.compat.v1.placeholder(tf.float32, [B, D])
        loss = cl.center_loss(labels, features, 0.5, C, partitioner=partitioner)
        with tf.compat.v1.Session() as sess:
            before = peak_mb()
            sess.run(tf.compat.v1.global_variables_initializer())
            ids = np.arange(0, C, C // B)[:B]
            sess.run(loss, {labels: ids, features: np.ones([B, D], np.float32)})
            return (peak_mb() - before) / (C * D * 4 / 2**20)


which = sys.argv[1]
ratio = growth(tf.compat.v1.fixed_size_partitioner(4) if which == "sharded" else None)
print("RESULT " + json.dumps({"table_sizes": ratio}), flush=True)
