"""PyTorch: eager steps; gradients from `.backward()` on the player's weights.

`backward(inputs=...)` accumulates gradients into the updated player's
parameters only, so another player's `.grad` is never touched, and the
update runs under `torch.no_grad()` as Keras's own torch trainer does.
"""

import optree
import torch
from keras import StatelessScope
from torch.fx.experimental.proxy_tensor import make_fx


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
    # Eager, whatever `jit_compile` says: `torch.compile` of a whole loop
    # unrolls it (minutes to compile, and a recompilation per trip count).
    # A loop compiles its body instead, with `compile_step`.

    def call(state, *args):
        seed_state.assign(state)
        with torch.no_grad():
            return fn(*args)

    return call


def _flatten(structure):
    return optree.tree_flatten(structure, none_is_leaf=True)


def compile_step(model, fn, jit_compile=None):
    """`fn(i, state)` traced once into an aten graph (`make_fx`) with the
    model's weights and the loop index as inputs, and compiled by
    TorchInductor: no Keras or Python dispatch per step, no guards, one
    compilation for every iteration (shapes are static, `i` a tensor)."""
    if jit_compile is not True:
        return fn
    variables = list(model.variables)
    compiled = {}

    def trace(args, spec):
        count = len(variables)

        def pure(*args):
            mapping = list(zip(variables, args[:count]))
            with StatelessScope(state_mapping=mapping):
                out = fn(args[count], optree.tree_unflatten(spec, args[count + 1 :]))
            out, compiled["spec"] = _flatten(out)
            # Outputs that are inputs (loop constants) bypass the graph: an
            # output aliasing an input costs a copy per call.
            inputs = {id(a): k for k, a in enumerate(args)}
            compiled["passed"] = [inputs.get(id(o)) for o in out]
            return [o for o in out if id(o) not in inputs]

        graph = make_fx(pure)(*args)
        # Shapes never change between calls: no checks of them per call.
        compiled["fn"] = torch._inductor.compile(graph, args, options={"size_asserts": False})

    def step(i, state):
        # The stored tensors (assignments copy into them in place), and
        # optree: `.value` and `keras.tree` (pure Python on PyTorch) cost
        # more than the step's arithmetic.
        values = [v._value for v in variables]
        flat, spec = _flatten(state)
        device = flat[0].device if flat else None
        args = [*values, torch.as_tensor(i, dtype=torch.int32, device=device), *flat]
        if "fn" not in compiled:
            trace(list(args), spec)
        out = iter(compiled["fn"](*args))
        out = [next(out) if k is None else args[k] for k in compiled["passed"]]
        return optree.tree_unflatten(compiled["spec"], out)

    return step


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
