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
"""

import tensorflow as tf

LOSS = "loss"
GRADIENT = "gradient"
UPDATE_ON = (LOSS, GRADIENT)


def check_update_on(value):
    """`"loss"` or `"gradient"`, the two ways a run may trigger the update."""
    if value not in UPDATE_ON:
        raise ValueError(
            f"update_on must be 'loss' (running the loss or its gradient updates "
            f"the centers, the blog's behaviour) or 'gradient' (only a run that "
            f"computes the loss's gradient updates them: Estimator, hooks, "
            f"separate summary runs); received {value!r}.")
    return value


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
      update_on: `LOSS` (the returned value also waits for `update`) or
        `GRADIENT` (only the gradient does).

    Returns:
      The per-sample loss `[batch]`.
    """
    per_sample = per_sample_loss(gradient_waits_for(features, update))
    if update_on == GRADIENT:
        return per_sample
    with tf.control_dependencies([update]):
        return tf.identity(per_sample)
