"""The README's Python snippets run as written, in order, on small data."""

import pathlib
import re

from helpers import run_python

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"

# Names the snippets take from the reader's own code.
DATA = """
import numpy as np
rng = np.random.default_rng(0)
y = rng.integers(0, 10, 96)
x = (rng.normal(size=(96, 64)) + np.eye(64)[y] * 4).astype("float32")
x_train, x_val = x[:64], x[64:]
y_train_onehot, y_val_onehot = np.eye(10)[y[:64]], np.eye(10)[y[64:]]
"""


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_promised_snippets():
    text = "\n".join(python_blocks())
    for promised in ("loss=cl.loss", "cl.compile_model(", "cl.CenterLoss(", "cl.center_metrics("):
        assert promised in text


def test_readme_snippets_run():
    code = DATA + "\n".join(python_blocks()) + "\nprint('SNIPPETS OK', centers.shape)\n"
    code = code.replace("epochs=10", "epochs=1")
    result = run_python(code)
    assert "SNIPPETS OK (10, 2)" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
