"""What makes a TF1 session run the center update: the loss, its gradient, or both.

TensorFlow runs only the ops a fetch needs. The update is a side effect, so
it must be an input of something every training step computes:

  * the gradient. With a static batch size the gradient of
    `reduce_mean(loss)` needs only the loss's shape, so `sess.run(train_op)`
    never runs the loss op itself; an update hung on the loss value alone
    would silently never run. So the gradient with respect to the features
    always waits for the update (an identity of the features whose gradient
    depends on it).
  * the loss value, in the blog's mode (`update_on="loss"`, the default):
    fetching the loss alone also updates, as the blog's `cl.py` did.

Both wait for the same op, and an op runs at most once per `session.run`,
so a run that fetches the loss, a summary and two gradients of the loss
still updates once. `update_on="gradient"` drops the second tie: the
centers then move when, and only when, a run computes the loss's gradient,
never in an evaluation, a hook's fetch of the loss or a separate summary run.

`update_on="update_ops"` ties the update to nothing and adds it to
`tf.compat.v1.GraphKeys.UPDATE_OPS`, TF1's BatchNormalization idiom: a train
op built under `control_dependencies(get_collection(UPDATE_OPS))` (Estimator
model_fns, slim's create_train_op) runs it once per run whatever the
gradient reaches (a frozen backbone: `var_list`, `stop_gradient`), and
nothing else ever does (evaluation, serving).

One table, one updating call per graph (`claim`): two would apply two
updates in one run, in an order TensorFlow picks.
"""

import weakref

import tensorflow as tf

from cl import rules

LOSS = "loss"
GRADIENT = "gradient"
UPDATE_OPS = "update_ops"
UPDATE_ON = (LOSS, GRADIENT, UPDATE_OPS)

# Per graph: table key -> a description of the call that updates it.
_UPDATERS = weakref.WeakKeyDictionary()


def check_update_on(value):
    """One of `UPDATE_ON`, the ways a run may trigger the update."""
    if value not in UPDATE_ON:
        raise ValueError(
            f"update_on must be 'loss' (running the loss or its gradient updates "
            f"the centers, the blog's behaviour), 'gradient' (only a run that "
            f"computes the loss's gradient updates them: hooks, separate summary "
            f"runs) or 'update_ops' (the update joins tf.compat.v1.GraphKeys."
            f"UPDATE_OPS, like BatchNormalization's: frozen backbones, Estimator, "
            f"serving); received {value!r}.")
    return value


def claim(table, what, labels):
    """Records that `what` updates `table` in this graph; raises ValueError
    naming the fixes if another call already does. Under tf.distribute each
    replica updates its own copy: the key is the table and the replica's device."""
    key = table.name
    if isinstance(table, tf.distribute.DistributedValues) and \
            not tf.distribute.in_cross_replica_context():
        key = (table.name, table.handle.device)
    claims = _UPDATERS.setdefault(tf.compat.v1.get_default_graph(), {})
    if key in claims:
        raise ValueError(rules.second_update(what, table.name.split(":")[0], claims[key]))
    claims[key] = f"{what} on labels '{labels.name}'"


def gradient_waits_for(features, update):
    """`features`, unchanged, whose gradient is computed after `update` runs."""

    @tf.custom_gradient
    def tied(x):
        def gradient(upstream):
            with tf.control_dependencies([update]):
                return tf.identity(upstream)
        return tf.identity(x), gradient

    return tied(features)


def tie(per_sample_loss, features, update, update_on):
    """Ties `update` into a loss built from `features`.

    Args:
      per_sample_loss: a function `features -> [batch] loss`; it is called
        on features whose gradient waits for `update`.
      features: the float `[batch, dim]` features of the loss.
      update: the op (or tensor) applying this step's center update.
      update_on: `LOSS` (the returned value also waits for `update`),
        `GRADIENT` (only the gradient does) or `UPDATE_OPS` (neither: the
        update joins the UPDATE_OPS collection).

    Returns:
      The per-sample loss `[batch]`.
    """
    if update_on == UPDATE_OPS:
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS,
                                       getattr(update, "op", update))
        return per_sample_loss(features)
    per_sample = per_sample_loss(gradient_waits_for(features, update))
    if update_on == GRADIENT:
        return per_sample
    with tf.control_dependencies([update]):
        return tf.identity(per_sample)
