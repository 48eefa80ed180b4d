"""`cl.ops`: cl.center_loss and the blog's names (softmax_loss, loss,
softmax_center_loss, categorical_accuracy, get_centers), against the numpy
reference: the update, the loss and its gradient, given and named tables,
settings, NaN samples, 16-bit features, the blog's lambda, graph mode only,
`sample_weight`, and the refusal inside a loop or conditional body.
"""

import re

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import variable_kind_of
from graph_batches import B, C, D, batch, placeholders
from helpers import run_python

import cl


class TestCenterUpdate:
    """The paper's update, step by step."""

    def test_many_steps_match_the_paper(self, session, variable_kind, rng):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        centers = cl.get_centers()
        assert variable_kind_of(centers) == variable_kind
        session.run(tf.compat.v1.global_variables_initializer())
        start = rng.normal(size=(C, D)).astype(np.float32)
        session.run(centers.assign(start))
        expected = start.astype(np.float64)
        for _ in range(25):
            y, x = batch(rng)
            got_loss = session.run(loss, {labels: y, features: x})
            # The loss is computed from the centers before this step's update.
            np.testing.assert_allclose(got_loss, reference.center_loss(y, x, expected),
                                       rtol=1e-5, atol=1e-5)
            expected = reference.update_centers(y, x, expected, 0.5)
            np.testing.assert_allclose(session.run(centers), expected, rtol=1e-5, atol=1e-5)
        final = session.run(centers)
        # Rows of classes never in a batch are bitwise what they were.
        assert np.array_equal(final[-2:], start[-2:])
        assert not np.allclose(final[:-2], start[:-2])

    def test_single_sample_and_all_one_class(self, session):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=1.0, num_classes=C)
        session.run(tf.compat.v1.global_variables_initializer())
        x = np.ones((1, D), np.float32) * 4
        session.run(loss, {labels: [3], features: x})
        # n_j = 1: c <- c - 1 * (c - x) / 2 = x / 2 from zero.
        np.testing.assert_array_equal(session.run(cl.get_centers())[3], x[0] / 2)
        x = np.arange(3 * D, dtype=np.float32).reshape(3, D)
        before = session.run(cl.get_centers())
        session.run(loss, {labels: [5, 5, 5], features: x})
        np.testing.assert_allclose(session.run(cl.get_centers()),
                                   reference.update_centers([5, 5, 5], x, before, 1.0), rtol=1e-6)

    def test_alpha_zero_leaves_centers(self, session, rng):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.0, num_classes=C)
        session.run(tf.compat.v1.global_variables_initializer())
        y, x = batch(rng)
        session.run(loss, {labels: y, features: x})
        assert not np.any(session.run(cl.get_centers()))

    def test_int64_labels_and_static_batch(self, session, rng):
        y, x = batch(rng)
        loss = cl.center_loss(tf.constant(y, tf.int64), tf.constant(x), alpha=0.5, num_classes=C)
        session.run(tf.compat.v1.global_variables_initializer())
        assert loss.shape.as_list() == [B]
        session.run(loss)
        np.testing.assert_allclose(session.run(cl.get_centers()),
                                   reference.update_centers(y, x, np.zeros((C, D)), 0.5),
                                   rtol=1e-5, atol=1e-6)


