"""cl.keras3 on TensorFlow under tf.distribute.MirroredStrategy (2 logical
CPUs), with the user's standard Keras code: the layer, and CenterLossModel,
built and compiled in strategy.scope() and trained with fit. The backbone
learns nothing (learning rate 0) and the embedding is the input, so the
features are known: after every step both copies of the table are bitwise
equal and follow the rule on the global batch (fit's sample weights
included, an uneven short last batch too); evaluate, predict and
validation never move them; the loss is the one-device loss; a .keras
round trip restores every copy; OneDeviceStrategy takes the one-device
path; other strategies are refused; each replica reads its copy once for
its batch's rows and once for the global batch's.

Run by tests/eager/test_keras3_tf_table.py in a subprocess (logical devices
must be set before TensorFlow initialises); argv: the tests/support folder. Prints
one RESULT line.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])  # tests/support: the numpy reference
import keras  # noqa: E402
import reference  # noqa: E402
import update_ops  # noqa: E402

from cl.keras3 import CenterLoss, CenterLossModel  # noqa: E402

C, D, ALPHA, B = 6, 3, 0.5, 8
N = 3 * B + 5  # a short last batch, split 3/2


def data(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C - 1, N).astype(np.int32)  # class C-1 never present
    x = (rng.normal(size=(N, D)) + y[:, None]).astype(np.float32)
    w = rng.choice([0.0, 0.5, 1.0, 2.0], N).astype(np.float32)
    return x, y, w


def layer_model():
    x, y = keras.Input((D,)), keras.Input((), dtype="int32")
    embedding = CenterLoss(C, alpha=ALPHA, weight=0.1, name="center")([x, y])
    model = keras.Model([x, y], keras.layers.Dense(C, name="logits")(embedding))
    return model, model.get_layer("center")


def wrapped_model():
    x = keras.Input((D,))
    model = CenterLossModel(keras.Model(x, [keras.layers.Dense(C)(x), x]), C, alpha=ALPHA,
                            weight=0.1)
    return model, model.center_loss


def compiled(model):
    model.compile(keras.optimizers.SGD(0.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def copies(layer):
    return [v.numpy() for v in layer.centers.value.values]


class Watch(keras.callbacks.Callback):
    """After every training step: copies equal, and the rule on the global batch."""

    def __init__(self, layer, report, x, y, w, start):
        super().__init__()
        self.layer, self.report, self.x, self.y, self.w = layer, report, x, y, w
        self.expected = start.astype(np.float64)
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        part = slice(self.step * B, (self.step + 1) * B)
        w = None if self.w is None else self.w[part]
        self.expected = reference.update_centers(self.y[part], self.x[part], self.expected,
                                                 ALPHA, w)
        self.step = (self.step + 1) % -(-N // B)
        now = copies(self.layer)
        self.report["steps"] += 1
        self.report["copies_equal"] &= all(np.array_equal(now[0], c) for c in now[1:])
        self.report["center_dev"] = max(self.report["center_dev"],
                                        float(np.abs(now[0] - self.expected).max()))


def train(strategy, build, weighted):
    x, y, w = data(1)
    with strategy.scope():
        model, layer = build()
        compiled(model)
    inputs = [x, y] if build is layer_model else x
    start = np.random.default_rng(0).normal(size=(C, D)).astype(np.float32)
    layer.centers.assign(start)  # cross-replica assign: every copy
    report = dict(kind=type(layer.centers.value).__name__,
                  aggregation=layer.centers.value.aggregation.name,
                  copies=len(layer.centers.value.values), steps=0, copies_equal=True,
                  center_dev=0.0)
    watch = Watch(layer, report, x, y, w if weighted else None, start)
    model.fit(inputs, y, sample_weight=w if weighted else None, batch_size=B, epochs=2,
              shuffle=False, verbose=0, callbacks=[watch])
    report["moved"] = not np.array_equal(copies(layer)[0], start)
    # evaluate, predict and validation read the centers and never move them.
    before = copies(layer)
    loss = model.evaluate(inputs, y, batch_size=B, verbose=0)
    model.predict(inputs, batch_size=B, verbose=0)
    report["frozen_outside_training"] = all(
        np.array_equal(a, b) for a, b in zip(before, copies(layer)))
    # The loss as on one device (Keras scales each replica's share).
    one, one_layer = build()
    compiled(one)
    one.set_weights(model.get_weights())
    report["loss_dev"] = abs(float(loss) - float(one.evaluate(inputs, y, batch_size=B,
                                                               verbose=0)))
    watch.expected, watch.step, watch.w = copies(layer)[0].astype(np.float64), 0, None
    model.fit(inputs, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[watch],
              validation_data=(inputs, y))
    report["validation_dev"] = float(np.abs(copies(layer)[0] - watch.expected).max())
    report["round_trip"] = round_trip(strategy, model, layer, build)
    return report


def round_trip(strategy, model, layer, build):
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    with strategy.scope():
        loaded = keras.saving.load_model(path)
    table = loaded.center_loss if isinstance(loaded, CenterLossModel) else \
        loaded.get_layer("center")
    got = copies(table)
    return len(got) == 2 and all(np.array_equal(c, copies(layer)[0]) for c in got)


def refused():
    strategy = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
    try:
        with strategy.scope():
            layer_model()
    except NotImplementedError as error:
        return str(error)
    return "not refused"


def one_device():
    """OneDeviceStrategy: a plain table, the one-device path."""
    x, y, _ = data(2)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model, layer = layer_model()
        compiled(model)
    model.fit([x, y], y, batch_size=N, verbose=0)
    want = reference.update_centers(y, x, np.zeros((C, D)), ALPHA)
    return dict(kind=type(layer.centers.value).__name__,
                center_dev=float(np.abs(layer.centers.numpy() - want).max()))


def table_ops(strategy):
    """Of one training call of the layer in strategy.run: per copy of the
    table, the ops that take that copy's handle ("per_copy"); the update's
    `update_ops.counts`, and those of one update built alone ("one_update")."""
    with strategy.scope():
        layer = CenterLoss(C, alpha=ALPHA, name="center")
        layer.build([(None, D), (None,)])
    step = tf.function(lambda x, y: strategy.run(lambda a, b: layer([a, b], training=True),
                                                 args=(x, y)))
    graph = step.get_concrete_function(tf.TensorSpec((B, D)), tf.TensorSpec((B,), tf.int32)).graph
    per_copy = []
    for copy in layer.centers.value.values:
        handle = {internal.ref() for external, internal in graph.captures
                  if external is copy.handle}
        per_copy.append(sorted(op.type for op in graph.get_operations()
                               if any(t.ref() in handle for t in op.inputs)))
    return dict(update_ops.counts(graph.get_operations()), per_copy=per_copy,
                one_update=update_ops.one_update())


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"layer": train(strategy, layer_model, weighted=False),
              "layer_weighted": train(strategy, layer_model, weighted=True),
              "model": train(strategy, wrapped_model, weighted=True),
              "one_device": one_device(), "refused": refused(), "table_ops": table_ops(strategy)}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
