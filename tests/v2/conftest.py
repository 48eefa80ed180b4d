"""TF2 / Keras 3 suite: eager execution, as TF2 and Keras 3 users run.

Never imports tests/graph/conftest.py (it turns eager execution off for the
whole process); `make test` runs this folder in a pytest process of its own.
The Keras backend is whatever KERAS_BACKEND says (TensorFlow by default,
`make test-jax` sets jax). Files skip what their environment lacks:
Keras 3 (absent on the TF 2.15 line) or TensorFlow (absent in .venv-jax).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def keras3_or_skip():
    """The keras module if it is Keras 3, else skips the calling module."""
    keras = pytest.importorskip("keras")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip(f"Keras {keras.__version__} is not Keras 3", allow_module_level=True)
    return keras


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
