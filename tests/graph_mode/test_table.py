"""`cl.graph.table`: the TF1 centers table, created or reused per owner and
variable scope, its initialised check, and what one table costs in memory.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf
from graph_batches import C, D, batch, placeholders
from helpers import result_of, run_python, script

import cl


class TestReuse:
    """One table per owner and variable scope; a reading call shares it."""

    def test_second_call_reuses_the_table(self, session, rng):
        """A second, reading call (an evaluation tower) shares the table; a
        second updating call is refused (tests/graph_mode/test_ties.py)."""
        labels, features = placeholders()
        first = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        second = cl.center_loss(labels, features, alpha=0.5, num_classes=C, training=False)
        tables = [v for v in tf.compat.v1.global_variables() if "centers" in v.name]
        assert [v.name for v in tables] == ["center_loss/centers:0"]
        session.run(tf.compat.v1.global_variables_initializer())
        y, x = batch(rng)
        session.run(first, {labels: y, features: x})
        once = reference.update_centers(y, x, np.zeros((C, D)), 0.5)
        np.testing.assert_allclose(session.run(second, {labels: y, features: x}),
                                   reference.center_loss(y, x, once), rtol=1e-5)
        np.testing.assert_allclose(session.run(tables[0]), once, rtol=1e-5)

    def test_differently_configured_losses_get_separate_tables(self, session):
        labels, features = placeholders()
        cl.center_loss(labels, features, alpha=0.5, num_classes=C, name="faces")
        cl.center_loss(labels, features, alpha=0.1, num_classes=C + 1, name="speakers")
        shapes = {v.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
        assert shapes == {"faces/centers:0": [C, D], "speakers/centers:0": [C + 1, D]}

    def test_other_shape_under_same_name_is_an_error(self, session):
        labels, features = placeholders()
        cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        with pytest.raises(ValueError, match=r"has shape \(9, 4\).*needs \[10, 4\]"):
            cl.center_loss(labels, features, alpha=0.5, num_classes=C + 1, training=False)

    def test_tf1_towers_in_variable_scopes(self, session):
        labels, features = placeholders()
        for tower in ("tower_a", "tower_b"):
            with tf.compat.v1.variable_scope(tower):
                cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        with tf.compat.v1.variable_scope("tower_a", reuse=True):
            cl.center_loss(labels, features, alpha=0.5, num_classes=C, training=False)
        assert sorted(v.name for v in tf.compat.v1.global_variables()) == [
            "tower_a/center_loss/centers:0", "tower_b/center_loss/centers:0"]


class TestInitialised:
    """An uninitialised table says what to run."""

    def test_uninitialised_centers_say_what_to_run(self, session):
        loss = cl.center_loss(tf.constant([1]), tf.ones([1, D]), alpha=0.5, num_classes=C)
        with pytest.raises(tf.errors.InvalidArgumentError, match="global_variables_initializer"):
            session.run(loss)


@pytest.mark.parametrize("which", ["whole", "sharded"])
def test_a_big_table_costs_its_size_once(which):
    """A 256 MB table (in a process of its own, peak RSS): initialised and
    stepped, the process grows by about one table (measured before cl's
    initializer: 2.08 table-sizes at 10^6 x 128, the folded zeros kept)."""
    done = run_python(script("table_memory"), which)
    assert result_of(done.stdout, done.stderr)["table_sizes"] < 1.5
