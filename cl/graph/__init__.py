"""TensorFlow primitives, one concern each, arguments in and tensors out.

Used by the TF1 graph API (`cl.ops`, `cl.keras2`, `cl.towers`) in graph mode
AND by the eager front-ends on TensorFlow (`cl.tf2`, `cl.keras3` on TF),
inside their `tf.function`s: `checks` (the rules as TF checks), `targets`
(Keras 2's y_true as class ids), `table` (the centers table: create or
reuse, initialised and shape checks, guarded update), `shards` (tables
split by rows), `replicas` (the update across tf.distribute replicas),
`ties` (what makes a session run the update), `sites` (which Keras model
is compiling this loss, a registry filled from above). They import
`cl.formulas`, `cl.rules`, `cl.compat` and each other downward, never a
front-end. Importing this package loads nothing.
"""