class TestLossAndGradient:
    """Per-sample loss and its gradient; the table is not trainable and gets no
    optimizer slots; float64 features stay float64."""

    def test_per_sample_values_shape_and_gradient(self, session, rng):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        centers = cl.get_centers()
        grad_features, grad_centers = tf.gradients(tf.reduce_sum(loss), [features, centers])
        session.run(tf.compat.v1.global_variables_initializer())
        old = rng.normal(size=(C, D)).astype(np.float32)
        session.run(centers.assign(old))
        y, x = batch(rng)
        got_loss, got_grad = session.run([loss, grad_features], {labels: y, features: x})
        assert got_loss.shape == (B,)
        np.testing.assert_allclose(got_loss, 0.5 * np.sum((x - old[y]) ** 2, axis=1), rtol=1e-6)
        np.testing.assert_allclose(got_grad, x - old[y], rtol=1e-6, atol=1e-6)
        assert grad_centers is None

    def test_centers_not_trainable_and_get_no_optimizer_slots(self, session, rng):
        labels, features = placeholders()
        weights = tf.compat.v1.get_variable("w", [D, D])
        loss = cl.center_loss(labels, tf.matmul(features, weights), alpha=0.5, num_classes=C)
        optimizer = tf.compat.v1.train.AdamOptimizer(0.01)
        train_op = optimizer.minimize(tf.reduce_mean(loss))
        centers = cl.get_centers()
        assert centers not in tf.compat.v1.trainable_variables()
        assert centers.name == "center_loss/centers:0"
        assert [optimizer.get_slot(centers, name) for name in optimizer.get_slot_names()] == [None, None]
        slots_for_weights = [optimizer.get_slot(weights, n) for n in optimizer.get_slot_names()]
        assert all(slot is not None for slot in slots_for_weights)
        session.run(tf.compat.v1.global_variables_initializer())
        y, x = batch(rng)
        session.run(train_op, {labels: y, features: x})
        assert np.any(session.run(centers))  # the train op ran the update

    def test_float64_features_tight(self, session, rng):
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        features = tf.compat.v1.placeholder(tf.float64, [None, D])
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        assert loss.dtype == tf.float64
        session.run(tf.compat.v1.global_variables_initializer())
        y, x = batch(rng)
        x = x.astype(np.float64) + 1e-3
        np.testing.assert_allclose(session.run(loss, {labels: y, features: x}),
                                   reference.center_loss(y, x, np.zeros((C, D))), rtol=1e-12)
        assert cl.get_centers().dtype.base_dtype == tf.float32


class TestGivenAndNamedTables:
    """A table given as `centers=`, and `get_centers` by name."""

    def test_explicit_centers_are_shared_on_purpose(self, session):
        labels, features = placeholders()
        table = tf.compat.v1.get_variable("shared", [C, D], trainable=False,
                                          initializer=tf.compat.v1.zeros_initializer())
        cl.center_loss(labels, features, alpha=0.5, num_classes=C, centers=table)
        assert [v.name for v in tf.compat.v1.global_variables()] == ["shared:0"]
        with pytest.raises(ValueError, match=r"centers must have shape \[num_classes=10"):
            cl.center_loss(labels, features, alpha=0.5, num_classes=C + 1, centers=table)

    def test_get_centers_names_what_exists(self, session):
        labels, features = placeholders()
        cl.center_loss(labels, features, alpha=0.5, num_classes=C, name="faces")
        with pytest.raises(KeyError, match="faces/centers:0"):
            cl.get_centers()
        assert cl.get_centers("faces").name == "faces/centers:0"


class TestSettings:
    """alpha and num_classes, checked when the graph is built."""

    @pytest.mark.parametrize("alpha", [-0.1, 1.5, "0.5", True])
    def test_alpha_outside_0_1(self, session, alpha):
        with pytest.raises(ValueError, match=re.escape(f"received {alpha!r}")):
            cl.center_loss(tf.zeros([2], tf.int32), tf.zeros([2, D]), alpha=alpha, num_classes=C)

    @pytest.mark.parametrize("num_classes", [0, -3, 2.5])
    def test_num_classes(self, session, num_classes):
        with pytest.raises(ValueError, match=f"num_classes must be an int >= 1; received {num_classes}"):
            cl.center_loss(tf.zeros([2], tf.int32), tf.zeros([2, D]), alpha=0.5,
                           num_classes=num_classes)


class TestNonFinite:
    """A NaN/Inf sample gets a NaN/Inf loss and never reaches the centers."""

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_never_reaches_centers(self, session, rng, bad):
        labels, features = placeholders()
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        session.run(tf.compat.v1.global_variables_initializer())
        expected = np.zeros((C, D))
        for step in range(6):
            y, x = batch(rng)
            if step in (1, 3):
                x[0, 1] = bad
                x[5, :] = bad
            got = session.run(loss, {labels: y, features: x})
            if step in (1, 3):
                assert not np.isfinite(got[0]) and not np.isfinite(got[5])
                assert np.all(np.isfinite(np.delete(got, [0, 5])))
            expected = reference.update_centers(y, x, expected, 0.5)
            centers = session.run(cl.get_centers())
            assert np.all(np.isfinite(centers))
            np.testing.assert_allclose(centers, expected, rtol=1e-5, atol=1e-5)


