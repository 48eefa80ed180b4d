"""Keras 2 fit under MirroredStrategy (both classes, 2 logical CPUs), graph
mode: CenterLoss on the embedding of a two-output model, or the blog's
cl.loss on the logits (optionally with sample weights). The model is frozen,
so predict gives the features each step used: every copy of the table
follows the rule on the global batch, evaluate and predict leave it alone,
and a TF-format checkpoint carries it.

Run by tests/graph_mode/test_replicas.py in a subprocess (logical devices must
be set before TensorFlow initialises), one case per process; argv: the
tests/support folder, the case ("v2-classes", "v1-blog", "v2-blog-weighted"
...). Prints one RESULT line.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference
import reference  # noqa: E402

import cl  # noqa: E402
from cl import compat  # noqa: E402

keras = compat.keras_module()
K = compat.keras_backend()

C, D, N, B, STEPS = 10, 3, 48, 8, 3
STRATEGIES = {"v2": tf.distribute.MirroredStrategy, "v1": tf.compat.v1.distribute.MirroredStrategy}


def build(kind_loss):
    inputs = keras.Input((4,))
    embedding = keras.layers.Dense(D, name="embedding", trainable=False)(inputs)
    logits = keras.layers.Dense(C, name="logits", trainable=False)(embedding)
    if kind_loss == "blog":
        # Blog: centers on the logits, one output.
        model = keras.Model(inputs, logits)
        cl.compile_model(model, keras.optimizers.legacy.SGD(0.0))
        return model, model
    model = keras.Model(inputs, [logits, embedding])
    cl.compile_model(model, keras.optimizers.legacy.SGD(0.0),
                     loss={"logits": cl.SparseSoftmaxLoss(),
                           "embedding": cl.CenterLoss(num_classes=C, alpha=0.5)},
                     loss_weights={"logits": 1.0, "embedding": 0.1})
    return model, keras.Model(inputs, embedding)


def rows(targets, part):
    """The targets of the samples in `part`: one array (blog) or per output."""
    if isinstance(targets, dict):
        return {k: v[part] for k, v in targets.items()}
    return targets[part]


def scenario(kind, kind_loss, weighted):
    K.clear_session()
    cl.NUM_CLASSES, cl.ALPHA = C, 0.5
    strategy = STRATEGIES[kind](["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(1)
    with strategy.scope():
        model, feature_model = build(kind_loss)
    session = K.get_session()
    table = cl.centers_of(model)[0]
    start = rng.normal(size=tuple(table.shape.as_list())).astype(np.float32)
    K.batch_set_value([(table, start)])
    x = rng.normal(size=(N, 4)).astype(np.float32)
    y = rng.integers(0, C, N)
    w = rng.choice([0.0, 0.5, 1.0, 2.0], N).astype(np.float32) if weighted else None
    feats = feature_model.predict(x, batch_size=B) if kind_loss != "blog" else model.predict(x, batch_size=B)
    if kind_loss == "blog":
        targets = np.eye(C, dtype=np.float32)[y]
    else:
        targets = {"logits": y, "embedding": y}
    report = dict(copies_equal=True, center_dev=0.0, moved=False, eval_frozen=True,
                  values=len(getattr(table, "values", [])), name=table.name)
    expected = start.astype(np.float64)
    for step in range(STEPS):
        lo = (step * B) % N
        sl = slice(lo, lo + B)
        model.fit(x[sl], rows(targets, sl), sample_weight=None if w is None else w[sl],
                  batch_size=B, epochs=1, verbose=0, shuffle=False)
        expected = reference.update_centers(y[sl], feats[sl], expected, 0.5,
                                            None if w is None else w[sl])
        copies = session.run(list(table.values))
        report["copies_equal"] &= all(np.array_equal(copies[0], c) for c in copies[1:])
        report["center_dev"] = max(report["center_dev"], float(np.abs(copies[0] - expected).max()))
    report["moved"] = float(np.abs(expected - start).max())
    before = session.run(list(table.values))
    ev_t = rows(targets, slice(None, B))
    model.evaluate(x[:B], ev_t, batch_size=B, verbose=0)
    model.predict(x[:B], batch_size=B)
    middle = session.run(list(table.values))
    report["eval_frozen"] = all(np.array_equal(a, b) for a, b in zip(before, middle))
    val = (x[:B], ev_t)
    second = slice(B, 2 * B)
    model.fit(x[second], rows(targets, second),
              batch_size=B, epochs=1, verbose=0, shuffle=False, validation_data=val)
    expected = reference.update_centers(y[second], feats[second], expected, 0.5)
    after = session.run(list(table.values))
    report["center_dev"] = max(report["center_dev"], float(np.abs(after[0] - expected).max()))
    report["copies_equal"] &= all(np.array_equal(after[0], c) for c in after[1:])
    # Checkpoint: TF format carries the table.
    path = os.path.join(tempfile.mkdtemp(), "ckpt")
    model.save_weights(path)
    saved = after[0]
    K.batch_set_value([(table, np.zeros(tuple(table.shape.as_list()), np.float32))])
    model.load_weights(path)
    restored = session.run(list(table.values))
    report["checkpoint_ok"] = all(np.array_equal(r, saved) for r in restored)
    report["tables"] = len(cl.centers_of(model))
    return report


def safe(*args):
    try:
        return scenario(*args)
    except Exception as error:  # reported, not raised: the test shows it
        return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    case = sys.argv[2]
    kind, kind_loss = case.split("-")[:2]
    # Keras 2 applies sample weights under a strategy to single-output models
    # only (with several outputs it ignores them, in its own loss too).
    print("RESULT " + json.dumps({case: safe(kind, kind_loss, case.endswith("weighted"))}), flush=True)
    # One scenario per process: closing a session (clear_session, exit) after
    # a distributed fit can wait forever on Keras's tf.data generator threads
    # (seen once in a few runs on 2 busy cores), so never close one.
    os._exit(0)
