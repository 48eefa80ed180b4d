"""`cl.keras3.torch_table` (KERAS_BACKEND=torch; skipped elsewhere): a torch
step touches only the batch's rows of the table, and torch.compile, which
hides fit's sample weights from the plain layer, is refused before any
change.
"""

import numpy as np
import pytest
import reference
from conftest import keras3_or_skip
from helpers import fresh_torch_compile

keras = keras3_or_skip()

from keras3_batches import ALPHA, BACKEND, WEIGHT, B, C, D, batches, centers_of  # noqa: E402

from cl.keras3 import CenterLoss  # noqa: E402


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile is PyTorch's jit_compile")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_torch_compile_refuses_the_plain_layer(rng, weighted):
    """Under torch.compile no frame holds fit's sample weights: the layer
    would update unweighted. Refused, saying what to use, before any change
    (with or without weights: the layer cannot tell)."""
    fresh_torch_compile()
    x = keras.Input((D,), name="x")
    y = keras.Input((), dtype="int32", name="y")
    layer = CenterLoss(C, alpha=ALPHA, weight=WEIGHT, name="center")
    model = keras.Model([x, y], keras.layers.Dense(C)(layer([x, y])))
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    xb, yb = next(batches(rng, 1))
    before = [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]
    weights = rng.uniform(0.5, 2.0, len(yb)).astype("float32") if weighted else None
    with pytest.raises(NotImplementedError, match="jit_compile=False.*CenterLossModel"):
        model.fit([xb, yb], yb, sample_weight=weights, batch_size=B, verbose=0)
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), value)


@pytest.mark.skipif(BACKEND != "torch", reason="torch's ops, seen by a dispatch mode (TensorFlow: "
                    "test_keras3_metrics reads the step's graph)")
def test_torch_step_touches_only_the_batch_rows(rng):
    """Cost flat in C: in a torch training step, only index_select (the B
    rows read) and index_add_ (the B rows written) touch the table, the
    table's [C] count vector only through the same two O(batch) ops (and
    holds zeros after the step), and nothing else of the step is O(C)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    classes = 100_000
    x_in, y_in = keras.Input((D,)), keras.Input((), dtype="int32")
    layer = CenterLoss(classes, alpha=ALPHA, weight=WEIGHT)
    model = keras.Model([x_in, y_in], keras.layers.Dense(C)(layer([x_in, y_in])))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = next(batches(rng, 1))
    model.train_on_batch([x, y], y)
    table = layer.centers.value
    counting = layer._table._counting
    assert tuple(counting.shape) == (classes,)
    touching, counted, big = [], [], []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [t for t in keras.tree.flatten((args, kwargs, out)) if hasattr(t, "data_ptr")]
            if any(t.data_ptr() == table.data_ptr() for t in tensors):
                touching.append(func.__name__)
            elif any(t.data_ptr() == counting.data_ptr() for t in tensors):
                counted.append(func.__name__)
            elif any(t.numel() >= classes for t in tensors):
                big.append(func.__name__)
            return out

    before = centers_of(layer)
    with Spy():
        model.train_on_batch([x, y], y)
    assert sorted(set(touching)) == ["index_add_.default", "index_select.default"], touching
    assert sorted(set(counted)) == ["index_add_.default", "index_select.default"], counted
    assert not big, big
    assert not counting.any()
    np.testing.assert_allclose(centers_of(layer), reference.update_centers(y, x, before, ALPHA),
                               rtol=1e-5, atol=1e-6)