class TestMixedPrecision:
    """16-bit features: float32 centers and loss."""

    @pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
    def test_16_bit_features(self, session, rng, dtype):
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        features32 = tf.compat.v1.placeholder(tf.float32, [None, D])
        features = tf.cast(features32, dtype)
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=C)
        grad = tf.gradients(tf.reduce_sum(loss), features)[0]
        assert loss.dtype == tf.float32 and grad.dtype == dtype
        session.run(tf.compat.v1.global_variables_initializer())
        expected = np.zeros((C, D))
        for _ in range(5):
            y, x = batch(rng)
            x16 = session.run(tf.cast(features, tf.float32), {features32: x})
            got = session.run(loss, {labels: y, features32: x})
            np.testing.assert_allclose(got, reference.center_loss(y, x16, expected), rtol=1e-4)
            expected = reference.update_centers(y, x16, expected, 0.5)
        centers = cl.get_centers()
        assert centers.dtype.base_dtype == tf.float32
        np.testing.assert_allclose(session.run(centers), expected, rtol=1e-4, atol=1e-4)

    def test_float16_overflow_is_kept_out(self, session):
        features = tf.cast(tf.constant([[7e4, 1.0], [1.0, 1.0]]), tf.float16)  # 7e4 -> inf
        loss = cl.center_loss(tf.constant([0, 0]), features, alpha=1.0, num_classes=2)
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(loss)
        np.testing.assert_array_equal(session.run(cl.get_centers())[0], [0.5, 0.5])


class TestBlogNames:
    """The blog's names and constants."""

    def test_softmax_loss_per_sample(self, session, rng):
        logits = rng.normal(size=(B, C)).astype(np.float32)
        y = rng.integers(0, C, B)
        onehot = np.eye(C, dtype=np.float32)[y]
        got = session.run(cl.softmax_loss(onehot, logits))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(got, -log_softmax[np.arange(B), y], rtol=1e-5)

    def test_loss_is_softmax_plus_lambda_center(self, session, rng, monkeypatch):
        monkeypatch.setattr(cl, "NUM_CLASSES", C)
        logits = tf.compat.v1.placeholder(tf.float32, [None, C])
        onehot = tf.compat.v1.placeholder(tf.float32, [None, C])
        total = cl.loss(onehot, logits)
        parts = cl.softmax_loss(onehot, logits)
        session.run(tf.compat.v1.global_variables_initializer())
        centers = rng.normal(size=(C, C)).astype(np.float32)
        session.run(cl.get_centers().assign(centers))
        x = rng.normal(size=(B, C)).astype(np.float32)
        y = rng.integers(0, C, B)
        feed = {onehot: np.eye(C)[y], logits: x}
        got, softmax = session.run([total, parts], feed)
        assert got.shape == (B,)
        np.testing.assert_allclose(
            got, softmax + cl.LAMBDA * reference.center_loss(y, x, centers), rtol=1e-5)
        np.testing.assert_allclose(session.run(cl.get_centers()),
                                   reference.update_centers(y, x, centers, cl.ALPHA), rtol=1e-5,
                                   atol=1e-6)

    def test_blog_constants(self):
        assert (cl.NUM_CLASSES, cl.ALPHA, cl.LAMBDA) == (240, 0.6, 0.0005)

    def test_logits_width_must_match_num_classes(self, session):
        with pytest.raises(ValueError, match=r"logits have 10 classes but num_classes is 240"):
            cl.loss(tf.zeros([2, 10]), tf.zeros([2, 10]))

    def test_categorical_accuracy(self, session):
        y_true = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
        y_pred = np.array([[5, 1, 0], [0, 2, 1], [3, 0, 1], [0, 0, 9]], np.float32)
        np.testing.assert_array_equal(session.run(cl.categorical_accuracy(y_true, y_pred)),
                                      [1, 1, 0, 1])


