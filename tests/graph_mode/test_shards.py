"""`cl.graph.shards`: centers split by rows, a TF1 PartitionedVariable.

Under `variable_scope(partitioner=...)` (the TF1 idiom for big embedding
tables), or with `partitioner=`, the table is a PartitionedVariable of
consecutive-row shards. Each test trains with learning rate 0 (only the
centers move) and compares every shard with the numpy rule after every run;
the graph is searched for any op that would read a whole shard per step.
Then: TF1 parameter servers (a row-split table under
`replica_device_setter`, tests/scripts/parameter_servers.py, one process,
servers on 127.0.0.1), and Keras 2 with a split table
(`CenterLoss(partitioner=...)` or a compile under a partitioned scope):
fit follows the rule, and the table survives every way a Keras 2 user
moves weights, into a model with another number of shards too.
"""

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import keras
from helpers import free_ports, script_result_once

import cl
from cl import compat

C, D_IN, D, B, ALPHA = 10, 5, 4, 12, 0.5
# Uneven: 10 rows over 3 shards are rows 0-3, 4-6, 7-9.
THREE_SHARDS = tf.compat.v1.fixed_size_partitioner(3)
# Each batch has duplicates, both ends of every shard, absent classes.
BATCHES = [np.array([0, 3, 3, 4, 6, 7, 9, 9, 0, 4, 7, 3]),
           np.array([1, 1, 5, 5, 8, 2, 2, 8, 9, 0, 6, 6]),
           np.array([3, 4, 4, 4, 3, 3, 7, 6, 6, 9, 9, 0])]
# What a step may do to a shard: read its batch rows, scatter into them,
# check it is initialised and holds its declared shape (metadata only). A
# ReadVariableOp / Identity of a shard, or a concat of shards, would copy
# the whole table every step.
SPARSE_SHARD_OPS = {"ResourceGather", "ResourceScatterSub", "VarIsInitializedOp",
                    "IsVariableInitialized", "Gather", "GatherV2", "ScatterSub",
                    "VariableShape", "Shape"}

PartitionedVariable = compat.partitioned_variable_class()
SGD = getattr(keras.optimizers, "legacy", keras.optimizers).SGD


def build(make_loss, variable_kind="resource"):
    """Inputs, a dense embedding, the loss from `make_loss`, a train op at lr 0."""
    labels = tf.compat.v1.placeholder(tf.int32, [B], name="labels")
    inputs = tf.compat.v1.placeholder(tf.float32, [B, D_IN], name="inputs")
    with tf.compat.v1.variable_scope("net", use_resource=variable_kind == "resource"):
        weights = tf.compat.v1.get_variable(
            "w", [D_IN, D], initializer=tf.compat.v1.random_normal_initializer(seed=3))
    features = tf.matmul(inputs, weights)
    loss = tf.reduce_mean(make_loss(labels, features))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.0).minimize(loss)
    return labels, inputs, features, train_op


def train_and_compare(sess, table, labels, inputs, features, train_op, rng):
    sess.run(tf.compat.v1.global_variables_initializer())
    expected = np.zeros([C, D], np.float32)
    for batch in BATCHES:
        feed = {labels: batch, inputs: rng.normal(size=[B, D_IN]).astype(np.float32)}
        values = sess.run(features, feed)
        sess.run(train_op, feed)
        expected = reference.update_centers(batch, values, expected, ALPHA)
        np.testing.assert_allclose(whole(sess, table), expected, rtol=1e-5, atol=1e-6)
    return expected


def whole(sess, table):
    if not isinstance(table, PartitionedVariable):
        return sess.run(table)
    return np.concatenate(sess.run(list(table)), axis=0)


def shard_readers(train_op, table):
    """Types of the ops a training run uses on the table's shards."""
    handles = {shard.op for shard in table}
    seen, stack, found = set(), [train_op], set()
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        for tensor in op.inputs:
            if tensor.op in handles:
                found.add(op.type)
            stack.append(tensor.op)
        stack.extend(op.control_inputs)
    return found


