"""PyTorch: eager steps; gradients from `.backward()` on the player's weights.

`backward(inputs=...)` accumulates gradients into the updated player's
parameters only, so another player's `.grad` is never touched, and the
update runs under `torch.no_grad()` as Keras's own torch trainer does.
"""

import weakref

import optree
import torch
from keras import StatelessScope

from zoo.core import nonfinite, torch_distributed, torch_graph, torch_step
from zoo.core.compat import private
from zoo.core.torch_step import (  # noqa: F401
    evaluate_arguments,
    fit_arguments,
    make_test_function,
    make_train_function,
    reduce_logs,
)

torch_distributed.pin_device()

# Private PyTorch names, fetched once (`zoo.core.compat`).
_foreach_mul = private("torch.foreach_mul")
_foreach_lerp_ = private("torch.foreach_lerp_")


def train_step(model, data):
    with torch_distributed.examples(data):  # (under torchrun, which weigh its gradients)
        logs = model.run_step(data, training=True)
    # Logs over every rank's examples (a traced step's: after it runs).
    if torch_distributed.active() and not torch_step.tracing():
        logs = torch_distributed.reduce_step_logs(model, logs)
    return logs


def test_step(model, data):
    return model.run_step(data, training=False)


def minimize(model, loss_fn, variables, optimizer, record=None):
    if torch_step.tracing():  # inside `compile(jit_compile=True)`'s step
        return torch_step.minimize(model, loss_fn, variables, optimizer, record)
    params = [v.value for v in variables]
    for p in params:
        p.grad = None
    guarded = nonfinite.guarded(optimizer)
    state = nonfinite.state_variables(model) if guarded else []
    with torch.no_grad():  # (one fused copy of the statistics)
        before = _foreach_mul([v.value for v in state], 1.0) if state else []
    with torch.enable_grad():
        loss = loss_fn()
        optimizer.scale_loss(loss).backward(inputs=params)
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    with torch.no_grad():
        if torch_distributed.active():
            # Every rank's gradient of its own batch, averaged: the update
            # of the global batch, the same on every rank (as DDP's).
            grads = torch_distributed.average_gradients(grads)
        if record is not None:
            record(grads)
        if not guarded:
            optimizer.apply(grads, variables)
            return loss.detach()
        finite = torch_step.all_finite(grads)
        nonfinite.note(model, finite)
        if bool(finite):  # (eager: a Python branch)
            optimizer.apply(grads, variables)
        else:  # the BatchNorm statistics from before the loss ran
            for variable, value in zip(state, before):
                variable.assign(value)
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


# A product with at most this many rows (batch-1 decoding: one token)
# becomes multiply-and-sum that Inductor fuses with its neighbours, on the
# CPU: an external GEMM call costs more there than its arithmetic. With
# more rows the fused loop reads the weights once per row and loses to the
# GEMM: GPT generation at batch 2 / 4 / 8 ran 73 / 77 / ~65 tokens/s fused
# up to 16 rows and 93 / 148 / 240 with GEMMs (benchmarks/generation.py).
_FUSED_MATMUL_ROWS = 1


def _small_matmul(a, b):
    if a.device.type == "cpu" and a.shape[0] <= _FUSED_MATMUL_ROWS:
        return (a.unsqueeze(2) * b.unsqueeze(0)).sum(dim=1)
    return NotImplemented