class TestBlogLambda:
    """λ tuned against the blog's batch-summed center term carries over."""

    def blog_loss(self, y, x, centers, lam):
        # The blog: softmax_i + λ * tf.nn.l2_loss(x - c_y), a batch sum.
        shifted = x - x.max(axis=1, keepdims=True)
        softmax = -(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(len(y)), y]
        return softmax + lam * reference.center_loss(y, x, centers).sum()

    def test_batch_sum_switch_reproduces_blog_values(self, session, rng):
        from cl.ops import softmax_center_loss
        y = rng.integers(0, C, B)
        x = rng.normal(size=(B, C)).astype(np.float32)
        got = softmax_center_loss(np.eye(C, dtype=np.float32)[y], x, num_classes=C, alpha=0.5,
                                  lambda_=0.0005, batch_sum=True)
        session.run(tf.compat.v1.global_variables_initializer())
        np.testing.assert_allclose(session.run(got), self.blog_loss(y, x, np.zeros((C, C)), 0.0005),
                                   rtol=1e-5)

    def test_conversion_lambda_times_batch_gives_same_training_signal(self, session, rng):
        from cl.ops import softmax_center_loss
        y = rng.integers(0, C, B)
        x = tf.constant(rng.normal(size=(B, C)).astype(np.float32))
        onehot = np.eye(C, dtype=np.float32)[y]
        blog = tf.reduce_mean(softmax_center_loss(onehot, x, C, 0.5, 0.0005, batch_sum=True,
                                                  name="blog", training=False))
        ours = tf.reduce_mean(softmax_center_loss(onehot, x, C, 0.5, 0.0005 * B, name="ours",
                                                  training=False))
        session.run(tf.compat.v1.global_variables_initializer())
        for table in tf.compat.v1.global_variables():
            session.run(table.assign(tf.ones_like(table)))
        (value_blog, grad_blog), (value_ours, grad_ours) = session.run(
            [(blog, tf.gradients(blog, x)[0]), (ours, tf.gradients(ours, x)[0])])
        np.testing.assert_allclose(value_ours, value_blog, rtol=1e-5)
        np.testing.assert_allclose(grad_ours, grad_blog, rtol=1e-5, atol=1e-7)


class TestGraphModeOnly:
    """Graph mode only: refused inside tf.function and with eager execution."""

    def test_inside_tf_function_is_refused(self, session):
        @tf.function
        def step():
            return cl.center_loss(tf.constant([1]), tf.ones([1, D]), alpha=0.5, num_classes=C)
        with pytest.raises(RuntimeError, match="inside a tf.function.*disable_eager_execution"):
            step.get_concrete_function()

    def test_eager_is_refused(self):
        result = run_python(
            "import tensorflow as tf, cl\n"
            "try:\n"
            "    cl.center_loss(tf.constant([1]), tf.ones([1, 2]), alpha=0.5, num_classes=3)\n"
            "except RuntimeError as e:\n"
            "    print('REFUSED', e)\n")
        assert "REFUSED center_loss was called with eager execution enabled" in result.stdout, \
            result.stderr[-2000:]

    @pytest.mark.usefixtures("blog_classes")
    def test_eager_keras_compile_is_refused(self):
        result = run_python(
            "import cl.compat\n"
            "keras = cl.compat.keras_module()\n"
            "import numpy as np\n"
            "cl_model = keras.Sequential([keras.layers.Dense(4, input_shape=(3,))])\n"
            "import cl\n"
            "cl.NUM_CLASSES = 4\n"
            "cl_model.compile('adam', loss=cl.loss)\n"
            "try:\n"
            "    cl_model.fit(np.zeros((4, 3)), np.eye(4), verbose=0)\n"
            "except Exception as e:\n"
            "    print('REFUSED', e)\n")
        assert "REFUSED" in result.stdout and "disable_eager_execution" in result.stdout, \
            result.stdout + result.stderr[-3000:]


