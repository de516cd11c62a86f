"""PyTorch: eager steps; gradients from `.backward()` on the player's weights.

`backward(inputs=...)` accumulates gradients into the updated player's
parameters only, so another player's `.grad` is never touched, and the
update runs under `torch.no_grad()` as Keras's own torch trainer does.
"""

import torch


def train_step(model, data):
    return model.run_step(data, training=True)


def test_step(model, data):
    return model.run_step(data, training=False)


def minimize(model, loss_fn, variables, optimizer, record=None):
    params = [v.value for v in variables]
    for p in params:
        p.grad = None
    with torch.enable_grad():
        loss = loss_fn()
        optimizer.scale_loss(loss).backward(inputs=params)
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    if record is not None:
        with torch.no_grad():
            record(grads)
    with torch.no_grad():
        optimizer.apply(grads, variables)
    return loss.detach()


def gradient(model, fn, x):
    # Keras runs test steps under `no_grad`; a penalty needs the graph.
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        y = fn(x)
        (grad,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    return grad


def compile_function(model, fn, seed_state, jit_compile=None):
    compiled = torch.compile(fn) if jit_compile else fn

    def call(state, *args):
        seed_state.assign(state)
        with torch.no_grad():
            return compiled(*args)

    return call


# Hooks for callbacks: the parameters hold the live weights at all times.


def trainable_values(model, copy=False):
    values = [v.value for v in model.trainable_variables]
    return [v.detach().clone() for v in values] if copy else values


def set_trainable_values(model, values):
    for variable, value in zip(model.trainable_variables, values):
        variable.assign(value)


def moving_average(averages, values, decay):
    # In place, one fused kernel per dtype/device group.
    with torch.no_grad():
        torch._foreach_lerp_(averages, [v.detach() for v in values], 1.0 - decay)
    return averages
