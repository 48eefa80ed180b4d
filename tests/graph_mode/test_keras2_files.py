"""Keras 2 centers in files (`cl.keras2.files`, `cl.keras2.model_methods`):
a table saved with another number of classes (or feature size) is refused,
on every route, before it is used or anything changes."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import backend, keras

import cl

D_IN, D = 5, 4
SGD = getattr(keras.optimizers, "legacy", keras.optimizers).SGD
# Two models in one graph: the second table gets its own name, and says so.
pytestmark = pytest.mark.filterwarnings("ignore:cl. a centers table .* already exists")


def model_with(classes, shards):
    """An embedding model whose only class-sized state is its centers table
    (`classes` rows, split into `shards`), trained by SGD(0.1)."""
    inputs = keras.Input([D_IN])
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(D, name="embedding")(hidden))
    cl.compile_model(model, SGD(0.1), loss=cl.CenterLoss(classes, 0.5, partitioner=shards))
    return model


def variables_of(model):
    """The layers' weights and every shard of the centers table, as they are."""
    (table,) = cl.centers_of(model)
    parts = list(table) if shards_count(table) else [table]
    return backend.get_session().run(list(model.weights) + parts)


def shards_count(table):
    return len(list(table)) if isinstance(table, cl.compat.partitioned_variable_class()) else 0


def trained(classes, shards, rng):
    model = model_with(classes, shards)
    y = np.arange(12) % classes
    model.fit(rng.normal(size=[12, D_IN]).astype(np.float32), y, batch_size=12, verbose=0)
    return model


def assert_unchanged(before, after):
    assert len(before) == len(after)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("saved, declared", [(10, 8), (8, 10)])
@pytest.mark.parametrize("shards", [None, 2, 3])
def test_tf_checkpoint_of_another_num_classes_is_refused_before_any_step(tmp_path, rng, shards,
                                                                       saved, declared):
    """Issue 21 item 9: `tf.train.Checkpoint(model=...)` restored into a model
    with another num_classes: TensorFlow assigned each saved shard as it was
    (10 rows behind an [8, D] declaration) and classes 3..7 trained on the
    rows of classes 4..8. Now fit and evaluate refuse it, naming both shapes,
    and nothing moves."""
    path = tf.train.Checkpoint(model=trained(saved, shards, rng)).write(str(tmp_path / "ckpt"))
    target = model_with(declared, shards)
    tf.train.Checkpoint(model=target).read(path).run_restore_ops(backend.get_session())
    before = variables_of(target)
    assert sum(len(v) for v in before[len(target.weights):]) == saved  # restored as it was
    x, y = rng.normal(size=[6, D_IN]).astype(np.float32), np.arange(6)
    shape = rf"declared \[{declared}, {D}\].*holds\] \[{saved} {D}\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=shape):
        target.fit(x, y, batch_size=6, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=shape):
        target.evaluate(x, y, verbose=0)
    assert_unchanged(before, variables_of(target))


@pytest.mark.parametrize("suffix", ["", ".h5"])
@pytest.mark.parametrize("saved_shards, shards", [(None, None), (2, 2), (3, 3), (3, None), (None, 2)])
def test_load_weights_refuses_another_shape_before_anything_changes(tmp_path, rng, suffix,
                                                                   saved_shards, shards):
    """Issue 21 item 9: TF-format `load_weights` raised only after Keras had
    overwritten the layers and the shards; HDF5 after the layers. Both now
    refuse before anything changes, naming both shapes (the TF format's
    from the checkpoint's shape map: the sum of its shards' rows)."""
    path = str(tmp_path / f"weights{suffix}")
    trained(10, saved_shards, rng).save_weights(path)
    target = model_with(8, shards)
    before = variables_of(target)
    with pytest.raises(ValueError, match=r"have shape \[10, 4\], this model's table "
                                         r"'.*' is \[8, 4\]; nothing was loaded"):
        target.load_weights(path)
    assert_unchanged(before, variables_of(target))


def test_set_weights_refuses_centers_of_another_shape_before_anything_changes(rng):
    """Issue 21 item 9: set_weights set the layers, then refused the centers."""
    source = trained(10, None, rng)
    target = model_with(8, 2)
    before = variables_of(target)
    with pytest.raises(ValueError, match=r"set_weights: the saved centers #0 have shape \[10, 4\]"):
        target.set_weights(source.get_weights())
    assert_unchanged(before, variables_of(target))


@pytest.mark.parametrize("suffix", ["", ".h5"])
def test_weights_loaded_before_compile_are_refused_at_compile(tmp_path, rng, suffix):
    """Issue 21 item 9: a file loaded before compile waits for the table;
    a table of another shape is refused when it is made."""
    path = str(tmp_path / f"weights{suffix}")
    trained(10, 3, rng).save_weights(path)
    inputs = keras.Input([D_IN])
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    target = keras.Model(inputs, keras.layers.Dense(D, name="embedding")(hidden))
    target.load_weights(path)
    with pytest.raises(ValueError, match=r"have shape \(10, 4\), but its table .* is \[8, 4\]"):
        cl.compile_model(target, SGD(0.1), loss=cl.CenterLoss(8, 0.5, partitioner=3))


def test_center_metrics_alone_refuse_a_restored_table_of_another_shape(tmp_path, rng):
    """Issue 21 item 9: center metrics reading a table no loss trains (so no
    loss checks it) reported distances from a table restored with another
    shape; their read now waits for the same check."""
    def metrics_model(classes):
        inputs = keras.Input([D_IN])
        embedding = keras.layers.Dense(D, name="embedding")(inputs)
        logits = keras.layers.Dense(3, name="logits")(embedding)
        model = keras.Model(inputs, [logits, embedding])
        def no_loss(y_true, y_pred):  # an output Keras builds metrics for, no cl loss
            return 0.0 * tf.reduce_sum(y_pred, axis=-1)

        model.compile(SGD(0.1), loss={"logits": cl.SparseSoftmaxLoss(), "embedding": no_loss},
                      metrics={"embedding": cl.center_metrics(cl.CenterLoss(classes))})
        cl.initialize(model)
        return model

    path = tf.train.Checkpoint(model=metrics_model(10)).write(str(tmp_path / "ckpt"))
    target = metrics_model(8)
    tf.train.Checkpoint(model=target).read(path).run_restore_ops(backend.get_session())
    x, y = rng.normal(size=[6, D_IN]).astype(np.float32), np.arange(6) % 3
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"declared \[8, {D}\].*holds\] \[10 {D}\]"):
        target.evaluate(x, {"logits": y, "embedding": y}, verbose=0)
