"""TensorFlow: the step runs inside Keras's `tf.function`; gradients by tape.

Nested tapes give second-order gradients: the tape in `gradient` records
inside the tape of `minimize`, which differentiates through it.
"""

import tensorflow as tf


def train_step(model, data):
    return model.run_step(data, training=True)


def test_step(model, data):
    return model.run_step(data, training=False)


def minimize(model, loss_fn, variables, optimizer):
    with tf.GradientTape() as tape:
        loss = loss_fn()
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    optimizer.apply(grads, variables)
    return loss


def gradient(model, fn, x):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x)


def compile_function(model, fn, seed_state, jit_compile=None):
    compiled = tf.function(fn, jit_compile=bool(jit_compile), reduce_retracing=True)

    def call(state, *args):
        seed_state.assign(state)
        return compiled(*args)

    return call
