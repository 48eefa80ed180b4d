"""The benchmarked variants, as TF1-style graphs; one step = one session.run.

Imported by bench_graph.py's worker processes only: each (variant, num_classes)
runs in its own process with its own tf.Graph (see `serve`). Inputs
live in the graph (constants and variables; labels drawn in-graph from a
preset random pool), so a step is one `session.run(step)` with no feed_dict.

Full training steps (same model, same optimizer, same labels):
  softmax             fixed input -> dense D->D (the embedding) -> FC D->C,
                      sparse softmax cross-entropy, Momentum step.
  cl                  softmax + LAMBDA * cl.center_loss on the embedding; the
                      centers move by cl's own sparse update (no slots).
  dense_distmat       softmax + LAMBDA * the distance-matrix center loss of
                      KaiyangZhou/pytorch-center-loss: a B x C matrix
                      ||x||^2 + ||c||^2 - 2 x c^T masked by one-hot labels;
                      the centers are a trainable variable moved by Momentum.
  embedding_param     softmax + LAMBDA * 1/2||x - c_y||^2 with the centers a
                      trainable table read with tf.gather (the Keras
                      Embedding-layer trick); Momentum moves them.
The center term on its own (no FC, no softmax):
  cl_term             cl.center_loss forward + its built-in update, on fixed
                      (non-trained) features.
  dense_distmat_term  the distance-matrix loss + a Momentum step on the
                      centers and the features.
  blog_term           the blog's own construction (its cl.py): gather,
                      unique_with_counts, the rows divided by 1 + n_j,
                      scatter_sub under control_dependencies of its loss.
  floor_gather_scatter  gather B rows of a [C, D] resource variable and
                      scatter_sub B rows back: the least any center loss
                      with a per-class table can do per step.
"""

import hashlib
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import cl

# One optimizer for every trained variable in every variant. Momentum keeps
# one slot per variable, so the slot column shows what a trainable centers
# table costs on top of the table itself (Adam would double that).
LEARNING_RATE = 0.01
MOMENTUM = 0.9
LAMBDA = 0.003  # weight of the center term in the full steps
ALPHA = 0.5     # cl's center learning rate (the paper's)
LABEL_POOL = 64  # preset random label batches; each step picks one in-graph


def momentum():
    return tf.compat.v1.train.MomentumOptimizer(LEARNING_RATE, MOMENTUM)


def batch_labels(batch, num_classes):
    """int32 [batch]: one row of a fixed random pool, picked anew each step."""
    pool = np.random.RandomState(0).randint(
        0, num_classes, size=(LABEL_POOL, batch)).astype(np.int32)
    row = tf.random.uniform([], 0, LABEL_POOL, dtype=tf.int32, seed=1)
    return tf.gather(tf.constant(pool), row)


def dense(inputs, units, name):
    """A trainable fully connected layer `inputs @ kernel + bias`."""
    with tf.compat.v1.variable_scope(name):
        kernel = tf.compat.v1.get_variable(
            "kernel", [inputs.shape[1], units], tf.float32,
            initializer=tf.compat.v1.glorot_uniform_initializer())
        bias = tf.compat.v1.get_variable(
            "bias", [units], tf.float32, initializer=tf.compat.v1.zeros_initializer())
    return tf.matmul(inputs, kernel) + bias


def embedding(batch, dim):
    """[batch, dim] embedding: a trainable dense layer on a fixed input."""
    inputs = tf.constant(np.random.RandomState(1).randn(batch, dim).astype(np.float32))
    return dense(inputs, dim, "embedding")


def softmax_term(labels, features, num_classes):
    logits = dense(features, num_classes, "fc")
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits))


def trainable_centers(num_classes, dim):
    return tf.compat.v1.get_variable(
        "centers", [num_classes, dim], tf.float32,
        initializer=tf.compat.v1.random_normal_initializer(), trainable=True)


def distmat_center_loss(labels, features, centers):
    """The pytorch-center-loss formulation, written in TF.

    Every step builds the full [batch, num_classes] squared-distance matrix
    (an O(B*C*D) matmul), keeps the label column by a one-hot mask, clamps
    (so each masked-out zero counts as 1e-12, as there) and averages over the
    batch. The gradient reaching `centers` is a dense [C, D] tensor.
    """
    num_classes = tf.compat.dimension_value(centers.shape[0])
    distmat = (tf.reduce_sum(tf.square(features), axis=1, keepdims=True)
               + tf.reduce_sum(tf.square(centers), axis=1)[None, :]
               - 2.0 * tf.matmul(features, centers, transpose_b=True))
    mask = tf.one_hot(labels, num_classes, dtype=distmat.dtype)
    dist = tf.clip_by_value(distmat * mask, 1e-12, 1e12)
    return tf.reduce_sum(dist) / tf.cast(tf.shape(features)[0], dist.dtype)