@pytest.mark.usefixtures("blog_classes")
class TestSampleWeight:
    """No silent route (issue 8, case 05): `sample_weight` weights the raw TF1 update."""

    def test_raw_tf1_weighted_rule_over_many_steps(self, session, rng):
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        features = tf.compat.v1.placeholder(tf.float32, [None, 3])
        weights = tf.compat.v1.placeholder(tf.float32, [None])
        loss = cl.center_loss(labels, features, alpha=0.5, num_classes=5, sample_weight=weights)
        session.run(tf.compat.v1.global_variables_initializer())
        centers = np.zeros((5, 3))
        for _ in range(15):
            y = rng.integers(0, 3, 12)  # classes 3, 4 absent; duplicates
            x = rng.normal(size=(12, 3))
            w = rng.choice([0.0, 0.5, 1.0, 2.0], 12)
            session.run(loss, {labels: y, features: x, weights: w})
            centers = reference.update_centers(y, x, centers, 0.5, w)
        np.testing.assert_allclose(session.run(cl.get_centers()), centers, rtol=1e-5, atol=1e-6)
        assert not np.any(centers[3:])


def _inside(construct, body):
    x = tf.constant([1.0, 2.0])
    if construct == "while_loop":
        tf.while_loop(lambda i: i < 2, lambda i: (body(), i + 1)[1], [0])
    elif construct == "map_fn":
        tf.map_fn(lambda e: body() * e, x)
    elif construct == "cond":
        tf.cond(x[0] > 0, body, lambda: tf.zeros([4]))
    elif construct == "case":
        tf.compat.v1.case([(x[0] > 0, body)], default=lambda: tf.zeros([4]))


@pytest.mark.parametrize("construct", ["while_loop", "map_fn", "cond", "case"])
def test_center_loss_in_a_control_flow_body_is_refused(session, control_flow, construct):
    """Issue 21 item 3: inside a loop or conditional body a center loss would
    update once per iteration or only when a branch runs; refused when the
    graph is built, naming the construct and the fix."""
    import cl
    labels = tf.compat.v1.placeholder(tf.int64, [4])
    features = tf.compat.v1.placeholder(tf.float32, [4, 3])

    def body():
        return cl.center_loss(labels, features, alpha=0.5, num_classes=5)

    with pytest.raises(RuntimeError) as error:
        _inside(construct, body)
    message = str(error.value)
    kind = "loop" if construct in ("while_loop", "map_fn") else "conditional"
    assert kind in message and "outside" in message, message
    if kind == "conditional":
        assert "training=" in message, message
    assert "disable_v2_behavior" not in message  # the advice that made it worse
    assert not [v for v in tf.compat.v1.global_variables() if "centers" in v.name]


def test_center_loss_builds_few_ops(session, rng):
    """Issue 24 item 6: what one cl.center_loss call adds to the graph,
    counted, never timed, on both TF lines: at most 52 ops besides constants
    (49 since the per-sample update; 82 before it, with 3 `If` guards and
    two segment sums), no conditional, one gather of the rows, one scatter
    of them, one segment sum (the classes' counts). The counted graph then
    runs and follows the reference."""
    import collections
    b, c, d = 64, 1000, 16
    graph = tf.compat.v1.get_default_graph()
    labels = tf.compat.v1.placeholder(tf.int32, [b])
    features = tf.compat.v1.placeholder(tf.float32, [b, d])
    first = len(graph.get_operations())
    loss = cl.center_loss(labels, features, alpha=0.5, num_classes=c)
    built = [op.type for op in graph.get_operations()[first:]
             if op.type != "Const" and "Initializer" not in op.name and "/Assign" not in op.name]
    kinds = collections.Counter(built)
    assert len(built) <= 52, (len(built), kinds.most_common())
    assert not kinds["If"] + kinds["StatelessIf"] + kinds["Switch"], kinds
    assert (kinds["ResourceGather"], kinds["ResourceScatterSub"], kinds["UnsortedSegmentSum"]) \
        == (1, 1, 1), kinds
    session.run(tf.compat.v1.global_variables_initializer())
    start = rng.normal(size=(c, d)).astype(np.float32)
    session.run(cl.get_centers().assign(start))
    y = rng.integers(0, 20, b).astype(np.int32)
    x = rng.normal(size=(b, d)).astype(np.float32)
    np.testing.assert_allclose(session.run(loss, {labels: y, features: x}),
                               reference.center_loss(y, x, start.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(session.run(cl.get_centers()),
                               reference.update_centers(y, x, start, 0.5), rtol=1e-5, atol=1e-6)
