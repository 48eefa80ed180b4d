"""Keras 2 with the centers split by rows: `CenterLoss(partitioner=...)` or a
compile under `variable_scope(partitioner=...)`. Training follows the rule
(learning rate 0: only the centers move), evaluate/predict move nothing,
and the table survives every way a Keras 2 user moves weights, into a model
with another number of shards too."""

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import keras

import cl
from cl import compat

C, D_IN, D, B, ALPHA = 10, 5, 4, 12, 0.5
PartitionedVariable = compat.partitioned_variable_class()
SGD = getattr(keras.optimizers, "legacy", keras.optimizers).SGD


def model_with(partitioner, scope_partitioner=None, center_metrics=False):
    inputs = keras.Input([D_IN])
    embedding = keras.layers.Dense(D, name="embedding")(inputs)
    logits = keras.layers.Dense(C, name="logits")(embedding)
    model = keras.Model(inputs, [logits, embedding])
    metrics = {"embedding": cl.center_metrics()} if center_metrics else None
    with tf.compat.v1.variable_scope("outer", partitioner=scope_partitioner):
        cl.compile_model(model, SGD(0.0),
            loss={"logits": cl.SparseSoftmaxLoss(),
                  "embedding": cl.CenterLoss(C, ALPHA, partitioner=partitioner)},
            metrics=metrics)
    return model


def centers(model):
    (table,) = cl.centers_of(model)
    return model.get_weights()[-1], table


def fit_steps(model, rng, steps=3):
    expected = np.zeros([C, D], np.float32)
    for _ in range(steps):
        x = rng.normal(size=[B, D_IN]).astype(np.float32)
        y = rng.integers(0, C, size=B)
        features = model.predict(x, verbose=0)[1]
        model.fit(x, {"logits": y, "embedding": y}, batch_size=B, epochs=1, verbose=0)
        expected = reference.update_centers(y, features, expected, ALPHA)
        np.testing.assert_allclose(centers(model)[0], expected, rtol=1e-5, atol=1e-6)
    return x, y, expected


@pytest.mark.parametrize("how", ["shards", "partitioner", "variable_scope"])
def test_fit_follows_the_rule_and_evaluate_moves_nothing(rng, how):
    model = model_with(3 if how == "shards" else
                       tf.compat.v1.fixed_size_partitioner(3) if how == "partitioner" else None,
                       tf.compat.v1.fixed_size_partitioner(3) if how == "variable_scope" else None,
                       center_metrics=True)
    value, table = centers(model)
    assert isinstance(table, PartitionedVariable)
    assert [s.shape.as_list() for s in table] == [[4, D], [3, D], [3, D]]
    assert value.shape == (C, D)
    x, y, expected = fit_steps(model, rng)
    model.evaluate(x, {"logits": y, "embedding": y}, verbose=0)
    model.predict(x, verbose=0)
    np.testing.assert_allclose(centers(model)[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("route", ["save_weights_tf", "save_weights_h5", "set_weights",
                                   "save_model_h5", "checkpoint"])
@pytest.mark.parametrize("shards_after", [3, 2, None])
def test_centers_survive_into_another_number_of_shards(tmp_path, rng, route, shards_after):
    source = model_with(3)
    trained = fit_steps(source, rng, steps=1)[2]
    target = model_with(shards_after)
    if route == "save_weights_tf":
        source.save_weights(str(tmp_path / "w"))
        np.testing.assert_allclose(cl.read_centers(tmp_path / "w"), trained, rtol=1e-6)
        target.load_weights(str(tmp_path / "w"))
    elif route == "save_weights_h5":
        source.save_weights(str(tmp_path / "w.h5"))
        target.load_weights(str(tmp_path / "w.h5"))
    elif route == "set_weights":
        target.set_weights(source.get_weights())
    elif route == "checkpoint":
        path = tf.train.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
        saved = cl.read_centers(path, "model/cl_centers")
        np.testing.assert_allclose(saved, trained, rtol=1e-6)
        if shards_after == 3:
            status = tf.train.Checkpoint(model=target).read(path)
            status.run_restore_ops(compat.keras_backend(target).get_session())
        else:  # tf.train.Checkpoint matches keys only: hand the whole table over
            _assign_whole(target, saved)
    else:
        cl.save_model(source, str(tmp_path / "m.h5"))
        target = cl.load_model(str(tmp_path / "m.h5"))
    np.testing.assert_allclose(centers(target)[0], trained, rtol=1e-6)


def _assign_whole(model, value):
    """Whole `value` into the model's (possibly split) table."""
    (table,) = cl.centers_of(model)
    tables = list(table) if isinstance(table, PartitionedVariable) else [table]
    start, pairs = 0, []
    for variable in tables:
        rows = variable.shape.as_list()[0]
        pairs.append((variable, value[start:start + rows]))
        start += rows
    compat.keras_backend(model).batch_set_value(pairs)


def test_bad_partitioner_is_refused():
    with pytest.raises(TypeError, match="received 'four'"):
        cl.CenterLoss(C, partitioner="four")
    assert cl.CenterLoss(C, partitioner=4).get_config()["partitioner"] == 4


@pytest.mark.parametrize("shards_after", [3, 2, None])
def test_tf_format_weights_loaded_before_compile_fill_any_number_of_shards(tmp_path, rng,
                                                                        shards_after):
    source = model_with(3)
    trained = fit_steps(source, rng, steps=1)[2]
    source.save_weights(str(tmp_path / "w"))
    inputs = keras.Input([D_IN])
    embedding = keras.layers.Dense(D, name="embedding")(inputs)
    target = keras.Model(inputs, [keras.layers.Dense(C, name="logits")(embedding), embedding])
    target.load_weights(str(tmp_path / "w"))  # no cl table yet
    cl.compile_model(target, SGD(0.0), loss={
        "logits": cl.SparseSoftmaxLoss(), "embedding": cl.CenterLoss(C, ALPHA, partitioner=shards_after)})
    np.testing.assert_allclose(centers(target)[0], trained, rtol=1e-6)
