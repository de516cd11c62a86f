"""TensorFlow: the step runs inside Keras's `tf.function`; gradients by tape.

Nested tapes give second-order gradients: the tape in `gradient` records
inside the tape of `minimize`, which differentiates through it.
"""

import tensorflow as tf


def train_step(model, data):
    return model.run_step(data, training=True)


def test_step(model, data):
    return model.run_step(data, training=False)


def minimize(model, loss_fn, variables, optimizer, record=None):
    with tf.GradientTape() as tape:
        loss = loss_fn()
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    if record is not None:
        record(
            [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
             for g in grads]
        )
    optimizer.apply(grads, variables)
    return loss


def gradient(model, fn, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x)


def compile_function(model, fn, seed_state, jit_compile=None):
    # "auto": XLA, which fuses a decoding step's many small ops (a loop of
    # them runs 20-50x faster than in a plain graph).
    jit_compile = jit_compile is True or jit_compile == "auto"
    compiled = tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)

    def call(state, *args):
        seed_state.assign(state)
        return compiled(*args)

    return call


def compile_step(model, fn, jit_compile=None):
    # The loop around the step is compiled whole by `compile_function`.
    return fn


# Hooks for callbacks: the variables hold the live weights at all times.


def trainable_values(model, copy=False):
    if copy:
        return [tf.identity(v.value) for v in model.trainable_variables]
    return [v.value for v in model.trainable_variables]


def set_trainable_values(model, values):
    for variable, value in zip(model.trainable_variables, values):
        variable.assign(value)


@tf.function(reduce_retracing=True)
def _moving_average(averages, values, decay):
    return [
        a * tf.cast(decay, a.dtype) + tf.cast(v, a.dtype) * tf.cast(1 - decay, a.dtype)
        for a, v in zip(averages, values)
    ]


def moving_average(averages, values, decay):
    return _moving_average(
        list(averages), [tf.convert_to_tensor(v) for v in values], tf.constant(decay, tf.float32)
    )
