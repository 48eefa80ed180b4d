"""The README's "TF2 and Keras 3" snippets run as written, on small data.

They are fenced "```python keras3" / "```python tf2" / "```python migrate" so
that tests/graph/test_readme.py (graph mode, plain "```python") skips them.
The migrate block is run by test_checkpoints.py on real old files.
"""

import pathlib
import re

import pytest
from helpers import run_python

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
DATA = """
import numpy as np
rng = np.random.default_rng(0)
y = rng.integers(0, 10, 96)
x = (rng.normal(size=(96, 64)) + np.eye(64)[y] * 4).astype("float32")
x_train, x_val, y_train = x[:64], x[64:], y[:64].astype("int32")
"""


def blocks(tag):
    return re.findall(rf"```python {tag}\n(.*?)```", README.read_text(), re.S)


def run_blocks(tag, check):
    code = DATA + "\n".join(blocks(tag)) + check
    result = run_python(code.replace("epochs=10", "epochs=1"))
    assert "SNIPPETS OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_readme_keras3_snippets_run():
    from conftest import keras3_or_skip
    keras3_or_skip()
    assert len(blocks("keras3")) == 2
    run_blocks("keras3", "\nassert centers.shape == (10, 2) and predictions.shape == (32, 10)"
                         "\nassert embeddings_val.shape == (32, 2)\nprint('SNIPPETS OK')\n")


def test_readme_tf2_snippet_runs():
    pytest.importorskip("tensorflow")
    assert len(blocks("tf2")) == 1
    run_blocks("tf2", "\nassert center.centers.shape == (10, 2)"
                      "\nassert np.any(center.centers.numpy() != 0)\nprint('SNIPPETS OK')\n")
