"""Issue 8: no silent route. Each class is one numbered case of the issue:
labels that could become another class, sample weights, which model owns
which table, and every route Keras 2 moves state through."""

import builtins
import gc
import sys
import warnings

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import keras
from helpers import run_python
from test_keras import C, data, embedding_model, logits_model, onehot, session

import cl


@pytest.fixture(autouse=True)
def blog_classes(monkeypatch):
    monkeypatch.setattr(cl, "NUM_CLASSES", C)


def values(variables):
    return [np.array(v) for v in session().run(list(variables))]


def all_state(model):
    """Every variable a training step could change."""
    return values(model.weights + model.optimizer.weights + cl.centers_of(model))


def frozen_embedding_fit(rng, model, center, y_fit, x, **fit_kwargs):
    features = model.predict(x)[1]
    model.fit(x, {"logits": y_fit, "embedding": y_fit}, batch_size=len(x), shuffle=False,
              verbose=0, **fit_kwargs)
    return features, session().run(center.centers)


def compile_two_outputs(model, center, optimizer="sgd", **kwargs):
    return cl.compile_model(model, optimizer, loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
                            loss_weights={"logits": 1.0, "embedding": 0.1}, **kwargs)


class TestCase01MixedPrecisionLabels:
    @pytest.mark.parametrize("policy, dtype, limit", [("mixed_float16", "float16", 2048),
                                                      ("mixed_bfloat16", "bfloat16", 256)])
    @pytest.mark.parametrize("loss_kind", ["center", "softmax_center"])
    def test_16_bit_targets_refuse_ids_they_cannot_hold(self, rng, policy, dtype, limit, loss_kind):
        classes = 2 * limit + 10
        old = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            inputs = keras.Input((3,))
            if loss_kind == "center":
                output = keras.layers.Dense(2)(inputs)
                loss = cl.CenterLoss(num_classes=classes)
            else:
                output = keras.layers.Dense(classes)(inputs)
                loss = cl.SoftmaxCenterLoss(num_classes=classes)
            model = keras.Model(inputs, output)
            assert model.output.dtype.name == dtype
            cl.compile_model(model, "sgd", loss=loss, metrics=cl.center_metrics(loss))
        finally:
            keras.mixed_precision.set_global_policy(old)
        x = rng.normal(size=(4, 3)).astype(np.float32)
        y = np.array([[1], [limit + 1], [2 * limit + 1], [3]])
        before = all_state(model)
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{dtype}.*only up to {limit}.*float32"):
            model.fit(x, y, verbose=0)
        for was, now in zip(before, all_state(model)):
            np.testing.assert_array_equal(was, now)

    def test_a_float32_embedding_output_gets_exact_ids(self, rng):
        old = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            inputs = keras.Input((3,))
            hidden = keras.layers.Dense(2, trainable=False)(inputs)
            output = keras.layers.Activation("linear", dtype="float32")(hidden)
            model = keras.Model(inputs, output)
            center = cl.CenterLoss(num_classes=5002)
            cl.compile_model(model, "sgd", loss=center)
        finally:
            keras.mixed_precision.set_global_policy(old)
        x = rng.normal(size=(3, 3)).astype(np.float32)
        y = np.array([2049, 4097, 5001])
        features = model.predict(x)
        model.fit(x, y, batch_size=3, verbose=0)
        want = reference.update_centers(y, features, np.zeros((5002, 2)), 0.5)
        np.testing.assert_allclose(session().run(center.centers), want, rtol=1e-5)
        assert set(np.flatnonzero(np.any(want != 0, axis=1))) == {2049, 4097, 5001}


