"""`python -m cl` (`cl.selftest`) with resource variables (TF2's default) and
with ref variables (`disable_v2_behavior`), in a process of its own.
"""

import pytest
from helpers import run_python


class TestSelfTest:
    """The self-test passes and names the variable kind."""

    @pytest.mark.parametrize("preamble,kind", [
        ("", "resource"), ("tf.compat.v1.disable_v2_behavior()", "ref")])
    def test_python_m_cl_passes(self, preamble, kind):
        result = run_python(
            "import sys, tensorflow as tf\n"
            f"{preamble}\n"
            "import cl.selftest as selftest\n"
            "sys.exit(selftest.main())\n")
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        assert result.stdout.strip().endswith("PASS")
        assert f"centers: {kind} variable" in result.stdout