@pytest.mark.parametrize("how", ["variable_scope", "argument", "min_max"])
def test_partitioned_table_follows_the_rule(session, rng, variable_kind, how):
    def make_loss(labels, features):
        if how == "argument":
            return cl.center_loss(labels, features, ALPHA, C, partitioner=THREE_SHARDS)
        partitioner = THREE_SHARDS if how == "variable_scope" else \
            tf.compat.v1.min_max_variable_partitioner(max_partitions=3, min_slice_size=16)
        with tf.compat.v1.variable_scope("model", partitioner=partitioner):
            return cl.center_loss(labels, features, ALPHA, C)

    built = build(make_loss, variable_kind)
    scope = "center_loss" if how == "argument" else "model/center_loss"
    table = cl.get_centers(scope)
    assert isinstance(table, PartitionedVariable)
    rows = [s.shape.as_list() for s in table]
    if how == "min_max":  # 16 bytes per row, at least 16 bytes a slice: 3 shards
        assert len(rows) == 3
    assert rows[:3] == [[4, D], [3, D], [3, D]]
    assert [s.name for s in table] == [f"{scope}/centers/part_{k}:0" for k in range(3)]
    assert all(not s.trainable for s in table)
    assert table not in tf.compat.v1.trainable_variables()
    train_and_compare(session, table, *built, rng)
    # A ref variable's Identity aliases its buffer (no copy); a resource
    # variable's whole read would be a ReadVariableOp.
    allowed = SPARSE_SHARD_OPS | ({"Identity"} if variable_kind == "ref" else set())
    assert shard_readers(built[-1], table) <= allowed, shard_readers(built[-1], table)


def three_shard_loss(session):
    """Placeholders, the loss on a 3-shard table `m/center_loss/centers`
    (initialised), and the table."""
    labels = tf.compat.v1.placeholder(tf.int32, [B])
    features = tf.compat.v1.placeholder(tf.float32, [B, D])
    with tf.compat.v1.variable_scope("m", partitioner=THREE_SHARDS):
        loss = cl.center_loss(labels, features, ALPHA, C)
    session.run(tf.compat.v1.global_variables_initializer())
    return labels, features, loss, cl.get_centers("m/center_loss")


def test_loss_value_uses_the_pre_update_centers(session, rng):
    labels, features, loss, table = three_shard_loss(session)
    centers = np.zeros([C, D], np.float32)
    for batch in BATCHES:
        values = rng.normal(size=[B, D]).astype(np.float32)
        got = session.run(loss, {labels: batch, features: values})
        np.testing.assert_allclose(got, reference.center_loss(batch, values, centers),
                                   rtol=1e-5)
        centers = reference.update_centers(batch, values, centers, ALPHA)
        np.testing.assert_allclose(whole(session, table), centers, rtol=1e-5, atol=1e-6)


def test_blog_loss_under_a_partitioned_scope(session, rng):
    labels = tf.compat.v1.placeholder(tf.float32, [B, C])
    logits = tf.compat.v1.placeholder(tf.float32, [B, C])
    with tf.compat.v1.variable_scope("blog", partitioner=THREE_SHARDS):
        loss = cl.softmax_center_loss(labels, logits, C, ALPHA, 0.1)
    table = cl.get_centers("blog/center_loss")
    assert isinstance(table, PartitionedVariable)
    session.run(tf.compat.v1.global_variables_initializer())
    batch = BATCHES[0]
    values = rng.normal(size=[B, C]).astype(np.float32)
    session.run(loss, {labels: np.eye(C)[batch], logits: values})
    np.testing.assert_allclose(
        whole(session, table),
        reference.update_centers(batch, values, np.zeros([C, C]), ALPHA), rtol=1e-5, atol=1e-6)