class TestCase02SparseLabelsIntoOneHotLosses:
    @pytest.mark.parametrize("shape", ["[B]", "[B,1]"])
    @pytest.mark.parametrize("loss_kind", ["cl.loss", "SoftmaxCenterLoss"])
    def test_class_ids_train_their_own_class(self, rng, shape, loss_kind):
        model = logits_model(trainable=False)
        loss = cl.loss if loss_kind == "cl.loss" else cl.SoftmaxCenterLoss(num_classes=C, alpha=cl.ALPHA)
        cl.compile_model(model, "sgd", loss=loss)
        x, y = data(rng, n=16)
        logits = model.predict(x)
        targets = y if shape == "[B]" else y[:, None]
        loss_value = model.evaluate(x, targets, batch_size=16, verbose=0)
        shifted = logits - logits.max(axis=1, keepdims=True)
        softmax = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(16), y]
        lam = cl.LAMBDA if loss_kind == "cl.loss" else loss.lambda_
        want = softmax + lam * reference.center_loss(y, logits, np.zeros((C, C)))
        assert loss_value == pytest.approx(want.mean(), rel=1e-5)
        model.fit(x, targets, batch_size=16, verbose=0)
        np.testing.assert_allclose(session().run(cl.centers_of(model)[0]),
                                   reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA),
                                   rtol=1e-5, atol=1e-7)


class TestCase03UnlabeledOneHotRows:
    @pytest.mark.parametrize("marker", ["zeros", "nan"])
    @pytest.mark.parametrize("loss_kind", ["cl.loss", "SoftmaxCenterLoss", "SparseSoftmaxLoss"])
    def test_rows_naming_no_class_fail_and_change_nothing(self, rng, marker, loss_kind):
        model = logits_model()
        loss = {"cl.loss": cl.loss, "SoftmaxCenterLoss": cl.SoftmaxCenterLoss(num_classes=C),
                "SparseSoftmaxLoss": cl.SparseSoftmaxLoss()}[loss_kind]
        model.compile(keras.optimizers.legacy.SGD(0.1) if hasattr(keras.optimizers, "legacy") else "sgd",
                      loss=loss)
        cl.initialize(model)
        x, y = data(rng, n=8)
        targets = onehot(y)
        targets[5] = 0.0 if marker == "zeros" else np.nan
        model.fit(x[:1], onehot(y[:1]), verbose=0)  # make the optimizer's slots
        before = all_state(model)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"must name a class.*\n?.*\[5\]"):
            model.fit(x, targets, batch_size=8, verbose=0)
        for was, now in zip(before, all_state(model)):
            np.testing.assert_array_equal(was, now)

    def test_weight_zero_masks_an_unlabeled_row(self, rng):
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd", metrics=["accuracy"] + cl.center_metrics())
        x, y = data(rng, n=8)
        targets = onehot(y)
        targets[5] = 0.0
        weights = np.ones(8, np.float32)
        weights[5] = 0.0
        logits = model.predict(x)
        model.fit(x, targets, sample_weight=weights, batch_size=8, verbose=0)
        np.testing.assert_allclose(
            session().run(cl.centers_of(model)[0]),
            reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA, weights), rtol=1e-5, atol=1e-7)