def embedding_center_loss(labels, features, centers):
    """1/2 ||x - c_y||^2 through tf.gather: the centers get sparse gradients."""
    centers_batch = tf.gather(centers, labels)
    return tf.reduce_mean(0.5 * tf.reduce_sum(tf.square(features - centers_batch), axis=1))


# Each builder adds one variant to the default graph and returns
# (step, centers variables, optimizer or None). Running `step` once is one
# training step; the loss is part of it, so cl's update (which rides on its
# loss tensor) always runs.

def build_softmax(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    loss = softmax_term(labels, embedding(batch, dim), num_classes)
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [], optimizer


def build_cl(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = embedding(batch, dim)
    center = tf.reduce_mean(cl.center_loss(labels, features, alpha=ALPHA,
                                           num_classes=num_classes))
    loss = softmax_term(labels, features, num_classes) + LAMBDA * center
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [cl.get_centers()], optimizer


def build_dense_distmat(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = embedding(batch, dim)
    centers = trainable_centers(num_classes, dim)
    loss = (softmax_term(labels, features, num_classes)
            + LAMBDA * distmat_center_loss(labels, features, centers))
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [centers], optimizer


def build_embedding_param(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = embedding(batch, dim)
    centers = trainable_centers(num_classes, dim)
    loss = (softmax_term(labels, features, num_classes)
            + LAMBDA * embedding_center_loss(labels, features, centers))
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [centers], optimizer


def fixed_features(batch, dim, trainable):
    return tf.compat.v1.get_variable(
        "features", [batch, dim], tf.float32,
        initializer=tf.compat.v1.random_normal_initializer(seed=2), trainable=trainable)


def build_cl_term(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=False)
    loss = cl.center_loss(labels, features, alpha=ALPHA, num_classes=num_classes)
    return tf.group(loss), [cl.get_centers()], None


def build_blog_term(batch, dim, num_classes):
    """The blog's center loss as its cl.py builds it (a resource table, as
    cl's), on the same fixed features: what cl's exactness must not cost."""
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=False)
    centers = tf.compat.v1.get_variable(
        "centers", [num_classes, dim], tf.float32,
        initializer=tf.compat.v1.zeros_initializer(), trainable=False, use_resource=True)
    centers_batch = tf.gather(centers, labels)
    _, unique_idx, unique_count = tf.unique_with_counts(labels)
    appear_times = tf.reshape(tf.gather(unique_count, unique_idx), [-1, 1])
    diff = ALPHA * (centers_batch - features) / tf.cast(1 + appear_times, tf.float32)
    update = tf.compat.v1.scatter_sub(centers, labels, diff)
    with tf.control_dependencies([update]):
        loss = tf.nn.l2_loss(features - centers_batch)
    return tf.group(loss), [centers], None


def build_dense_distmat_term(batch, dim, num_classes):
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=True)
    centers = trainable_centers(num_classes, dim)
    loss = distmat_center_loss(labels, features, centers)
    optimizer = momentum()
    return tf.group(optimizer.minimize(loss), loss), [centers], optimizer


def build_floor_gather_scatter(batch, dim, num_classes):
    """ResourceGather of B rows, ResourceScatterSub of B rows, nothing else.

    No dense read of the table runs in the step. A dense read whose output is
    still alive when the scatter runs (say `tf.gather(table.read_value(),
    labels)`) makes the scatter copy all C x D floats first (copy-on-write:
    about 10 ms a step at C=100000 on 2 cores, against 0.3 ms), and once a
    sparse op has touched the table every dense read copies it. So the step
    is the scatter op itself: `tf.compat.v1.scatter_sub` on a resource
    variable returns a variable whose graph element is a dense read, which
    fetching (or a control dependency on its tensor) would run.
    """
    labels = batch_labels(batch, num_classes)
    features = fixed_features(batch, dim, trainable=False)
    table = tf.compat.v1.get_variable(
        "centers", [num_classes, dim], tf.float32,
        initializer=tf.compat.v1.zeros_initializer(), trainable=False,
        use_resource=True)
    rows = table.sparse_read(labels)
    scatter = tf.raw_ops.ResourceScatterSub(
        resource=table.handle, indices=labels, updates=ALPHA * (rows - features))
    return scatter, [table], None


BUILDERS = {
    "softmax": build_softmax,
    "cl": build_cl,
    "dense_distmat": build_dense_distmat,
    "embedding_param": build_embedding_param,
    "cl_term": build_cl_term,
    "blog_term": build_blog_term,
    "dense_distmat_term": build_dense_distmat_term,
    "floor_gather_scatter": build_floor_gather_scatter,
}


def variable_bytes(variable):
    return variable.shape.num_elements() * variable.dtype.base_dtype.size


def slots_of(optimizer, variable):
    """The optimizer's slot variables for `variable` (Momentum: its accumulator)."""
    if optimizer is None:
        return []
    slots = (optimizer.get_slot(variable, name) for name in optimizer.get_slot_names())
    return [slot for slot in slots if slot is not None]


def memory_columns(graph, optimizer, num_classes, dim):
    """Bytes of the centers tables and of their optimizer slots, from the graph.

    A centers table is any [num_classes, dim] variable that is not a slot;
    the fc kernel is [dim, num_classes], so it is not counted (unless C == D).
    """
    variables = graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
    slots = {slot.name for v in variables for slot in slots_of(optimizer, v)}
    tables = [v for v in variables if v.name not in slots
              and v.shape.as_list() == [num_classes, dim]]
    return {
        "centers_tables": len(tables),
        "centers_bytes": sum(variable_bytes(v) for v in tables),
        "center_slot_bytes": sum(variable_bytes(slot) for v in tables
                                 for slot in slots_of(optimizer, v)),
        "all_variable_bytes": sum(variable_bytes(v) for v in variables),
    }


def memory_mb(field):
    """`field` (VmRSS, VmHWM) of /proc/self/status in MB; None if unavailable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Restarts VmHWM (and ru_maxrss) from the current RSS (Linux >= 4.0):
    peaks after this point are the steps', not the initializers' temporaries."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def checksum(table):
    """float64 sum of the table's first rows, to see that the steps moved it.

    A dense read, sliced: a gather before the first step would switch the
    table to copy-on-read mode early, and every dense read in the distance
    matrix steps would then copy it (seen: 120-390 MB more memory while
    stepping at C=100000). float64 and few rows: a float32 sum of 51M numbers
    would miss the tiny steps Momentum takes on a trainable table.
    """
    return tf.reduce_sum(tf.cast(table.value()[:4096], tf.float64))


def cl_sources_sha256():
    """Short hash of the cl sources measured (cl is being edited meanwhile)."""
    digest = hashlib.sha256()
    for module in ("ops.py", "formulas.py"):
        digest.update((Path(cl.__file__).parent / module).read_bytes())
    return digest.hexdigest()[:12]


def serve(connection, variant, num_classes, batch, dim):
    """Worker loop: builds `variant` in this process, then obeys the driver.

    Sends "ready", then answers each "step" with the seconds one
    `session.run(step)` took, and "report" with the memory row (then exits).
    One process per variant: its own graph, session and peak RSS.
    """
    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        step, centers, optimizer = BUILDERS[variant](batch, dim, num_classes)
        checksums = [checksum(table) for table in centers]
        init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
    # allow_growth: on a GPU, the variants' processes share the device.
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(init)
        before = session.run(checksums)
        rss_before_steps = memory_mb("VmRSS")
        init_peak = memory_mb("VmHWM")
        reset_peak_rss()
        connection.send("ready")
        while connection.recv() == "step":
            start = time.perf_counter()
            session.run(step)
            connection.send(time.perf_counter() - start)
        peak_rss = memory_mb("VmHWM")
        # The steps did move the centers (cl's update rides on its loss tensor).
        centers_moved = all(a != b for a, b in zip(before, session.run(checksums)))
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    connection.send({
        "peak_rss_mb": peak_rss and round(peak_rss, 1),
        "step_rss_growth_mb": peak_rss and round(peak_rss - rss_before_steps, 1),
        "process_peak_rss_mb": peak_rss and round(max(init_peak, peak_rss), 1),
        **memory_columns(graph, optimizer, num_classes, dim),
        "centers_moved": centers_moved if centers else None,
        "device": "GPU" if "GPU" in devices else "CPU",
        "tensorflow": tf.__version__,
        "cl": f"{cl.__version__} (ops.py+formulas.py sha256 {cl_sources_sha256()})",
        "optimizer": f"Momentum(lr={LEARNING_RATE}, momentum={MOMENTUM})",
        "lambda": LAMBDA,
        "alpha": ALPHA,
    })
