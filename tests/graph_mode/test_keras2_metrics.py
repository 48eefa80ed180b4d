"""`cl.keras2.metrics`: accuracy, center_distance and center_ratio against
numpy, for a CenterLoss instance, after cl.load_model in a new process,
and refusing a restored table of another shape.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import backend, keras
from helpers import run_python
from keras2_models import C, data, embedding_model, logits_model, onehot, session

import cl

# The restored-table test's model (not keras2_models'): 5 inputs, 4 features.
D_IN, D = 5, 4
SGD = getattr(keras.optimizers, "legacy", keras.optimizers).SGD
# Two models in one graph: the second table gets its own name, and says so.
TWO_TABLES = pytest.mark.filterwarnings("ignore:cl. a centers table .* already exists")


@pytest.mark.usefixtures("blog_classes")
class TestMetrics:
    """The metrics against numpy, in the progress bar and History."""

    def test_in_progress_bar_and_history_with_numpy_values(self, rng):
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd", metrics=[cl.categorical_accuracy] + cl.center_metrics())
        x, y = data(rng, n=32)
        history = model.fit(x, onehot(y), epochs=1, batch_size=32, verbose=0)
        assert {"center_distance", "center_ratio"} <= set(history.history)
        centers = rng.normal(size=(C, C)).astype(np.float32)
        session().run(cl.centers_of(model)[0].assign(centers))
        _, accuracy, distance, ratio = model.evaluate(x, onehot(y), batch_size=32, verbose=0)
        features = model.predict(x)
        want_distance = np.linalg.norm(features - centers[y], axis=1).mean()
        present = sorted(set(y))
        between = np.mean([np.linalg.norm(centers[j] - centers[k])
                           for j in present for k in present if j != k])
        assert distance == pytest.approx(want_distance, rel=1e-5)
        assert ratio == pytest.approx(want_distance / between, rel=1e-5)
        assert accuracy == pytest.approx(np.mean(features.argmax(1) == y))

    @pytest.mark.parametrize("label_kind", ["sparse", "onehot"])
    def test_accuracy_string_reads_sparse_and_onehot_labels(self, rng, label_kind):
        model = embedding_model(trainable=False)
        cl.compile_model(model, "sgd", loss={"logits": cl.SparseSoftmaxLoss(),
                                             "embedding": cl.CenterLoss(num_classes=C)},
                         metrics={"logits": ["accuracy"]})
        x, y = data(rng, n=32)
        labels = y if label_kind == "sparse" else onehot(y)
        results = dict(zip(model.metrics_names,
                           model.evaluate(x, {"logits": labels, "embedding": labels},
                                          batch_size=32, verbose=0)))
        want = np.mean(model.predict(x)[0].argmax(axis=1) == y)
        assert results["logits_accuracy"] == pytest.approx(want)

    def test_metrics_for_a_center_loss_instance(self, rng):
        model = embedding_model()
        center = cl.CenterLoss(num_classes=C)
        cl.compile_model(model, "adam", loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                         metrics={"embedding": cl.center_metrics(center)})
        x, y = data(rng)
        history = model.fit(x, {"logits": y, "embedding": y}, epochs=1, verbose=0)
        assert "embedding_center_distance" in history.history
        assert len([v for v in tf.compat.v1.global_variables() if "centers" in v.name]) == 1


@pytest.mark.usefixtures("blog_classes")
class TestLoadedMetricsReadTheLoadedTable:
    """No silent route (issue 8, case 14): after cl.load_model the metrics read the loaded table."""

    def test_readme_two_output_model_in_a_new_process(self, tmp_path):
        path = str(tmp_path / "m.h5")
        common = (
            "import numpy as np, tensorflow as tf\n"
            "tf.compat.v1.disable_eager_execution()\n"
            "import cl\n"
            "from cl import compat\n"
            "keras = compat.keras_module()\n"
            "rng = np.random.default_rng(0)\n"
            "y = rng.integers(0, 4, 32); x = rng.normal(size=(32, 6)).astype('float32')\n")
        save = common + (
            "inputs = keras.Input((6,))\n"
            "embedding = keras.layers.Dense(2, name='embedding')(inputs)\n"
            "logits = keras.layers.Dense(4, name='logits')(embedding)\n"
            "model = keras.Model(inputs, [logits, embedding])\n"
            "center = cl.CenterLoss(num_classes=4)\n"
            "cl.compile_model(model, 'adam', loss={'logits': cl.SparseSoftmaxLoss(), 'embedding': center},\n"
            "                 loss_weights={'logits': 1.0, 'embedding': 0.1},\n"
            "                 metrics={'embedding': cl.center_metrics(center)})\n"
            "model.fit(x, {'logits': y, 'embedding': y}, epochs=2, verbose=0)\n"
            f"cl.save_model(model, {path!r})\n"
            "print('SAVED', repr(float(compat.keras_backend().get_session().run(center.centers).sum())))\n")
        load = common + (
            f"model = cl.load_model({path!r})\n"
            "before = compat.keras_backend().get_session().run(cl.centers_of(model)[0])\n"
            "result = model.evaluate(x, {'logits': y, 'embedding': y}, verbose=0)\n"
            "model.fit(x, {'logits': y, 'embedding': y}, verbose=0)\n"
            "print('LOADED', repr(float(before.sum())), len(result), len(cl.centers_of(model)))\n")
        saved = run_python(save)
        assert "SAVED" in saved.stdout, saved.stderr[-3000:]
        loaded = run_python(load)
        assert "LOADED" in loaded.stdout, loaded.stderr[-3000:]
        total = saved.stdout.split("SAVED ")[1].split()[0]
        assert loaded.stdout.split("LOADED ")[1].split()[:3] == [total, "5", "1"]


@TWO_TABLES
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