class TestCase04SoftLabels:
    def test_sparse_softmax_loss_keeps_label_smoothing(self, rng):
        model = logits_model()
        model.compile("sgd", loss=cl.SparseSoftmaxLoss())
        x, y = data(rng, n=16)
        smooth = onehot(y) * 0.9 + 0.1 / C
        logits = model.predict(x)
        log_softmax = logits - logits.max(1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
        want = -(smooth * log_softmax).sum(1).mean()
        assert model.evaluate(x, smooth, batch_size=16, verbose=0) == pytest.approx(want, rel=1e-5)


class TestCase05SampleWeights:
    def test_raw_tf1_weighted_rule_over_many_steps(self, session_, rng):
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        features = tf.compat.v1.placeholder(tf.float32, [None, 3])
        weights = tf.compat.v1.placeholder(tf.float32, [None])
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=5, sample_weight=weights)
        session_.run(tf.compat.v1.global_variables_initializer())
        centers = np.zeros((5, 3))
        for _ in range(15):
            y = rng.integers(0, 3, 12)  # classes 3, 4 absent; duplicates
            x = rng.normal(size=(12, 3))
            w = rng.choice([0.0, 0.5, 1.0, 2.0], 12)
            session_.run(loss, {labels: y, features: x, weights: w})
            centers = reference.update_centers(y, x, centers, 0.5, w)
        np.testing.assert_allclose(session_.run(cl.get_centers()), centers, rtol=1e-5, atol=1e-6)
        assert not np.any(centers[3:])

    def test_negative_weight_is_refused(self, session_):
        loss = cl.center_loss([0, 1], tf.ones([2, 3]), alpha=0.5, num_classes=2,
                              sample_weight=[1.0, -1.0])
        session_.run(tf.compat.v1.global_variables_initializer())
        with pytest.raises(tf.errors.InvalidArgumentError, match="finite and >= 0.*-1"):
            session_.run(loss)
        assert not np.any(session_.run(cl.get_centers()))

    @pytest.mark.parametrize("route", ["sample_weight", "class_weight"])
    def test_keras_weights_move_centers_by_the_weighted_rule(self, rng, route):
        model = embedding_model(trainable=False)
        center = cl.CenterLoss(num_classes=C)
        compile_two_outputs(model, center)
        x, y = data(rng, n=16)
        class_weight = {0: 0.0, 1: 2.0, 2: 1.0, 3: 0.5}
        w = np.array([class_weight[k] for k in y], np.float32)
        kwargs = ({"sample_weight": {"logits": w, "embedding": w}} if route == "sample_weight"
                  else {"class_weight": {"logits": class_weight, "embedding": class_weight}})
        features, centers = frozen_embedding_fit(rng, model, center, y, x, **kwargs)
        want = reference.update_centers(y, features, np.zeros((C, 2)), 0.5, w)
        np.testing.assert_allclose(centers, want, rtol=1e-5, atol=1e-7)
        assert not np.any(centers[0])  # weight 0: never moved

    def test_blog_loss_under_keras_uses_sample_weight(self, rng):
        model = logits_model(trainable=False)
        cl.compile_model(model, "sgd")
        x, y = data(rng, n=16)
        w = rng.choice([0.0, 1.0, 3.0], 16).astype(np.float32)
        logits = model.predict(x)
        model.fit(x, onehot(y), sample_weight=w, batch_size=16, verbose=0)
        np.testing.assert_allclose(session().run(cl.centers_of(model)[0]),
                                   reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA, w),
                                   rtol=1e-5, atol=1e-7)


@pytest.fixture
def session_():
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        yield sess


class Net(keras.Model):
    """A subclassed model: logits, no functional graph."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh", trainable=False)
        self.logits = keras.layers.Dense(C, trainable=False)

    def call(self, inputs):
        return self.logits(self.hidden(inputs))


class FunctionalNet(keras.Model):
    """A functional model built through a subclass."""

    def __init__(self):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="tanh", trainable=False)(inputs)
        super().__init__(inputs, keras.layers.Dense(C, trainable=False)(hidden))


class TestCase06SubclassedModels:
    @pytest.mark.parametrize("make", [Net, FunctionalNet])
    def test_work_like_functional_models(self, rng, tmp_path, make):
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no misleading warning either
            cl.compile_model(model, "sgd", metrics=["accuracy"])
        x, y = data(rng, n=16, classes=C - 1)  # the last class: validation only
        x_val = x[:4]
        y_val = np.full(4, C - 1)
        model.fit(x, onehot(y), batch_size=16, verbose=0, validation_data=(x_val, onehot(y_val)))
        (table,) = cl.centers_of(model)
        logits = model.predict(x)
        trained = session().run(table)
        np.testing.assert_allclose(trained, reference.update_centers(y, logits, np.zeros((C, C)), cl.ALPHA),
                                   rtol=1e-5, atol=1e-7)
        assert not np.any(trained[C - 1])  # validation never moved it
        model.evaluate(x_val, onehot(y_val), verbose=0)
        np.testing.assert_array_equal(session().run(table), trained)
        model.save_weights(str(tmp_path / "w"))
        session().run(table.assign(np.zeros((C, C))))
        model.load_weights(str(tmp_path / "w"))
        np.testing.assert_array_equal(session().run(table), trained)


class TestCase07NewModelNeverInheritsCenters:
    def test_k_fold_loop_in_one_graph(self, rng):
        x, y = data(rng, n=16)
        for _ in range(4):
            model = logits_model()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cl.compile_model(model, "sgd")
            assert not np.any(session().run(cl.centers_of(model)[0]))
            model.fit(x, onehot(y), verbose=0)
            assert np.any(session().run(cl.centers_of(model)[0]))
            del model
            gc.collect()

    def test_a_new_model_at_a_freed_models_address(self, rng, monkeypatch):
        """CPython gives a new object the address of a freed one, so id() can
        repeat. Simulated: within cl's modules, every model has one id."""
        real_id = builtins.id

        def same_id_for_models(obj):
            return 1 if isinstance(obj, keras.Model) else real_id(obj)

        for name, module in list(sys.modules.items()):
            if name == "cl" or name.startswith("cl."):
                monkeypatch.setattr(module, "id", same_id_for_models, raising=False)
        x, y = data(rng, n=16)
        first = logits_model()
        cl.compile_model(first, "sgd")
        first.fit(x, onehot(y), verbose=0)
        second = logits_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cl.compile_model(second, "sgd")
        assert cl.centers_of(second)[0] is not cl.centers_of(first)[0]
        assert not np.any(session().run(cl.centers_of(second)[0]))


