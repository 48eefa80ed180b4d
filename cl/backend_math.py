"""The tensor primitives `cl.formulas` is written against, per backend.

The paper's formulas (`cl.formulas`) are written once against the handful of
operations below; `math_of(backend)` gives them for TensorFlow (graph mode
and eager alike), JAX (static shapes for jit) or PyTorch (eager). The
backend's framework is imported on first use only, so `cl.formulas` runs
with Keras 3 on JAX or PyTorch where TensorFlow is not installed.
"""

import functools

TENSORFLOW = "tensorflow"
JAX = "jax"
TORCH = "torch"


@functools.lru_cache(maxsize=None)
def math_of(backend):
    """The primitives below, for `backend`; its framework is imported here."""
    if backend == TENSORFLOW:
        return _TensorFlowMath()
    if backend == JAX:
        return _JaxMath()
    if backend == TORCH:
        return _TorchMath()
    raise ValueError(
        f"backend must be {TENSORFLOW!r}, {JAX!r} or {TORCH!r}; received {backend!r}.")


class _TensorFlowMath:
    """The TensorFlow ops cl has always built (graph mode and eager alike)."""

    def __init__(self):
        import tensorflow as tf
        self.tf = tf

    def sum_rows(self, x):
        return self.tf.reduce_sum(x, axis=1)

    def square(self, x):
        return self.tf.square(x)

    def squared_norms(self, x):
        return self.tf.reduce_sum(self.tf.square(x), axis=1)

    def mean_squared_norm(self, x, factor):
        return factor * self.tf.reduce_mean(self.squared_norms(x))

    def stop_gradient(self, x):
        return self.tf.stop_gradient(x)

    def ones_like(self, x, dtype):
        return self.tf.ones_like(x, dtype=dtype)

    def zeros_like(self, x):
        return self.tf.zeros_like(x)

    def cast(self, x, dtype):
        return self.tf.cast(x, dtype)

    def isfinite(self, x):
        return self.tf.math.is_finite(x)

    def is_floating(self, x):
        return x.dtype.is_floating

    def floor(self, x):
        return self.tf.floor(x)

    def all_rows(self, x):
        return self.tf.reduce_all(x, axis=1)

    def any_rows(self, x):
        return self.tf.reduce_any(x, axis=1)

    def logical_and(self, a, b):
        return self.tf.logical_and(a, b)

    def where(self, condition, a, b):
        return self.tf.where(condition, a, b)

    def broadcast_like(self, x, like):
        return self.tf.broadcast_to(x, self.tf.shape(like))

    def unique(self, labels):
        # Segments over the k classes present, never all C: O(batch), not O(C).
        class_ids, sample_to_class = self.tf.unique(labels)
        return class_ids, sample_to_class, self.tf.size(class_ids)

    def segment_sum(self, data, segment_ids, num_segments):
        return self.tf.math.unsorted_segment_sum(data, segment_ids, num_segments)

    def class_totals(self, labels, weights):
        # Per sample, the weights of its class: summed over the classes
        # present (a hash of the batch's labels), never over all C.
        _, sample_to_class = self.tf.unique(labels)
        totals = self.tf.math.unsorted_segment_sum(weights, sample_to_class, self.tf.size(labels))
        return self.tf.gather(totals, sample_to_class)

    def scale_rows(self, rows, scale):
        # 0 where scale is 0, whatever the row holds (NaN, Inf).
        return self.tf.math.multiply_no_nan(rows, scale[:, None])


