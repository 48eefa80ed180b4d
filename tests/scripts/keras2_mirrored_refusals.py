"""Keras 2 under MirroredStrategy (2 logical CPUs), graph mode: the cases
that cannot be exact are refused, and the table is left as it was. One table
used by two outputs is refused at fit; center metrics at compile.

Run by tests/graph_mode/test_replicas.py in a subprocess (logical devices must
be set before TensorFlow initialises); argv: the case
("one_table_two_outputs" or "center_metrics"). Prints one RESULT line.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

tf.compat.v1.disable_eager_execution()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import cl  # noqa: E402
from cl import compat  # noqa: E402

keras, K = compat.keras_module(), compat.keras_backend()


def attempt(case):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((4,))
        a = keras.layers.Dense(3, name="a")(inputs)
        b = keras.layers.Dense(3, name="b")(inputs)
        model = keras.Model(inputs, [a, b])
        center = cl.CenterLoss(num_classes=5)
        if case == "one_table_two_outputs":
            cl.compile_model(model, keras.optimizers.legacy.SGD(0.0), loss=[center, center])
        else:
            try:
                cl.compile_model(model, keras.optimizers.legacy.SGD(0.0), loss=[center, None],
                                 metrics=[cl.center_metrics(center), []])
            except NotImplementedError as error:  # refused at compile: nothing made
                return {"error": str(error), "unchanged": not cl.centers_of(model)}
    x, y = np.ones((8, 4), np.float32), np.arange(8) % 5
    before = K.get_session().run(cl.centers_of(model)[0].values[0])
    try:
        model.fit(x, [y, y], batch_size=8, verbose=0)
    except NotImplementedError as error:
        after = K.get_session().run(cl.centers_of(model)[0].values[0])
        return {"error": str(error), "unchanged": bool(np.array_equal(before, after))}
    return {"error": None}


if __name__ == "__main__":
    print("RESULT " + json.dumps({sys.argv[1]: attempt(sys.argv[1])}), flush=True)
    os._exit(0)  # see tests/scripts/keras2_mirrored_fit.py: never close the session
