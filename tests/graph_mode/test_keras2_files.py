"""`cl.keras2.files`: centers in the files Keras 2 writes. A table saved with
another number of classes (or feature size) is refused, on every route
(TF checkpoint, load_weights, set_weights, a file loaded before compile),
before it is used or anything changes; HDF5 is recognised by its content;
weights loaded before compile wait for the table.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import backend, keras
from helpers import run_python
from keras2_models import logits_model, session, trained_logits_model

import cl

D_IN, D = 5, 4
SGD = getattr(keras.optimizers, "legacy", keras.optimizers).SGD
# Two models in one graph: the second table gets its own name, and says so.
TWO_TABLES = pytest.mark.filterwarnings("ignore:cl. a centers table .* already exists")


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


@TWO_TABLES
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


@TWO_TABLES
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


@TWO_TABLES
def test_set_weights_refuses_centers_of_another_shape_before_anything_changes(rng):
    """Issue 21 item 9: set_weights set the layers, then refused the centers."""
    source = trained(10, None, rng)
    target = model_with(8, 2)
    before = variables_of(target)
    with pytest.raises(ValueError, match=r"set_weights: the saved centers #0 have shape \[10, 4\]"):
        target.set_weights(source.get_weights())
    assert_unchanged(before, variables_of(target))


@TWO_TABLES
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


@pytest.mark.usefixtures("blog_classes")
class TestHDF5ByContent:
    """No silent route (issue 8, case 11): an HDF5 file without the .h5 suffix carries the centers."""

    @pytest.mark.parametrize("how", ["keyword", "positional", "HDF5"])
    def test_h5_without_suffix(self, rng, tmp_path, how):
        model, trained = trained_logits_model(rng)
        path = str(tmp_path / "weights.best")
        if how == "positional":
            model.save_weights(path, True, "h5")
        else:
            model.save_weights(path, save_format="h5" if how == "keyword" else "HDF5")
        fresh = logits_model()
        cl.compile_model(fresh, "sgd")
        fresh.load_weights(path)
        np.testing.assert_array_equal(session().run(cl.centers_of(fresh)[0]), trained)


@pytest.mark.usefixtures("blog_classes")
class TestLoadBeforeCompile:
    """No silent route (issue 8, case 12): HDF5 weights loaded before compile reach the table made at
    compile."""

    def test_h5_load_weights_before_compile(self, rng, tmp_path):
        model, trained = trained_logits_model(rng)
        model.save_weights(str(tmp_path / "w.h5"))
        fresh = logits_model()
        fresh.load_weights(str(tmp_path / "w.h5"))
        model.compile("sgd", loss=cl.loss)  # plain compile, then the new one
        fresh.compile("sgd", loss=cl.loss)
        np.testing.assert_array_equal(session().run(cl.centers_of(fresh)[0]), trained)

    def test_blog_script_loads_h5_weights_before_compiling_cl_loss(self, tmp_path):
        """Blog style: Keras imported first, `cl.loss` only, load then compile."""
        path = str(tmp_path / "w.h5")
        script = (
            "import sys, numpy as np, tensorflow as tf\n"
            "tf.compat.v1.disable_eager_execution()\n"
            "try:\n    import tf_keras as keras\nexcept ImportError:\n    from tensorflow import keras\n"
            "import cl\n"
            "cl.NUM_CLASSES = 4\n"
            "def build():\n"
            "    inputs = keras.Input((6,))\n"
            "    return keras.Model(inputs, keras.layers.Dense(4)(inputs))\n"
            "rng = np.random.default_rng(0)\n"
            "x = rng.normal(size=(16, 6)).astype('float32'); y = np.eye(4)[rng.integers(0, 4, 16)]\n"
            "session = cl.compat.keras_backend().get_session\n"
            "if sys.argv[1] == 'save':\n"
            "    model = build(); model.compile('sgd', loss=cl.loss)\n"
            "    model.fit(x, y, verbose=0)\n"
            "    model.save_weights(sys.argv[2])\n"
            "    print('CENTERS', float(np.abs(session().run(cl.get_centers())).sum()))\n"
            "else:\n"
            "    model = build(); model.load_weights(sys.argv[2])\n"
            "    model.compile('sgd', loss=cl.loss)\n"
            "    model.predict(x)\n"
            "    print('CENTERS', float(np.abs(session().run(cl.get_centers())).sum()))\n")
        saved, loaded = (run_python(script, step, path) for step in ("save", "load"))
        assert "CENTERS" in saved.stdout, saved.stderr[-3000:]
        assert "CENTERS" in loaded.stdout, loaded.stderr[-3000:]
        total = float(saved.stdout.split("CENTERS ")[1].split()[0])
        assert total > 0
        assert float(loaded.stdout.split("CENTERS ")[1].split()[0]) == total