def test_bad_labels_leave_every_shard_untouched(session, rng):
    labels, features, loss, table = three_shard_loss(session)
    values = rng.normal(size=[B, D]).astype(np.float32)
    session.run(loss, {labels: BATCHES[0], features: values})
    before = whole(session, table)
    for bad in (C, -1):
        batch = BATCHES[1].copy()
        batch[4] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"{bad}"):
            session.run(loss, {labels: batch, features: values})
    nan = values.copy()
    nan[0] = np.nan
    session.run(loss, {labels: BATCHES[1], features: nan})
    expected = reference.update_centers(BATCHES[1], nan, before, ALPHA)
    np.testing.assert_allclose(whole(session, table), expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(whole(session, table)).all()


def test_uninitialised_shards_say_what_to_run(session):
    with tf.compat.v1.variable_scope("m", partitioner=THREE_SHARDS):
        loss = cl.center_loss(tf.constant([0, 9]), tf.ones([2, D]), ALPHA, C)
    with pytest.raises(tf.errors.OpError, match="global_variables_initializer"):
        session.run(loss)


def test_split_along_features_is_refused_before_any_variable(session):
    by_features = tf.compat.v1.variable_axis_size_partitioner(
        max_shard_bytes=C * 4, axis=1)
    with pytest.raises(ValueError, match=r"otherwise than by rows.*fixed_size_partitioner"):
        with tf.compat.v1.variable_scope("m", partitioner=by_features):
            cl.center_loss(tf.constant([0, 1]), tf.ones([2, D]), ALPHA, C)
    with pytest.raises(TypeError, match="received 3"):
        cl.center_loss(tf.constant([0, 1]), tf.ones([2, D]), ALPHA, C, partitioner=3)
    assert tf.compat.v1.global_variables() == []


def test_partitioned_scope_under_mirrored_strategy_is_refused(session):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope(), tf.compat.v1.variable_scope("m", partitioner=THREE_SHARDS):
        with pytest.raises(ValueError, match="MirroredStrategy.*replica_device_setter"):
            cl.center_loss(tf.constant([0, 1]), tf.ones([2, D]), ALPHA, C)
    assert tf.compat.v1.global_variables() == []


def saved_table(path, rng, partitioner):
    """Trains a table split by `partitioner` for one step, saves it; its value."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session() as sess:
        with tf.compat.v1.variable_scope("m", partitioner=partitioner):
            loss = cl.center_loss(tf.constant(BATCHES[0]),
                                  tf.constant(rng.normal(size=[B, D]), tf.float32), ALPHA, C)
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(loss)
        value = whole(sess, cl.get_centers("m/center_loss"))
        tf.compat.v1.train.Saver().save(sess, str(path / "model.ckpt"))
    return value


@pytest.mark.parametrize("shards_after", [2, 5, None])
def test_saver_round_trip_into_another_number_of_shards(tmp_path, rng, shards_after):
    saved = saved_table(tmp_path, rng, THREE_SHARDS)
    assert np.abs(saved).sum() > 0
    np.testing.assert_array_equal(cl.read_centers(tmp_path / "model.ckpt", "m/center_loss/centers:0"), saved)
    np.testing.assert_array_equal(cl.read_centers(tmp_path, "m/center_loss/centers"), saved)
    partitioner = shards_after and tf.compat.v1.fixed_size_partitioner(shards_after)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session() as sess:
        with tf.compat.v1.variable_scope("m", partitioner=partitioner):
            loss = cl.center_loss(tf.constant(BATCHES[1]), tf.ones([B, D]), ALPHA, C)
        tf.compat.v1.train.Saver().restore(sess, str(tmp_path / "model.ckpt"))
        table = cl.get_centers("m/center_loss")
        assert isinstance(table, PartitionedVariable) == bool(shards_after)
        np.testing.assert_array_equal(whole(sess, table), saved)
        sess.run(loss)  # and training goes on from the restored centers
        moved = whole(sess, table)
    expected = reference.update_centers(BATCHES[1], np.ones([B, D]), saved, ALPHA)
    np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("route", ["assign", "init_from_checkpoint"])
def test_a_whole_table_handed_to_a_partitioned_one(tmp_path, rng, route):
    """The README's two hand-offs: read_centers + assign through a
    placeholder (no table-sized constant in the graph), or TF1's
    init_from_checkpoint, which re-slices too."""
    saved = saved_table(tmp_path, rng, None)  # saved whole
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        with tf.compat.v1.variable_scope("n", partitioner=tf.compat.v1.fixed_size_partitioner(4)):
            cl.center_loss(tf.constant([0]), tf.ones([1, D]), ALPHA, C)
        table = cl.get_centers("n/center_loss")
        if route == "init_from_checkpoint":
            tf.compat.v1.train.init_from_checkpoint(
                str(tmp_path), {"m/center_loss/centers": "n/center_loss/centers"})
        sess.run(tf.compat.v1.global_variables_initializer())
        if route == "assign":
            value = tf.compat.v1.placeholder(tf.float32, [C, D])
            sess.run(table.assign(value), {value: cl.read_centers(tmp_path, "m/center_loss/centers")})
        assert len(list(table)) == 4
        np.testing.assert_array_equal(whole(sess, table), saved)


def test_tf1_towers_share_one_partitioned_table(session, rng):
    """In-graph replication: 2 towers' batches, one update on a table split
    by rows (the tower idiom with the big table on the host or ps)."""
    towers = cl.TowerCenterLoss(C, alpha=ALPHA)
    inputs = [(tf.compat.v1.placeholder(tf.int32, [B]), tf.compat.v1.placeholder(tf.float32, [B, D]))
              for _ in range(2)]
    with tf.compat.v1.variable_scope("towers", partitioner=THREE_SHARDS):
        losses = [towers(labels, features) for labels, features in inputs]
    update = towers.update_op()
    table = towers.centers
    assert isinstance(table, PartitionedVariable) and len(list(table)) == 3
    session.run(tf.compat.v1.global_variables_initializer())
    values = [rng.normal(size=[B, D]).astype(np.float32) for _ in inputs]
    feed = {placeholder: value for (labels, features), batch, value in zip(inputs, BATCHES, values)
            for placeholder, value in ((labels, batch), (features, value))}
    session.run([update] + losses, feed)
    expected = reference.update_centers(np.concatenate(BATCHES[:2]), np.concatenate(values),
                                        np.zeros([C, D]), ALPHA)
    np.testing.assert_allclose(whole(session, table), expected, rtol=1e-5, atol=1e-6)


def table_graph(classes, partitioner, towers=False):
    """A graph with a loss (or TF1 towers' loss and update) on a `classes`-row
    table `m/center_loss/centers` split by `partitioner`: (graph, step,
    labels, features, the table's variables)."""
    graph = tf.Graph()
    with graph.as_default():
        labels = tf.compat.v1.placeholder(tf.int32, [None])
        features = tf.compat.v1.placeholder(tf.float32, [None, D])
        with tf.compat.v1.variable_scope("m", partitioner=partitioner):
            if towers:
                shared = cl.TowerCenterLoss(classes, alpha=ALPHA)
                step = [shared(labels, features), shared.update_op()]
            else:
                step = cl.center_loss(labels, features, ALPHA, classes)
        table = cl.get_centers("m/center_loss")
    parts = list(table) if isinstance(table, PartitionedVariable) else [table]
    return graph, step, labels, features, parts


def saver_of(route, parts):
    """A graph-mode tf.train.Checkpoint of the table's variables, or a Saver."""
    if route == "checkpoint":
        return tf.train.Checkpoint(**{f"part_{k}": v for k, v in enumerate(parts)})
    return tf.compat.v1.train.Saver()


def save_random_table(path, route, classes, partitioner, towers=False):
    """Saves a random `classes`-row table; its variables' values."""
    graph, _, _, _, parts = table_graph(classes, partitioner, towers)
    with graph.as_default(), tf.compat.v1.Session() as session:
        session.run([v.initializer for v in parts])
        session.run([v.assign(tf.random.normal(v.shape, seed=k)) for k, v in enumerate(parts)])
        if route == "checkpoint":
            saver_of(route, parts).write(str(path))
        else:
            saver_of(route, parts).save(session, str(path))
        return session.run(parts)


def restore(session, route, parts, path):
    if route == "checkpoint":
        saver_of(route, parts).read(str(path)).run_restore_ops(session)
    else:
        saver_of(route, parts).restore(session, str(path))


@pytest.mark.parametrize("saved, declared", [(10, 8), (8, 10)])
@pytest.mark.parametrize("shards", [None, 2, 3])
@pytest.mark.parametrize("route", ["checkpoint", "saver"])
def test_a_restored_table_of_another_shape_is_refused_before_any_step(tmp_path, route, shards,
                                                                    saved, declared):
    """Issue 21 item 9: TensorFlow's graph-mode restore assigns a saved table
    (or shard) of another shape as it is; the table then held `saved` rows
    behind a `declared` declaration and cl routed class ids by the declared
    shards, so classes trained on other classes' rows. Every step now
    refuses it, naming both shapes, before any read or write."""
    partitioner = shards and tf.compat.v1.fixed_size_partitioner(shards)
    saved_values = save_random_table(tmp_path / "ckpt", route, saved, partitioner)
    graph, step, labels, features, parts = table_graph(declared, partitioner)
    with graph.as_default(), tf.compat.v1.Session() as session:
        if route == "saver" and shards:
            # A Saver stores a split table as one [saved, D] tensor, and
            # refuses another shape itself.
            with pytest.raises(tf.errors.InvalidArgumentError, match="Restoring from checkpoint failed"):
                restore(session, route, parts, tmp_path / "ckpt")
            return
        restore(session, route, parts, tmp_path / "ckpt")
        assert [v.shape for v in session.run(parts)] == [v.shape for v in saved_values]
        rows = " ".join(str(len(v)) for v in saved_values)
        split = rf".*in shards of\] \[{rows}\]" if shards else ""
        batch = min(saved, declared)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"declared \[{declared}, {D}\].*holds\] \[{saved} {D}\]{split}"):
            session.run(step, {labels: np.arange(batch), features: np.ones([batch, D])})
        for value, before in zip(session.run(parts), saved_values):
            np.testing.assert_array_equal(value, before)  # nothing read or written


def test_tf1_towers_refuse_a_restored_table_of_another_shape(tmp_path):
    """Issue 21 item 9, TF1 towers: the shared update waits for the towers'
    losses, which check the table."""
    saved_values = save_random_table(tmp_path / "ckpt", "checkpoint", C, THREE_SHARDS, towers=True)
    graph, step, labels, features, parts = table_graph(C - 2, THREE_SHARDS, towers=True)
    with graph.as_default(), tf.compat.v1.Session() as session:
        restore(session, "checkpoint", parts, tmp_path / "ckpt")
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"declared \[{C - 2}, {D}\].*holds\] \[{C} {D}\]"):
            session.run(step, {labels: [0, 1], features: np.ones([2, D])})
        for value, before in zip(session.run(parts), saved_values):
            np.testing.assert_array_equal(value, before)


# TF1 parameter servers: ps:0, ps:1 and two workers in one process.

@pytest.fixture(scope="session")
def result(tmp_path_factory):
    ports = ",".join(map(str, free_ports(4)))
    return script_result_once(tmp_path_factory, "parameter_servers", ports, timeout=240)


def test_shards_live_round_robin_on_the_ps_tasks(result):
    assert result["rows"] == [[3, 4]] * 4
    assert sorted(result["devices"]) == ["/job:ps/task:0"] * 2 + ["/job:ps/task:1"] * 2
    assert result["devices"][0] != result["devices"][1]


def test_a_step_reads_and_writes_only_rows(result):
    # VariableShape: the shard's shape from its metadata (issue 21 item 9's
    # check of a restored table), never a read of its values.
    assert result["shard_ops"] == ["ResourceGather", "ResourceScatterSub", "VarIsInitializedOp",
                                   "VariableShape"]


def test_each_workers_step_applies_the_rule_to_its_own_batch(result):
    # worker 0 alone for 3 steps, then the two alternating; compared after
    # every step, as seen from the other worker's session
    assert len(result["sequential_errors"]) == 8
    assert max(result["sequential_errors"]) < 1e-5


def test_concurrent_workers_on_disjoint_classes_each_follow_their_own_updates(result):
    assert result["moved"] > 0.1
    assert result["concurrent_error"] < 1e-5
    assert np.isfinite(result["concurrent_error"])


# Keras 2: training follows the rule, evaluate/predict move nothing, and the
# table moves into a model with another number of shards.

def model_with(partitioner, scope_partitioner=None, center_metrics=False):
    inputs = keras.Input([D_IN])
    embedding = keras.layers.Dense(D, name="embedding")(inputs)
    logits = keras.layers.Dense(C, name="logits")(embedding)
    model = keras.Model(inputs, [logits, embedding])
    metrics = {"embedding": cl.center_metrics()} if center_metrics else None
    with tf.compat.v1.variable_scope("outer", partitioner=scope_partitioner):
        cl.compile_model(model, SGD(0.0),
            loss={"logits": cl.SparseSoftmaxLoss(),
                  "embedding": cl.CenterLoss(C, ALPHA, partitioner=partitioner)},
            metrics=metrics)
    return model


def centers(model):
    (table,) = cl.centers_of(model)
    return model.get_weights()[-1], table


def fit_steps(model, rng, steps=3):
    expected = np.zeros([C, D], np.float32)
    for _ in range(steps):
        x = rng.normal(size=[B, D_IN]).astype(np.float32)
        y = rng.integers(0, C, size=B)
        features = model.predict(x, verbose=0)[1]
        model.fit(x, {"logits": y, "embedding": y}, batch_size=B, epochs=1, verbose=0)
        expected = reference.update_centers(y, features, expected, ALPHA)
        np.testing.assert_allclose(centers(model)[0], expected, rtol=1e-5, atol=1e-6)
    return x, y, expected


@pytest.mark.parametrize("how", ["shards", "partitioner", "variable_scope"])
def test_fit_follows_the_rule_and_evaluate_moves_nothing(rng, how):
    model = model_with(3 if how == "shards" else
                       tf.compat.v1.fixed_size_partitioner(3) if how == "partitioner" else None,
                       tf.compat.v1.fixed_size_partitioner(3) if how == "variable_scope" else None,
                       center_metrics=True)
    value, table = centers(model)
    assert isinstance(table, PartitionedVariable)
    assert [s.shape.as_list() for s in table] == [[4, D], [3, D], [3, D]]
    assert value.shape == (C, D)
    x, y, expected = fit_steps(model, rng)
    model.evaluate(x, {"logits": y, "embedding": y}, verbose=0)
    model.predict(x, verbose=0)
    np.testing.assert_allclose(centers(model)[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("route", ["save_weights_tf", "save_weights_h5", "set_weights",
                                   "save_model_h5", "checkpoint"])
@pytest.mark.parametrize("shards_after", [3, 2, None])
def test_centers_survive_into_another_number_of_shards(tmp_path, rng, route, shards_after):
    source = model_with(3)
    trained = fit_steps(source, rng, steps=1)[2]
    target = model_with(shards_after)
    if route == "save_weights_tf":
        source.save_weights(str(tmp_path / "w"))
        np.testing.assert_allclose(cl.read_centers(tmp_path / "w"), trained, rtol=1e-6, atol=1e-7)
        target.load_weights(str(tmp_path / "w"))
    elif route == "save_weights_h5":
        source.save_weights(str(tmp_path / "w.h5"))
        target.load_weights(str(tmp_path / "w.h5"))
    elif route == "set_weights":
        target.set_weights(source.get_weights())
    elif route == "checkpoint":
        path = tf.train.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
        saved = cl.read_centers(path, "model/cl_centers")
        np.testing.assert_allclose(saved, trained, rtol=1e-6, atol=1e-7)
        if shards_after == 3:
            status = tf.train.Checkpoint(model=target).read(path)
            status.run_restore_ops(compat.keras_backend(target).get_session())
        else:  # tf.train.Checkpoint matches keys only: hand the whole table over
            _assign_whole(target, saved)
    else:
        cl.save_model(source, str(tmp_path / "m.h5"))
        target = cl.load_model(str(tmp_path / "m.h5"))
    np.testing.assert_allclose(centers(target)[0], trained, rtol=1e-6, atol=1e-7)


def _assign_whole(model, value):
    """Whole `value` into the model's (possibly split) table."""
    (table,) = cl.centers_of(model)
    tables = list(table) if isinstance(table, PartitionedVariable) else [table]
    start, pairs = 0, []
    for variable in tables:
        rows = variable.shape.as_list()[0]
        pairs.append((variable, value[start:start + rows]))
        start += rows
    compat.keras_backend(model).batch_set_value(pairs)


def test_bad_partitioner_is_refused():
    with pytest.raises(TypeError, match="received 'four'"):
        cl.CenterLoss(C, partitioner="four")
    assert cl.CenterLoss(C, partitioner=4).get_config()["partitioner"] == 4


@pytest.mark.parametrize("shards_after", [3, 2, None])
def test_tf_format_weights_loaded_before_compile_fill_any_number_of_shards(tmp_path, rng,
                                                                        shards_after):
    source = model_with(3)
    trained = fit_steps(source, rng, steps=1)[2]
    source.save_weights(str(tmp_path / "w"))
    inputs = keras.Input([D_IN])
    embedding = keras.layers.Dense(D, name="embedding")(inputs)
    target = keras.Model(inputs, [keras.layers.Dense(C, name="logits")(embedding), embedding])
    target.load_weights(str(tmp_path / "w"))  # no cl table yet
    cl.compile_model(target, SGD(0.0), loss={
        "logits": cl.SparseSoftmaxLoss(), "embedding": cl.CenterLoss(C, ALPHA, partitioner=shards_after)})
    np.testing.assert_allclose(centers(target)[0], trained, rtol=1e-6, atol=1e-7)