class TestCase08Recompiling:
    def test_same_configuration_keeps_trained_centers(self, rng, tmp_path):
        model = embedding_model()
        compile_two_outputs(model, cl.CenterLoss(num_classes=C))
        x, y = data(rng, n=16)
        model.fit(x, {"logits": y, "embedding": y}, verbose=0)
        trained = values(cl.centers_of(model))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile_two_outputs(model, cl.CenterLoss(num_classes=C), optimizer="adam")
        assert len(cl.centers_of(model)) == 1
        np.testing.assert_array_equal(values(cl.centers_of(model))[0], trained[0])
        model.fit(x, {"logits": y, "embedding": y}, verbose=0)
        model.save_weights(str(tmp_path / "w.h5"))
        once = embedding_model()
        compile_two_outputs(once, cl.CenterLoss(num_classes=C))
        once.load_weights(str(tmp_path / "w.h5"))
        np.testing.assert_array_equal(values(cl.centers_of(once))[0], values(cl.centers_of(model))[0])

    def test_new_shape_gets_a_new_table_with_a_warning(self):
        model = embedding_model()
        compile_two_outputs(model, cl.CenterLoss(num_classes=C))
        with pytest.warns(UserWarning, match=r"has shape \[4, 2\].*needs \[6, 2\]"):
            compile_two_outputs(model, cl.CenterLoss(num_classes=6))
        assert [t.shape.as_list() for t in cl.centers_of(model)] == [[6, 2]]


class TestCase09OneLossOnTwoOutputs:
    def test_siamese_update_is_the_rule_on_the_joint_batch(self, rng):
        inputs_a, inputs_b = keras.Input((6,)), keras.Input((6,))
        tower = keras.layers.Dense(2, trainable=False)
        model = keras.Model([inputs_a, inputs_b], [tower(inputs_a), tower(inputs_b)])
        center = cl.CenterLoss(num_classes=C)
        cl.compile_model(model, "sgd", loss=[center, center])
        x_a, y_a = data(rng, n=12)
        x_b, y_b = data(rng, n=12)
        centers = np.zeros((C, 2))
        for _ in range(5):
            f_a, f_b = model.predict([x_a, x_b])
            model.fit([x_a, x_b], [y_a, y_b], batch_size=12, verbose=0)
            centers = reference.update_centers(np.concatenate([y_a, y_b]),
                                               np.concatenate([f_a, f_b]), centers, 0.5)
            np.testing.assert_allclose(session().run(center.centers), centers, rtol=1e-5, atol=1e-6)
        assert len(cl.centers_of(model)) == 1


