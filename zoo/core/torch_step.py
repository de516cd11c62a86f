"""PyTorch: the whole training step traced once and compiled by TorchInductor.

`compile(jit_compile=True)` on PyTorch runs each training step as one
compiled graph instead of eager Keras code: no `Layer.__call__`
bookkeeping, no Python dispatch per operation. The step is traced once per
input signature with `make_fx` as a pure function of

    (every variable's value: weights, non-trainable state such as BatchNorm
     statistics and EMA copies, seed-generator states, every optimizer's
     variables, metric variables;  the batch)
    -> (the new value of every variable the step changed;  the logs)

under a `keras.StatelessScope`, compiled with `torch._inductor.compile`,
and each call writes the new values back into the variables (so callbacks,
`save` and eager code see the live state at every batch end).

What the trace needs, and where it is handled:

- gradients: `minimize` uses `torch.autograd.grad` (make_fx records the
  backward operations, a gradient penalty's double backward included) and
  the optimizer's own `apply` updates the traced values;
- randomness: Keras's PyTorch random ops seed a `torch.Generator` from a
  Python int read off the seed state, which a trace would freeze into a
  constant (the same noise every step). While tracing, `keras.random`'s
  draws are replaced by single opaque graph operations that draw the seed
  in the graph (the seed state is a graph input, updated by the graph) and
  call Keras's own function with it when the graph runs: every tier,
  eager, traced and compiled, draws the same numbers from the same stream,
  whatever the length of the `fit` or the tier "auto" picks;
- anything the trace cannot represent (a Python branch on a tensor value,
  a draw without a tracked seed, a variable assigned that the step does
  not thread) makes the step fall back to eager execution with a warning,
  never a silently frozen value.

The traced graph can also run as it is, operation by operation, without
TorchInductor (`CompiledStep(inductor=False)`): a trace costs about a
second, against 20-50 s of compilation, and still skips Keras's layer
calls, autograd and the optimizers' Python; it updates the variables in
place where it can, runs an optimizer's update only where its gradients
are finite (a Python branch, where a compiled graph selects) and calls
each operation through PyTorch's Python bindings
(`zoo.core.torch_graph.lean_graph`). `jit_compile="auto"` runs a `fit` of
`zoo.core.TRACE_FIT` steps or more this way (`AutoStep`), and
`zoo.core.compile_step(..., jit_compile="traced")` the steps of sampling
and generation loops.
"""

import contextlib
import inspect
import threading
import warnings

import keras
import optree
import torch
from keras import StatelessScope

from zoo.core import nonfinite, torch_distributed
from zoo.core.compat import private
from zoo.core.torch_graph import copied_back, lean_graph

SeedGenerator = private("keras.SeedGenerator")
# Private PyTorch names, fetched once (a step calls them every time).
_foreach_copy_ = private("torch.foreach_copy_")
_foreach_norm = private("torch.foreach_norm")

_local = threading.local()


def tracing():
    """True while a training step is being traced for compilation."""
    return getattr(_local, "tracing", False)


class _Untraceable(Exception):
    pass


