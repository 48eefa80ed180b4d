"""TF2 / Keras 3 suite: eager execution, as TF2 and Keras 3 users run.

Never imports tests/graph_mode/conftest.py (it turns eager execution off for the
whole process); `make test` runs this folder in a pytest process of its own.
The Keras backend is whatever KERAS_BACKEND says (TensorFlow by default,
`make test-jax` sets jax, `make test-torch` torch). Files skip what their environment lacks:
Keras 3 (absent on the TF 2.15 line) or TensorFlow (absent in .venv-jax).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def keras3_or_skip():
    """The keras module if it is Keras 3, else skips the calling module, or
    fails it where the environment pins Keras 3 (CL_REQUIRE_KERAS3=1, set by
    `make test` on TF 2.21, `make test-jax` and `make test-torch`): a broken set-up must not
    pass as skipped tests."""
    try:
        import keras
        missing = None if int(keras.__version__.split(".")[0]) >= 3 else \
            f"Keras {keras.__version__} is not Keras 3"
    except ImportError as error:
        missing = f"Keras is not importable ({error})"
    if missing and os.environ.get("CL_REQUIRE_KERAS3"):
        pytest.fail(f"{missing}, but this environment pins Keras 3", pytrace=False)
    if missing:
        pytest.skip(missing, allow_module_level=True)
    return keras


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