class _JaxMath:
    """jax.numpy, with the static shapes jit needs."""

    def __init__(self):
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp

    def sum_rows(self, x):
        return self.jnp.sum(x, axis=1)

    def square(self, x):
        return self.jnp.square(x)

    def squared_norms(self, x):
        return self.jnp.sum(self.jnp.square(x), axis=1)

    def mean_squared_norm(self, x, factor):
        return factor * self.jnp.mean(self.squared_norms(x))

    def stop_gradient(self, x):
        return self.jax.lax.stop_gradient(x)

    def ones_like(self, x, dtype):
        return self.jnp.ones_like(x, dtype=dtype)

    def zeros_like(self, x):
        return self.jnp.zeros_like(x)

    def cast(self, x, dtype):
        return self.jnp.asarray(x, dtype=dtype)

    def isfinite(self, x):
        return self.jnp.isfinite(x)

    def is_floating(self, x):
        return self.jnp.issubdtype(x.dtype, self.jnp.floating)

    def floor(self, x):
        return self.jnp.floor(x)

    def all_rows(self, x):
        return self.jnp.all(x, axis=1)

    def any_rows(self, x):
        return self.jnp.any(x, axis=1)

    def logical_and(self, a, b):
        return self.jnp.logical_and(a, b)

    def where(self, condition, a, b):
        return self.jnp.where(condition, a, b)

    def broadcast_like(self, x, like):
        return self.jnp.broadcast_to(x, like.shape)

    def unique(self, labels):
        # size=batch keeps the shape static under jit; the padding repeats
        # the smallest label, and no sample maps to it, so its sums are 0.
        batch = labels.shape[0]
        class_ids, sample_to_class = self.jnp.unique(
            labels, size=batch, fill_value=self.jnp.min(labels), return_inverse=True)
        return class_ids, sample_to_class.reshape(-1), batch

    def segment_sum(self, data, segment_ids, num_segments):
        return self.jax.ops.segment_sum(data, segment_ids, num_segments=num_segments)

    def class_totals(self, labels, weights):
        # [batch, batch] comparisons: static shapes, no sort, one fused op.
        same = labels[:, None] == labels[None, :]
        return self.jnp.sum(self.jnp.where(same, weights[None, :], 0), axis=1)

    def scale_rows(self, rows, scale):
        return self.jnp.where((scale != 0)[:, None], rows * scale[:, None], 0)


class _TorchMath:
    """torch, eager: the k classes of the batch, as on TensorFlow."""

    def __init__(self):
        import torch
        self.torch = torch

    def sum_rows(self, x):
        return self.torch.sum(x, dim=1)

    def square(self, x):
        return self.torch.square(x)

    def squared_norms(self, x):
        return self.torch.linalg.vecdot(x, x)  # no [batch, dim] square

    def mean_squared_norm(self, x, factor):
        flat = x.reshape(-1)
        return self.torch.dot(flat, flat) * (factor / x.shape[0])  # one BLAS dot, one scaling

    def stop_gradient(self, x):
        return x.detach()

    def ones_like(self, x, dtype):
        return self.torch.ones_like(x, dtype=dtype)

    def zeros_like(self, x):
        return self.torch.zeros_like(x)

    def cast(self, x, dtype):
        return self.torch.as_tensor(x).to(dtype)

    def isfinite(self, x):
        return self.torch.isfinite(x)

    def is_floating(self, x):
        return x.dtype.is_floating_point

    def floor(self, x):
        return self.torch.floor(x)

    def all_rows(self, x):
        return self.torch.all(x, dim=1)

    def any_rows(self, x):
        return self.torch.any(x, dim=1)

    def logical_and(self, a, b):
        return self.torch.logical_and(a, b)

    def where(self, condition, a, b):
        return self.torch.where(condition, a, b)

    def broadcast_like(self, x, like):
        return x.expand_as(like)

    def unique(self, labels):
        # Segments over the k classes present, never all C: O(batch), not O(C).
        class_ids, sample_to_class = self.torch.unique(labels, return_inverse=True)
        return class_ids, sample_to_class.reshape(-1), class_ids.shape[0]

    def segment_sum(self, data, segment_ids, num_segments):
        out = data.new_zeros((num_segments,) + tuple(data.shape[1:]))
        return out.index_add(0, segment_ids, data)

    def class_totals(self, labels, weights):
        if self.torch.compiler.is_compiling():  # static shapes, as on JAX
            return (labels[:, None] == labels[None, :]).to(weights.dtype) @ weights
        # Eager: a sort of the batch's labels (unique) and a sum per class,
        # measured 3-4x faster on CPU than [batch, batch] comparisons.
        _, sample_to_class = self.torch.unique(labels, return_inverse=True)
        totals = weights.new_zeros(labels.shape[0]).index_add_(0, sample_to_class, weights)
        return totals[sample_to_class]

    def scale_rows(self, rows, scale):
        if self.torch.compiler.is_compiling():
            return self.torch.where((scale != 0)[:, None], rows * scale[:, None], 0.0)
        # Eager: a multiply, then the rows of scale 0 set to 0 (NaN, Inf too);
        # a broadcast bool `where` over [batch, dim] is several times slower.
        out = rows * scale[:, None]
        zero = self.torch.nonzero(scale == 0).reshape(-1)
        return out.index_fill_(0, zero, 0.0) if zero.numel() else out