@contextlib.contextmanager
def _replaced_random(replaced):
    module = private("keras.torch.random")
    saved = {name: getattr(module, name) for name in replaced}
    try:
        for name, fn in replaced.items():
            setattr(module, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


# ---------------------------------------------------------------------------
# Keras's own PyTorch draws as single operations of a traced graph: the
# seed is drawn in the graph (the seed state is a graph input, updated by
# the graph), and each draw is one opaque operation that calls Keras's
# function at run time with that seed: the eager step's numbers. Inductor
# calls the operation as an external kernel, so the compiled step draws
# them too. (An Inductor graph loaded from its on-disk cache calls the op
# with the keys of the trace this process has just made of the same graph:
# `_DRAWS` always holds this process's draws.)


class _Drawn(SeedGenerator):
    """A seed already drawn (a tensor), as Keras's random functions take a
    `SeedGenerator`: their `draw_seed` returns it. No state variable (the
    base class's `__init__` is not called)."""

    def __init__(self, seed):
        self.seed = seed
        self._initial_seed = 0  # a seeded generator (Keras's dropout asks)

    def next(self, ordered=True):
        return self.seed


# Per traced draw: (run(seed, tensors), output shape, output dtype); a few
# entries per trace, kept for the life of the process.
_DRAWS = []


def _keras_random(seed, tensors, key):
    """Runs the traced draw number `key` with the seed tensor `seed`."""
    return _DRAWS[key][0](seed, tensors)


@torch.library.custom_op("zoo::keras_random", mutates_args=())
def _keras_random_op(seed: torch.Tensor, tensors: list[torch.Tensor], key: int) -> torch.Tensor:
    return _keras_random(seed, tensors, key)


@_keras_random_op.register_fake
def _(seed, tensors, key):
    _, shape, dtype = _DRAWS[key]
    return torch.empty(shape, dtype=dtype, device=seed.device)


def _opaque(fn, seed, shape, dtype, /, *args, **kwargs):
    """`fn(*args, **kwargs, seed=...)`, one of Keras's PyTorch random
    functions, as one operation of the traced graph; its seed is drawn in
    the graph, and any tensor among the arguments is an input of the
    operation (no gradient flows through it: a draw has none)."""
    draw_seed = private("keras.draw_seed")
    flat, spec = optree.tree_flatten((args, kwargs), none_is_leaf=True)
    positions = [k for k, v in enumerate(flat) if isinstance(v, torch.Tensor)]
    tensors = [flat[k].detach() for k in positions]
    for k in positions:  # (not kept: the trace's tensors)
        flat[k] = None

    def run(seed, tensors):
        values = list(flat)
        for k, tensor in zip(positions, tensors):
            values[k] = tensor
        args, kwargs = optree.tree_unflatten(spec, values)
        return fn(*args, **kwargs, seed=_Drawn(seed))

    _DRAWS.append((run, tuple(int(d) for d in shape), dtype))
    return torch.ops.zoo.keras_random(draw_seed(seed), tensors, len(_DRAWS) - 1)


def _keras_draw_ops():
    floatx = private("keras.floatx")
    module = private("keras.torch.random")
    to_torch_dtype = private("keras.torch.to_torch_dtype")
    _get_concrete_noise_shape = private("keras.torch.noise_shape")

    original = {name: getattr(module, name) for name in (
        "normal", "uniform", "randint", "truncated_normal", "categorical", "dropout",
        "gamma", "binomial", "beta",
    )}

    def draw(name, shape_of=lambda arguments: arguments["shape"]):
        signature = inspect.signature(original[name])

        def fn(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            arguments = dict(arguments.arguments)
            seed = arguments.pop("seed")
            dtype = arguments["dtype"] = to_torch_dtype(arguments["dtype"] or floatx())
            return _opaque(original[name], seed, shape_of(arguments), dtype, **arguments)

        return fn

    def dropout(inputs, rate, noise_shape=None, seed=None):
        # Keras's condition for its seeded dropout; the rest (rates 0 and
        # 1, and an unseeded dropout: torch's own, with torch's global
        # generator) draws nothing from `seed` and traces as it is.
        seeded = (seed is not None and not (
            isinstance(seed, SeedGenerator) and seed._initial_seed is None
        )) or noise_shape is not None
        if rate in (0.0, 1.0) or not seeded:
            return original["dropout"](inputs, rate, noise_shape, seed)
        # The mask Keras draws: its dropout of ones of the noise's shape
        # (0 or 1 / keep); applied here, so gradients flow to `inputs`.
        keep = 1.0 - rate
        shape = tuple(_get_concrete_noise_shape(inputs, noise_shape))
        kept = _opaque(original["dropout"], seed, shape, inputs.dtype,
                       torch.ones(shape, dtype=inputs.dtype, device=inputs.device), rate)
        mask = torch.broadcast_to(kept != 0, inputs.shape)
        return torch.where(mask, inputs / keep, torch.zeros_like(inputs))

    ops = {name: draw(name) for name in original if name not in ("categorical", "dropout")}
    ops["categorical"] = draw(
        "categorical", lambda arguments: (arguments["logits"].shape[0], arguments["num_samples"])
    )
    ops["dropout"] = dropout
    return ops


def _keras_draws():
    """Replaces `keras.random`'s PyTorch draws by single graph operations
    that run Keras's own (`_opaque`), while tracing a step. (`shuffle` is left as it is: tracing it fails,
    and the step runs eagerly.)"""
    return _replaced_random(_keras_draw_ops())


# ---------------------------------------------------------------------------
# The traced versions of the core's gradient operations.


def all_finite(grads):
    """A boolean scalar tensor: every entry of every gradient is finite. One
    fused norm per dtype group: NaN or Inf anywhere makes the sum so (as
    does a norm past the float32 range, about 1e19 per entry). The eager
    and the traced step decide alike."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.tensor(True)
    return torch.isfinite(torch.stack([n.float() for n in _foreach_norm(present)]).sum())


def minimize(model, loss_fn, variables, optimizer, record=None):
    """`minimize` inside a trace: `autograd.grad` and the optimizer's
    `apply` on the scope's values (its in-place updates of those values are
    traced; `run` reads them back)."""
    guarded = nonfinite.guarded(optimizer)
    kept = nonfinite.state_variables(model) if guarded else []
    before = [v.value.detach().clone() for v in kept]
    leaves = [v.value.detach().requires_grad_(True) for v in variables]
    for variable, leaf in zip(variables, leaves):
        variable.assign(leaf)
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(
            optimizer.scale_loss(loss), leaves, allow_unused=True
        )
    grads = list(grads)
    with torch.no_grad():
        if torch_distributed.active():  # (as the eager step: before anything reads them)
            grads = torch_distributed.average_gradients(grads, traced=True)
        if record is not None:
            record(grads)
        if not guarded:
            optimizer.apply(grads, variables)
            for variable in variables:
                variable.assign(variable.value.detach())
            return loss.detach()
        finite = all_finite(grads)
        nonfinite.note(model, finite)
        # A non-finite update leaves weights and optimizer state as they
        # were: a graph has no branch, so the update runs and the old
        # values (copies taken first: the optimizer updates in place) are
        # selected back in, in place (`out=`: no new tensors, and the
        # variables' storage stays the graph's, `_in_place`). Run operation
        # by operation, `_branch` turns this into a Python branch.
        state = list(variables) + list(optimizer.variables)
        old = [v.value.detach().clone() for v in state] + before
        optimizer.apply(grads, variables)
        for variable, value in zip(state + kept, old):
            new = variable.value.detach()
            torch.where(finite, new, value, out=new)
            variable.assign(new)
    return loss.detach()


# ---------------------------------------------------------------------------
# The compiled step.


def _signature(leaves):
    return tuple(
        None if x is None else (tuple(x.shape), x.dtype, x.device) for x in leaves
    )


class CompiledStep:
    """`model.train_step` (or `test_step`) traced and compiled, with eager
    fallback. Call it as Keras's torch trainer calls its step function:
    `step(data)` with `data` a one-element list holding the batch.
    `inductor=False` runs the traced graph operation by operation instead
    of compiling it: no Keras layer calls, autograd or optimizer Python
    around the arithmetic, for the cost of a trace (about a second)."""

    def __init__(self, model, training=True, max_signatures=4, warn=True, inductor=True):
        self.model = model
        self.training = training
        self.inductor = inductor
        # More batch shapes than this run eagerly, with a warning if `warn`.
        self.max_signatures = max_signatures
        self.warn = warn
        self.cache = {}
        self.variables = None
        self.fallback = None  # the reason, once the step has fallen back

    def _state_variables(self):
        model = self.model
        seen, variables = set(), []
        groups = [model.variables, model.metrics_variables]
        if self.training:
            groups.append(model.optimizer.variables)
        for group in groups:
            for v in group:
                if id(v) not in seen:
                    seen.add(id(v))
                    variables.append(v)
        return variables

    def eager(self, data):
        step = self.model.train_step if self.training else self.model.test_step
        return step(data)

    def __call__(self, data):
        data = data[0]
        if self.fallback is not None:
            return self.eager(data)
        leaves, spec = optree.tree_flatten(data, none_is_leaf=True)
        key = (spec, _signature(leaves), bool(getattr(self.model, "_gradient_norms_on", False)))
        entry = self.cache.get(key)
        if entry is None:
            if len(self.cache) >= self.max_signatures:
                if not self.warn:
                    return self.eager(data)
                warnings.warn(
                    f"{type(self.model).__name__}: more than {self.max_signatures} "
                    "different batch shapes; the compiled step runs them "
                    "eagerly instead of compiling each (pad or drop the "
                    "remainder batch).", stacklevel=2,
                )
                return self.eager(data)
            try:
                entry = self._trace(leaves, spec)
            except Exception as error:  # noqa: BLE001 -- any failure: eager
                # An error the eager step raises too (wrong data) is the
                # caller's; only a step that runs eagerly falls back.
                logs = self.eager(data)
                self.fallback = f"{type(error).__name__}: {error}"
                warnings.warn(
                    f"{type(self.model).__name__}: the PyTorch "
                    f"{'training' if self.training else 'test'} step could not be "
                    f"traced (to {'compile' if self.inductor else 'run'} it as a "
                    f"graph), so it runs eagerly ({self.fallback}).",
                    stacklevel=2,
                )
                return logs
            self.cache[key] = entry
        logs = self._run(entry, leaves)
        if self.training and torch_distributed.active():
            # Over every rank's examples, as the eager step's (`train_step`),
            # from the trackers the graph has just updated.
            logs = torch_distributed.reduce_step_logs(self.model, logs)
        return logs

    def _run(self, entry, leaves):
        fn, changed, copied, log_spec = entry
        values = [v._value for v in self.variables]
        with torch.no_grad():  # (the weights require gradients)
            out = fn(*values, *[x for x in leaves if x is not None])
            _foreach_copy_([values[changed[i]] for i in copied], [out[i] for i in copied])
        return optree.tree_unflatten(log_spec, out[len(changed):])

    def _trace(self, leaves, spec):
        FakeTensorMode = private("torch.FakeTensorMode")
        make_fx = private("torch.make_fx")
        ShapeEnv = private("torch.ShapeEnv")
        global_seed_generator = private("keras.global_seed_generator")

        # Made now, not inside the trace, where its state would be a traced
        # value that outlives it. (An unseeded draw in the step assigns it,
        # which makes the trace fail below.)
        global_seed_generator()
        model = self.model
        if self.variables is None:
            self.variables = self._state_variables()
        variables = self.variables
        count = len(variables)
        present = [k for k, x in enumerate(leaves) if x is not None]
        meta = {}

        def pure(*args):
            # Clones: the optimizers update their values in place, and a
            # graph input must not be mutated.
            values = [a.clone() for a in args[:count]]
            versions = [v._version for v in values]
            data = [None] * len(leaves)
            for k, x in zip(present, args[count:]):
                data[k] = x
            data = optree.tree_unflatten(spec, data)
            mapping = list(zip(variables, values))
            _local.tracing = True
            try:
                with torch.enable_grad(), _keras_draws(), StatelessScope(
                    state_mapping=mapping
                ) as scope:
                    step = model.train_step if self.training else model.test_step
                    logs = step(data)
            finally:
                _local.tracing = False
            known = {id(v) for v in variables}
            in_place = set()
            if self.training:
                in_place = {id(v) for v in model.optimizer.variables}
            stray = [k for k in scope.state_mapping if k not in known]
            if stray:
                raise _Untraceable(
                    f"the step assigns {len(stray)} variable(s) that are not "
                    "the model's, its optimizer's or its metrics' (for example "
                    "a draw without `seed=`, from Keras's global generator)"
                )
            changed, outputs = [], []
            for k, variable in enumerate(variables):
                new = scope.get_current_value(variable)
                # Optimizers update their slots in place with `_foreach_*`
                # ops, which do not bump a traced tensor's version: always
                # outputs.
                if (new is values[k] and new._version == versions[k]
                        and id(variable) not in in_place):
                    continue
                changed.append(k)
                outputs.append(new.detach().to(args[k].dtype))
            log_leaves, meta["log_spec"] = optree.tree_flatten(logs, none_is_leaf=True)
            meta["changed"] = changed
            return outputs + [torch.as_tensor(x).detach() for x in log_leaves]

        # Fake tensors in a mode with a (static) shape environment: tracing
        # runs no arithmetic, a value read in Python is an error (so the
        # step falls back instead of freezing it), and Inductor's on-disk
        # cache can key the graph (a later process compiles it in seconds).
        mode = FakeTensorMode(
            shape_env=ShapeEnv(), static_shapes=True, allow_non_fake_inputs=True
        )
        args = [v._value.detach() for v in variables] + [leaves[k] for k in present]
        args = [mode.from_tensor(a, static_shapes=True) for a in args]
        with torch.no_grad():
            graph = make_fx(pure, tracing_mode="fake")(*args)
        changed = meta["changed"]
        if self.inductor:
            fn, copied = private("torch.inductor_compile")(graph, args), range(len(changed))
        else:
            graph = lean_graph(graph, count, changed)
            fn, copied = graph.forward, copied_back(graph.graph, count, changed)
        return fn, changed, list(copied), meta["log_spec"]


class FitLength(keras.callbacks.Callback):
    """Tells the model how many training steps the running `fit` plans:
    `model._planned_fit = (steps or None,)`, a new tuple for every `fit`,
    set before its first step (`steps` is None where the number of batches
    is unknown)."""

    def on_train_begin(self, logs=None):
        self._plan(None)

    def on_epoch_begin(self, epoch, logs=None):
        if self.model._planned_fit[0] is None and self.params.get("steps"):
            self._plan(self.params["steps"] * (self.params["epochs"] - epoch))

    def on_train_end(self, logs=None):
        object.__setattr__(self.model, "_planned_fit", None)

    def _plan(self, steps):
        # Untracked: Keras would wrap the tuple for tracking on every `fit`.
        object.__setattr__(self.model, "_planned_fit", (steps,))


class AutoStep:
    """`jit_compile="auto"`'s training step: Keras's eager step for a `fit`
    planned for fewer than `zoo.core.TRACE_FIT` steps, and from there the
    traced step run without compiling (`CompiledStep(inductor=False)`),
    which later `fit`s keep. Both draw Keras's own numbers from the model's
    seed generators and compute the same operations, so the tier changes
    the speed, never the noise (and, but for rounding in a few backward
    operations, not the results). "auto" never compiles with TorchInductor:
    that is `jit_compile=True`. Only the first batch shape is traced;
    others (a smaller last batch) run eagerly, rather than paying a second
    trace. A `fit` whose length is unknown (a generator without `len`, or
    `callbacks` given as a `CallbackList`, which `GenerativeModel.fit`
    leaves alone) keeps the step of earlier `fit`s, eager at first."""

    def __init__(self, model):
        self.model = model
        self.traced = CompiledStep(
            model, training=True, max_signatures=1, warn=False, inductor=False
        )
        self.plan = None
        self.tier = 0  # 0 eager, 1 traced

    def __call__(self, data):
        plan = getattr(self.model, "_planned_fit", None)
        if plan is not self.plan:
            self.plan = plan
            from zoo.core import TRACE_FIT

            steps = (plan[0] or 0) if plan is not None else 0
            if steps >= TRACE_FIT:
                self.tier = 1
        if self.tier == 0:
            return self.traced.eager(data[0])
        return self.traced(data)


def _jit_compile(model):
    """The model's `jit_compile` setting, or None where Keras's own step
    function runs (`run_eagerly`, or `steps_per_execution` > 1, which
    Keras's torch trainer rejects)."""
    settings = getattr(model, "_compile_settings", {})
    if settings.get("run_eagerly") or model.steps_per_execution != 1:
        return None
    return settings.get("jit_compile")


def make_train_function(model):
    """The training step Keras's torch trainer calls as its
    `train_function`: `CompiledStep` with `compile(jit_compile=True)`,
    `AutoStep` with "auto", None (Keras's own) otherwise."""
    jit_compile = _jit_compile(model)
    if jit_compile is True:
        return CompiledStep(model, training=True)
    if jit_compile == "auto":
        return AutoStep(model)
    return None


def make_test_function(model):
    """The compiled test step (`evaluate`) with `jit_compile=True`; None
    (Keras's eager one) otherwise. (A test step has no collectives: it
    compiles under torchrun too.)"""
    if _jit_compile(model) is True:
        return CompiledStep(model, training=False)
    return None


class _BatchEndsInline(keras.callbacks.Callback):
    """Does nothing at batch ends and is not `async_safe`, so Keras calls
    every callback's batch end in the step's own thread. Otherwise (all
    callbacks async-safe, as History and the progress bar are) it hands
    them to a worker thread, which on a CPU only contends with the next
    step for the GIL: 0.5-0.9 ms per step on the benchmark models, 10-20 %
    of a traced step (`benchmarks/step_time.py`). On an accelerator the
    worker keeps the step from waiting for its logs, so it stays."""

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass


def _with_callbacks(arguments, *extra):
    from zoo.core.fit_inputs import with_callbacks

    if private("keras.torch.get_device")() == "cpu":
        extra += (_BatchEndsInline(),)
    return with_callbacks(arguments, *extra)


def fit_arguments(model, arguments):
    """`fit`'s arguments with `FitLength` and the non-finite-update guard
    among the callbacks, and on a CPU `_BatchEndsInline`; under `torchrun`,
    this rank's share of the data and callbacks (`zoo.core.torch_shards`).
    `GenerativeModel.fit` calls this; a `CallbackList` is left alone."""
    from zoo.core import torch_shards

    arguments = torch_shards.prepare(model, arguments, training=True)
    return nonfinite.with_guard(_with_callbacks(arguments, FitLength()))


def evaluate_arguments(model, arguments):
    """`evaluate`'s arguments with `_BatchEndsInline` among the callbacks on
    a CPU; under `torchrun`, this rank's share of the data
    (`GenerativeModel.evaluate` calls this)."""
    from zoo.core import torch_shards

    if arguments.get("_use_cached_eval_dataset"):  # `fit`'s validation, sharded
        return _with_callbacks(arguments)
    return _with_callbacks(torch_shards.prepare(model, arguments, training=False))


def reduce_logs(model, logs):
    """Epoch and evaluation logs averaged over every rank's examples under
    `torchrun` (`GenerativeModel` calls this where Keras reads its
    metrics); `logs` itself otherwise."""
    return torch_distributed.reduce_logs(model, logs)
