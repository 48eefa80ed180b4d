"""`cl.keras2.state`: the tables a Keras 2 model carries, and what the user
set that Keras hides from a compile. A recompile keeps the trained table
(a new shape gets a new one, with a warning); a new model never inherits a
freed one's, nor does a second model in the same graph; a global learning
phase 0 stops the update, under MirroredStrategy too (a process per case).
"""

import builtins
import gc
import sys
import warnings

import numpy as np
import pytest
from conftest import keras
from helpers import SUPPORT, result_of, run_python, script
from keras2_models import C, compile_two_outputs, data, embedding_model, logits_model, onehot, session, values

import cl


@pytest.mark.usefixtures("blog_classes")
class TestNewModelNeverInheritsCenters:
    """No silent route (issue 8, case 07): a new model never inherits another's centers."""

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


@pytest.mark.usefixtures("blog_classes")
class TestRecompiling:
    """No silent route (issue 8, case 08): recompiling keeps the trained table; a new shape gets a new
    one, with a warning."""

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


@pytest.mark.usefixtures("blog_classes")
class TestTablesPerModel:
    """Each model its own table; a recompile keeps it."""

    def test_two_models_in_one_graph_get_their_own_tables(self, rng):
        first, second = logits_model(), logits_model()
        cl.compile_model(first, "adam")
        with pytest.warns(UserWarning, match="this one is 'center_loss_1/centers:0'"):
            cl.compile_model(second, "adam")
        x, y = data(rng)
        first.fit(x, onehot(y), verbose=0)
        assert np.any(session().run(cl.centers_of(first)[0]))
        assert not np.any(session().run(cl.centers_of(second)[0]))

    def test_recompiling_keeps_the_table(self, rng):
        model = logits_model()
        cl.compile_model(model, "adam")
        x, y = data(rng)
        model.fit(x, onehot(y), verbose=0)
        before = session().run(cl.centers_of(model)[0])
        cl.compile_model(model, "sgd")
        assert len(cl.centers_of(model)) == 1
        np.testing.assert_array_equal(session().run(cl.centers_of(model)[0]), before)


def result(kind, case):
    """Runs one case of the script in a process of its own."""
    done = run_python(script("keras2_strategy_phase_and_kfold"), kind, SUPPORT, case, timeout=300)
    return result_of(done.stdout, done.stderr)[case]


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_global_learning_phase_zero_stops_the_update(kind):
    """Issue 14 item 8: under MirroredStrategy too, a global
    K.set_learning_phase(0) stops the update."""
    assert result(kind, "phase_zero") == 0.0


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_second_model_in_one_graph_gets_its_own_table(kind):
    """Issue 14 item 9: under MirroredStrategy too, a second model compiled
    with cl.loss in the same graph (k-fold) gets a table of its own."""
    kfold = result(kind, "kfold")
    assert isinstance(kfold, dict), kfold
    assert kfold["names"] == ["center_loss/centers:0", "center_loss_1/centers:0"]
    assert max(kfold["deviations"]) < 1e-5
    assert min(kfold["moved"]) > 0.1