class TestCase10StateRoutes:
    def test_get_and_set_weights_carry_the_centers(self, rng):
        model, trained = self.trained(rng)
        weights = model.get_weights()
        np.testing.assert_array_equal(weights[-1], trained)
        copy = logits_model()
        cl.compile_model(copy, "sgd")
        copy.set_weights(weights)
        np.testing.assert_array_equal(session().run(cl.centers_of(copy)[0]), trained)
        clone = keras.models.clone_model(model)
        cl.compile_model(clone, "sgd")
        clone.set_weights(model.get_weights())
        np.testing.assert_array_equal(session().run(cl.centers_of(clone)[0]), trained)
        with pytest.warns(UserWarning, match="no centers"):
            clone.set_weights(weights[:-1])

    def test_early_stopping_restores_best_centers(self, rng):
        model = logits_model()
        cl.compile_model(model, "sgd")
        x, y = data(rng, n=32)
        snapshots = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: snapshots.append(
                (logs["loss"], session().run(cl.centers_of(model)[0]))))
        stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True,
                                             mode="max")
        model.fit(x, onehot(y), epochs=5, verbose=0, callbacks=[record, stop])
        best = max(range(len(snapshots)), key=lambda i: snapshots[i][0])
        assert best != len(snapshots) - 1
        np.testing.assert_array_equal(session().run(cl.centers_of(model)[0]), snapshots[best][1])

    def trained(self, rng):
        model = logits_model()
        cl.compile_model(model, "sgd")
        x, y = data(rng, n=32)
        model.fit(x, onehot(y), epochs=2, verbose=0)
        return model, session().run(cl.centers_of(model)[0])


class TestCase11HDF5ByContent:
    @pytest.mark.parametrize("how", ["keyword", "positional", "HDF5"])
    def test_h5_without_suffix(self, rng, tmp_path, how):
        model, trained = TestCase10StateRoutes().trained(rng)
        path = str(tmp_path / "weights.best")
        if how == "positional":
            model.save_weights(path, True, "h5")
        else:
            model.save_weights(path, save_format="h5" if how == "keyword" else "HDF5")
        fresh = logits_model()
        cl.compile_model(fresh, "sgd")
        fresh.load_weights(path)
        np.testing.assert_array_equal(session().run(cl.centers_of(fresh)[0]), trained)


class TestCase12And13LoadBeforeCompile:
    def test_h5_load_weights_before_compile(self, rng, tmp_path):
        model, trained = TestCase10StateRoutes().trained(rng)
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

    def test_keras_load_model_h5(self, rng, tmp_path):
        model, trained = TestCase10StateRoutes().trained(rng)
        model.save(str(tmp_path / "m.h5"))
        loaded = keras.models.load_model(str(tmp_path / "m.h5"), custom_objects=cl.custom_objects())
        np.testing.assert_array_equal(session().run(cl.centers_of(loaded)[0]), trained)


class TestCase14LoadedMetricsReadTheLoadedTable:
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


class TestCase15LoadModelRefusesDirectories:
    def test_directory(self, tmp_path):
        with pytest.raises(ValueError, match="not an HDF5 file.*directory"):
            cl.load_model(str(tmp_path))


class TestCase16ABadBatchChangesNothing:
    def test_out_of_range_label_in_a_two_output_fit(self, rng):
        model = embedding_model()
        opt = keras.optimizers.legacy.SGD(0.1, momentum=0.9) if hasattr(keras.optimizers, "legacy") \
            else keras.optimizers.SGD(0.1, momentum=0.9)
        compile_two_outputs(model, cl.CenterLoss(num_classes=C), optimizer=opt)
        x, y = data(rng, n=16)
        model.fit(x, {"logits": y, "embedding": y}, verbose=0)  # slots exist
        before = all_state(model)
        bad = y.copy()
        bad[3] = C + 3
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_classes=4"):
            model.fit(x, {"logits": bad, "embedding": bad}, batch_size=16, verbose=0)
        for was, now in zip(before, all_state(model)):
            np.testing.assert_array_equal(was, now)

    def test_sparse_softmax_loss_checks_labels(self, rng):
        model = logits_model()
        model.compile("sgd", loss=cl.SparseSoftmaxLoss())
        x, y = data(rng, n=8)
        y[2] = 9
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"num_classes=4.*\[9\]"):
            model.evaluate(x, y, verbose=0)
