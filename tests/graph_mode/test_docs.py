"""The graph-mode blocks of README.md and docs/ (```python graph, and
```python estimator where TensorFlow has tf.estimator) run as written, one
program per page (see tests/support/docs_fences.py)."""

import docs_fences
import pytest
import tensorflow as tf

GROUPS = docs_fences.groups(("graph", "estimator"))


def test_there_are_graph_blocks_to_run():
    pages = {page.name for page, tag, _ in GROUPS if tag == "graph"}
    assert {"README.md", "from-the-blog.md", "harnesses.md"} <= pages, pages


@pytest.mark.parametrize("group", GROUPS, ids=docs_fences.group_id)
def test_blocks_run(group, tmp_path):
    page, tag, chosen = group
    if tag == "estimator" and not hasattr(tf, "estimator"):
        pytest.skip(f"TensorFlow {tf.__version__} has no tf.estimator")
    ok, output = docs_fences.run(chosen, tmp_path)
    assert ok, output
