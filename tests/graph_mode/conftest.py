"""Graph-mode suite set-up: graph mode, the Keras 2 in use, fresh graphs per test."""

import numpy as np
import pytest
import tensorflow as tf

tf.compat.v1.disable_eager_execution()

from cl import compat  # noqa: E402

keras = compat.keras_module()
backend = compat.keras_backend()

# Variable kinds the core must support: resource (TF2 default) and ref (what
# disable_v2_behavior and TF1 codebases use). get_variable follows the
# enclosing variable scope's use_resource.
VARIABLE_KINDS = ["resource", "ref"]


@pytest.fixture(autouse=True)
def fresh_keras_graph():
    backend.clear_session()
    yield


@pytest.fixture
def session():
    """A fresh graph, made default, with a session on it."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        yield sess


@pytest.fixture(params=VARIABLE_KINDS)
def variable_kind(request):
    """Builds the centers as resource or ref variables inside the block."""
    use_resource = request.param == "resource"
    with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(),
                                     use_resource=use_resource):
        yield request.param


def variable_kind_of(variable):
    return "ref" if variable.dtype._is_ref_dtype else "resource"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def blog_classes(monkeypatch):
    """cl.NUM_CLASSES (what the blog's `cl.loss` reads) set to the class count
    of the Keras 2 test models (tests/support/keras2_models.py)."""
    from keras2_models import C

    import cl
    monkeypatch.setattr(cl, "NUM_CLASSES", C)


@pytest.fixture(params=["v2", "v1"])
def control_flow(request):
    """Builds with TF2's control flow (the default) or TF1's."""
    if request.param == "v1":
        tf.compat.v1.disable_control_flow_v2()
    try:
        yield request.param
    finally:
        tf.compat.v1.enable_control_flow_v2()
