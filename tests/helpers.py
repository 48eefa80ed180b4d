"""Shared by every suite; imports no framework.

`tests/graph/` runs with eager execution disabled (TF1-style graph mode, see
its conftest). Suites that need eager TensorFlow, Keras 3 or JAX live in
their own folders and run in their own pytest process: graph mode is a
process-wide switch. `pytest.ini` puts this folder on sys.path.
"""

import os
import subprocess
import sys


def run_python(code, *args, env=None, timeout=300):
    """Runs `python -c code` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)
