"""`cl.graph.sites`: the Keras 2 compile building a cl loss, found once.

Finding the compile walks the Python stack (`cl.compat.keras_compile_frame`);
a loss does it once per build and hands the site down (`sites.scope`), so
`cl.ops` and the Keras 2 losses never search again (issue 22 item 4: each
loss used to find it three or four times through two finders).
"""

import numpy as np
import pytest

import cl
from cl import compat
from cl.graph import sites

keras = compat.keras_module()
C, D = 4, 3


@pytest.mark.parametrize("loss_kind", ["CenterLoss", "SoftmaxCenterLoss", "blog"])
def test_one_search_per_loss_build(monkeypatch, loss_kind):
    searches, builds = [], []
    original = compat.keras_compile_frame

    def counted():
        found = original()
        searches.append(found is not None)
        return found

    monkeypatch.setattr(compat, "keras_compile_frame", counted)
    monkeypatch.setattr(cl, "NUM_CLASSES", C)
    inputs = keras.Input((D,))
    logits = keras.layers.Dense(C)(inputs)
    loss = {"CenterLoss": cl.CenterLoss(C), "SoftmaxCenterLoss": cl.SoftmaxCenterLoss(C),
            "blog": cl.loss}[loss_kind]
    target = loss.call if loss_kind != "blog" else None
    if target is not None:
        def call(*args, **kwargs):
            builds.append(1)
            return target(*args, **kwargs)
        monkeypatch.setattr(loss, "call", call)
    model = keras.Model(inputs, logits)
    cl.compile_model(model, "sgd", loss=loss)
    assert all(searches) and searches
    if target is not None:
        assert len(searches) == len(builds)
    else:
        assert len(searches) == 1
    model.fit(np.zeros((4, D), "float32"), np.eye(C)[[0, 1, 2, 3]], verbose=0)
    assert len(cl.centers_of(model)) == 1


def test_registry_asks_finders_in_order_and_scopes_answer_first():
    calls = []

    def nothing():
        calls.append("nothing")

    def found():
        calls.append("found")
        return "site"

    saved = list(sites._FINDERS)
    try:
        sites._FINDERS[:] = []
        sites.register(nothing)
        sites.register(found)
        sites.register(nothing)  # once only
        assert sites.current() == "site" and calls == ["nothing", "found"]
        with sites.scope(None):
            assert sites.current() is None  # no search inside a scope
            with sites.scope("inner"):
                assert sites.current() == "inner"
        assert calls == ["nothing", "found"]
        sites._FINDERS[:] = [nothing]
        assert sites.current() is None
    finally:
        sites._FINDERS[:] = saved