def compile_step(model, fn, jit_compile=None, stride=1):
    """`fn(i, state)` traced once into an aten graph (`make_fx`, on fake
    tensors) with the model's weights and the loop index as inputs: no
    Keras dispatch per step, one trace for every iteration (shapes are
    static, `i` a tensor). `jit_compile=True` compiles the graph with
    TorchInductor and its C++ wrapper (no Python per step, no guards);
    `"traced"` runs it operation by operation through PyTorch's Python
    bindings (`torch_graph.lean_graph`: a trace costs about a second, a
    compilation 10-40 s); anything else returns `fn`, which runs eagerly.

    When `fn` returns a state of the structure it took (a loop's carry), a
    returned tensor of the shape and dtype of the one it replaces is
    written into that one in place, inside the graph: a preallocated cache
    updated at one position is not copied at every step. Only a tensor that
    the previous iteration (`i - 1`) returned is reused so; a state handed
    in from outside is copied first, so the caller's tensors never change.
    (`stride`: the index advances by this much per call, see `compile_loop`.)
    """
    if jit_compile is not True and jit_compile != "traced":
        return fn
    inductor = jit_compile is True
    variables = list(model.variables)
    count = len(variables)
    compiled = {"last": (), "last_index": None}

    def trace(args, spec):
        def pure(*args):
            mapping = list(zip(variables, args[:count]))
            with StatelessScope(state_mapping=mapping):
                out = fn(args[count], optree.tree_unflatten(spec, args[count + 1 :]))
            out, out_spec = _flatten(out)
            # Outputs that are inputs (loop constants) bypass the graph: an
            # output aliasing an input costs a copy per call.
            inputs = {id(a): k for k, a in enumerate(args)}
            passed = [inputs.get(id(o)) for o in out]
            donated = []
            if out_spec == spec:
                for k, o in enumerate(out):
                    a = args[count + 1 + k]
                    if passed[k] is None and o.shape == a.shape and o.dtype == a.dtype:
                        a.copy_(o)  # Inductor writes `o` into `a` where it can
                        passed[k] = count + 1 + k
                        donated.append(count + 1 + k)
            compiled.update(spec=out_spec, passed=passed, donated=donated)
            return [o for o, k in zip(out, passed) if k is None]

        try:
            # Fake tensors: a conversion to NumPy or Python inside `fn` fails
            # here instead of freezing the trace's values into the graph.
            graph = private("torch.make_fx")(
                pure, tracing_mode="fake",
                decomposition_table={torch.ops.aten.mm.default: _small_matmul} if inductor else None,
            )(*args)
        except RuntimeError as error:
            if "numpy" not in str(error) and "data-dependent" not in str(error):
                raise
            raise RuntimeError(
                "compile_step: the step function turns a tensor into NumPy or "
                "Python values, which a traced step cannot do (every tensor "
                "depends on the step's inputs); use keras.ops throughout "
                "(e.g. ops.convert_to_tensor on NumPy constants before mixing "
                f"them with tensors). {error}"
            ) from error
        if not inductor:
            compiled["fn"] = torch_graph.lean_graph(graph, count, []).forward
            return
        compiled["fn"] = private("torch.inductor_compile")(
            graph, args,
            # Shapes never change between calls: no checks of them per call.
            options={"cpp_wrapper": True, "size_asserts": False,
                     "alignment_asserts": False, "scalar_asserts": False},
        )

    def step(i, state):
        # The stored tensors (assignments copy into them in place), and
        # optree: `.value` and `keras.tree` (pure Python on PyTorch) cost
        # more than the step's arithmetic.
        flat, spec = _flatten(state)
        device = flat[0].device if flat else None
        args = [v._value for v in variables]
        args.append(torch.as_tensor(i, dtype=torch.int32, device=device))
        args.extend(flat)
        if "fn" not in compiled:
            trace(list(args), spec)
        # A donated input is written in place: only the previous
        # iteration's own result may be, anything else is copied first.
        last = compiled["last"] if compiled["last_index"] == i - stride else ()
        for k, ref in zip(compiled["donated"], last or [None] * len(compiled["donated"])):
            if ref is None or ref() is not args[k]:
                args[k] = args[k].clone()
        out = iter(compiled["fn"](*args))
        out = [next(out) if k is None else args[k] for k in compiled["passed"]]
        compiled["last"] = [weakref.ref(args[k]) for k in compiled["donated"]]
        compiled["last_index"] = i
        return optree.tree_unflatten(compiled["spec"], out)

    return step


def compile_loop(model, fn, jit_compile=None, unroll=1):
    # Unrolled only for TorchInductor: a traced graph runs operation by
    # operation, so a call per iteration costs little more.
    if jit_compile is not True or unroll == 1:
        step = compile_step(model, fn, jit_compile)
        return lambda lower, upper, state: _python_loop(step, lower, upper, state)

    def unrolled(i, state):
        for j in range(unroll):
            state = fn(i + j, state)
        return state

    # `unroll` iterations per compiled call: the call, not the arithmetic,
    # is most of a small step's time. The last (upper - lower) % unroll
    # iterations run eagerly rather than compiling a second graph.
    step = compile_step(model, unrolled, True, stride=unroll)

    def loop(lower, upper, state):
        full = lower + (upper - lower) // unroll * unroll
        state = _python_loop(step, lower, full, state, unroll)
        return _python_loop(fn, full, upper, state)

    return loop


def _python_loop(step, lower, upper, state, stride=1):
    for i in range(lower, upper, stride):
        state = step(i, state)
    return state


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
        _foreach_lerp_(averages, [v.detach() for v in values], 1.0 - decay)
    return averages
