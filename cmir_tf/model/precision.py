"""Compute precision of training: which part runs in 16 bits, and loss scaling for float16.

Precisions (``--precision``; the model's ``cnn_dtype`` is :func:`cnn_dtype` of it):

    float32          everything in float32: the paper's numerics
    mixed_bfloat16   the audio encoder's 7 convolutional blocks compute in bfloat16 (A100/H100, TPUs,
                     CPUs with AVX512_BF16 / AMX); float32 variables
    mixed_float16    the same blocks in float16 (V100, T4 and every GPU with float16 tensor cores but
                     no bfloat16), with dynamic loss scaling; float32 variables

What the mixed precisions cover, and why only that: the 7 convolutional blocks are ≈ 99.7 % of the
arithmetic (1.72 GFLOP forward per 256 × 48 patch, against ≈ 6 MFLOP for the FFB head, the genre and
the CF encoders together), so running them in 16 bits gets the speed. Everything else stays float32:
the input BatchNorm, the FFB, the LayerNorms, the genre encoder's masked attention softmax, the CF
encoder and every loss. The NT-Xent logits are cosines / τ (|x| ≤ 10 at τ = 0.1) over the whole global
batch, and their self-similarity mask is −1e9, which float16 cannot hold (its largest finite value is
65504); float16's 10-bit mantissa would also round the softmax's small differences. Variables are
float32 in every precision, so a checkpoint loads into any precision, and exports are always float32
(``export`` rebuilds the encoder with ``cnn_dtype=None``).

Loss scaling (float16 only). float16 flushes magnitudes below 2⁻²⁴ ≈ 6e-8 to zero, and the gradients of
a mean loss through 7 convolutional blocks are often that small: without scaling they vanish silently.
:func:`loss_scaled` wraps the optimizer in Keras's ``LossScaleOptimizer`` (dynamic: initial scale
2¹⁵, doubled after 2000 finite steps in a row): the train step differentiates ``loss × S``, the
optimizer divides the gradients by S and applies them only when every one is finite; otherwise it
skips the update and halves S. The reported loss is the unscaled one. Under several replicas a step is
skipped everywhere when any replica overflowed (:func:`cmir_tf.model.distribute.agree_on_overflow`: Keras 3.15 looks at the
first replica's local gradients only, before the replicas' gradients are summed, so another replica's
overflow would be summed into the weights). The scale and its step counter are part of the run's backup
(:func:`loss_scale_state` / :func:`restore_loss_scale`, written by ``rundir.RunDir``), so a resumed run
continues with the scale it had rather than re-learning it from 2¹⁵ through skipped steps.

TensorFlow and Keras are imported inside the functions, so the command line can read
:data:`PRECISIONS` quickly.
"""
from __future__ import annotations

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LOSS_SCALED_DTYPES = ("mixed_float16", "float16")


def cnn_dtype(precision: str) -> str | None:
    """The audio CNN's Keras dtype policy for ``precision`` (None: the layer's own float32)."""
    return None if precision == "float32" else precision


def needs_loss_scaling(dtype) -> bool:
    """Whether a CNN computing in ``dtype`` (a policy name, or None) needs loss scaling (float16 does)."""
    return dtype is not None and str(getattr(dtype, "name", dtype)) in LOSS_SCALED_DTYPES


def loss_scaled(optimizer, dtype):
    """``optimizer`` (an instance or a Keras name) wrapped in ``LossScaleOptimizer`` when ``dtype`` needs it."""
    import keras

    optimizer = keras.optimizers.get(optimizer)
    if needs_loss_scaling(dtype) and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def is_loss_scaled(optimizer) -> bool:
    """Whether ``optimizer`` is a Keras ``LossScaleOptimizer`` (the float16 wrapper)."""
    import keras

    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def inner_optimizer(optimizer):
    """The optimizer that holds the update state (Adam's moments, ``iterations``): the wrapped one."""
    return optimizer.inner_optimizer if is_loss_scaled(optimizer) else optimizer


def loss_scale_state(optimizer) -> dict | None:
    """``{"scale", "good_steps"}`` of a loss-scaled optimizer (for the run's backup), else None."""
    if not is_loss_scaled(optimizer) or not optimizer.built:
        return None
    return {"scale": float(optimizer.dynamic_scale.numpy()), "good_steps": int(optimizer.step_counter.numpy())}


def restore_loss_scale(optimizer, state: dict | None) -> None:
    """Set a built loss-scaled optimizer's scale and counter from :func:`loss_scale_state`'s dict.

    Nothing to do without a saved state (a run backed up in another precision keeps the initial scale)
    or without loss scaling (a float16 run resumed in float32 needs none).
    """
    if state is None or not is_loss_scaled(optimizer):
        return
    optimizer.dynamic_scale.assign(float(state["scale"]))
    optimizer.step_counter.assign(int(state["good_steps"]))
