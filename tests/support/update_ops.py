"""Counts of the ops that compute and exchange a global batch's center
update in a TensorFlow graph: what tells one update computed for all
replicas from one computed per replica. Used by the tests/scripts programs
run under MirroredStrategy."""

import collections
import re

import tensorflow as tf


def counts(operations, scope=""):
    """`{"unique": n, "collectives": m}` over `operations` whose name, less a
    leading "replica_<k>/", starts with `scope`."""
    types = collections.Counter(op.type for op in operations
                                if re.sub(r"^replica_\d+/", "", op.name).startswith(scope))
    return dict(unique=types["Unique"],
                collectives=sum(n for t, n in types.items() if t.startswith("Collective")))


def one_update():
    """`counts` of `cl.formulas.class_deltas` built once, alone."""
    from cl import formulas
    graph = tf.Graph()
    with graph.as_default():
        formulas.class_deltas(tf.zeros([4], tf.int64), tf.zeros([4, 3]), tf.ones([4]), 0.5)
    return counts(graph.get_operations())
