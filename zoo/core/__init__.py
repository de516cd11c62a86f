"""The seam: the only package of keras-genzoo that asks which backend runs.

`GenerativeModel` holds the backend-agnostic training step; the modules
`tensorflow`, `jax` and `torch` here compute gradients and apply updates
the way each backend needs, and `backend_module()` picks the one in use.
"""

import importlib

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def backend_name():
    """The Keras backend in use: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def backend_module():
    """The module of `zoo.core` that implements steps for this backend."""
    name = backend_name()
    if name not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"keras-genzoo trains on {', '.join(SUPPORTED_BACKENDS)}; "
            f"KERAS_BACKEND is {name!r}."
        )
    return importlib.import_module(f"zoo.core.{name}")


def compile_step(model, fn, jit_compile=None):
    """The body `fn(i, state)` of a `keras.ops.fori_loop` inside a function
    compiled by `model.compile_function(..., jit_compile=jit_compile)`.

    On JAX and TensorFlow `fn` itself: the loop is compiled whole with the
    function. On PyTorch, where the loop runs in Python, `jit_compile=True`
    traces `fn` once and compiles it with TorchInductor (the model's weights
    and `i` are inputs, so one compilation serves every iteration and
    follows later training); `"traced"` traces it the same way and runs the
    graph without compiling it (a second instead of 10-40 s, slower per
    step; what `compiles_steps` picks under "auto"); otherwise `fn` runs
    eagerly. So `fn` must keep
    every shape static, take everything it reads from the call in `state`
    (not from tensors closed over), use `i` as a tensor (`ops.take`,
    `ops.where`, `ops.slice_update`, not Python slicing), and neither draw
    noise nor update variables (draw the noise before the loop).
    """
    return backend_module().compile_step(model, fn, jit_compile=jit_compile)


def compile_loop(model, fn, jit_compile=None, unroll=1):
    """`loop(lower, upper, state)`: `keras.ops.fori_loop(lower, upper,
    compile_step(model, fn, jit_compile), state)`, for use inside a function
    compiled by `model.compile_function`, with `fn` written as
    `compile_step` asks.

    On PyTorch with `jit_compile=True`, `unroll` > 1 traces `unroll`
    consecutive iterations into one compiled call (for small steps, whose
    time is mostly the call: faster per iteration, slower to compile) and
    runs the last `(upper - lower) % unroll` iterations eagerly. Elsewhere
    `unroll` changes nothing.
    """
    unroll = int(unroll)
    if unroll < 1:
        raise ValueError(f"`unroll` must be >= 1; received {unroll}.")
    module = backend_module()
    if hasattr(module, "compile_loop"):  # PyTorch, whose loops run in Python
        return module.compile_loop(model, fn, jit_compile=jit_compile, unroll=unroll)
    # JAX, TensorFlow: the loop compiles whole with the function around it.
    step = compile_step(model, fn, jit_compile=jit_compile)
    return lambda lower, upper, state: keras.ops.fori_loop(lower, upper, step, state)


# On PyTorch, `jit_compile="auto"` compiles the steps of a sampling or
# generation loop of more than this many steps with TorchInductor (10-45 s
# on a 2-core CPU, then the fastest steps), and traces the steps of shorter
# loops (`compile_step(..., "traced")`: about a second, then 1.5-6x faster
# than eager Keras there; README, Performance) once loops of their setting
# have run more than this many steps in all.
LONG_LOOP = 100

# On PyTorch, `compile(jit_compile="auto")` traces the training step of a
# `fit` planned for at least this many steps and runs the traced graph
# without Keras's layer calls (`zoo.core.torch_step.AutoStep`): the trace
# costs 0.5-1.4 s on a 2-core CPU and saved 3.6-12 ms per step against
# eager Keras there. Whole fits (docs, Performance) were faster traced
# from 100 steps for the GAN, VAE, RealNVP and DDPM and from about 165 for
# the GPT (0.7 s slower at 100), and slower at 50 steps for all but the
# DDPM (even). The traced step draws the eager step's noise and computes
# the same operations: this threshold changes the speed of a `fit`, never
# its random numbers. ("auto" never compiles with TorchInductor; that is
# `jit_compile=True`.)
TRACE_FIT = 100


def compiles_steps(jit_compile, num_steps, steps_before=0, compiled_before=False):
    """How a sampling or generation loop of `num_steps` steps runs its
    steps under a user's `jit_compile` setting: the `jit_compile` to give
    `compile_step` / `compile_loop`. True (compiled) and False (eager) as
    given. `"auto"`, on PyTorch, whose loops run in Python: True for a loop
    of more than `LONG_LOOP` steps or where a step of this loop's setting
    was compiled before (`compiled_before`; it is kept); else `"traced"`
    once loops of this setting have run more than `LONG_LOOP` steps in all,
    this one included (`steps_before`: the steps run before); else False (a
    short first run steps eagerly, cheaper than a trace). `"auto"` on JAX
    and TensorFlow: False, as the loop compiles whole with its function.
    Anything else is a clear error.
    """
    if not (isinstance(jit_compile, bool) or jit_compile == "auto"):
        raise ValueError(
            f'`jit_compile` must be "auto", True or False; received {jit_compile!r}.'
        )
    if jit_compile != "auto":
        return jit_compile
    if not hasattr(backend_module(), "compile_loop"):  # the loop compiles whole
        return False
    if num_steps > LONG_LOOP or compiled_before:
        return True
    return "traced" if num_steps + steps_before > LONG_LOOP else False


from zoo.core.multi_optimizer import MultiOptimizer  # noqa: E402
from zoo.core.model import GenerativeModel  # noqa: E402
from zoo.core.nonfinite import NonFiniteUpdateError  # noqa: E402

__all__ = [
    "GenerativeModel", "LONG_LOOP", "MultiOptimizer", "NonFiniteUpdateError", "TRACE_FIT", "backend_module", "backend_name",
    "compile_loop", "compile_step", "compiles_steps",
]
