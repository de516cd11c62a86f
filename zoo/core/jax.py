"""JAX: the step is a pure function of the state, compiled by `jax.jit`.

Keras's JAX trainer calls `train_step(state, data)` with the values of the
trainable, non-trainable, optimizer and metric variables and expects the new
values back. We open one `StatelessScope` holding all of them for the whole
step, so the model's step logic reads and assigns variables as usual; each
update is then a functional transformation of that scope:

- `minimize` differentiates the loss with `jax.value_and_grad` over the
  player's values, running the loss in a fresh scope built from the current
  one (nested scopes do not fall back to the outer scope), carries the
  non-trainable updates made inside (BatchNorm statistics, seed states) out
  as auxiliary outputs, and applies the optimizer with `stateless_apply`;
- `gradient` does the same with `jax.grad` over an input, so it nests inside
  `minimize` for gradient penalties.
"""

import contextlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from keras import StatelessScope

from zoo.core import nonfinite
from zoo.core.compat import patched

# The variables threaded through the step being traced (innermost last).
_threaded = []


def _run(model, references, values, data, training):
    # Keras's JAX trainer hands an eager step (`run_eagerly=True`) the batch
    # as NumPy arrays, which a layer cannot take in a list beside a tensor
    # (a conditional model's `[x, labels]`); jitted, they are tracers.
    data = jax.tree_util.tree_map(
        lambda v: jnp.asarray(v) if isinstance(v, np.ndarray) else v, data
    )
    pairs = [
        (variable, value)
        for group, group_values in zip(references, values)
        for variable, value in zip(group, group_values)
    ]
    _threaded.append([variable for variable, _ in pairs])
    try:
        with StatelessScope(state_mapping=pairs) as scope:
            logs = model.run_step(data, training=training)
    finally:
        _threaded.pop()
    new_values = tuple(
        [scope.get_current_value(v) for v in group] for group in references
    )
    return logs, new_values


def train_step(model, state, data):
    references = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )
    return _run(model, references, state, data, training=True)


def test_step(model, state, data):
    references = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.metrics_variables,
    )
    return _run(model, references, state, data, training=False)


def _state_variables(model):
    if _threaded:
        return _threaded[-1]
    # Called outside `fit` (eagerly): every variable the model can touch.
    variables = list(model.variables) + list(model.metrics_variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return variables


def _functional(model, fn, overrides):
    """Runs `fn()` on the current state with `overrides` substituted.

    Returns `(output, others, updates)`: the values of every other state
    variable after the call, to be assigned once outside the transformation
    (tracers made inside `jax.grad` must not leak into the outer scope).
    """
    override_ids = {id(v) for v, _ in overrides}
    others = [v for v in _state_variables(model) if id(v) not in override_ids]
    mapping = [(v, v.value) for v in others] + list(overrides)
    with StatelessScope(state_mapping=mapping) as scope:
        output = fn()
    updates = [scope.get_current_value(v) for v in others]
    return output, others, updates


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)


def minimize(model, loss_fn, variables, optimizer, record=None):
    variables = list(variables)
    touched = []

    def scaled_loss(values):
        def call():
            loss = loss_fn()
            return optimizer.scale_loss(loss), loss

        (scaled, loss), others, updates = _functional(
            model, call, list(zip(variables, values))
        )
        touched[:] = others
        return scaled, (loss, updates)

    values = [v.value for v in variables]
    (_, (loss, updates)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(
        values
    )
    grads = _replica_mean(grads)
    guarded = nonfinite.guarded(optimizer)
    if guarded:
        finite = nonfinite.all_finite(grads)
        # BatchNorm statistics updated by a skipped update's loss stay too.
        kept = {id(v) for v in nonfinite.state_variables(model)}
        updates = [
            jnp.where(finite, new, v.value) if id(v) in kept else new
            for v, new in zip(touched, updates)
        ]
    _assign(touched, updates)
    if record is not None:
        record(grads)
    old_values = [v.value for v in variables]
    old_optimizer_values = [v.value for v in optimizer.variables]

    def apply(operands):
        return optimizer.stateless_apply(*operands)

    if guarded:
        # A non-finite gradient leaves the player's weights and optimizer
        # state as they were: a conditional, so the update runs only when
        # it is taken (a select of every new value against its old one made
        # a U-Net DDPM's step 1.5x slower and its compilation 2.6x longer,
        # benchmarks/real_sizes.py).
        nonfinite.note(model, finite)
        new_values, new_optimizer_values = jax.lax.cond(
            finite, apply, lambda operands: (operands[2], operands[0]),
            (old_optimizer_values, grads, old_values),
        )
    else:
        new_values, new_optimizer_values = apply((old_optimizer_values, grads, old_values))
    _assign(variables, new_values)
    _assign(optimizer.variables, new_optimizer_values)
    return loss


def _replica_mean(grads):
    # Under `keras.distribution` (one program over every device, data
    # sharded on the batch axis) the gradient of the batch mean already is
    # the global one: nothing to average.
    return grads


def gradient(model, fn, x):
    touched = []

    def summed(x):
        output, others, updates = _functional(model, lambda: fn(x), [])
        touched[:] = others
        return jnp.sum(output), updates

    grad, updates = jax.grad(summed, has_aux=True)(x)
    _assign(touched, updates)
    return grad


def compile_function(model, fn, seed_state, jit_compile=None):
    # The weights are arguments, not constants baked into the trace, so the
    # compiled function follows training without being traced again.
    def pure(values, state, *args):
        mapping = list(zip(model.variables, values)) + [(seed_state, state)]
        with StatelessScope(state_mapping=mapping):
            return fn(*args)

    compiled = jax.jit(pure) if jit_compile is not False else pure

    def call(state, *args):
        return compiled([v.value for v in model.variables], state, *args)

    return call


def fit_arguments(model, arguments):
    """`fit`'s arguments with the non-finite-update guard among the
    callbacks, checked against a `keras.distribution` (`GenerativeModel.fit`
    calls this)."""
    _check_batches(arguments, "fit")
    if jax.process_count() > 1:
        _check_processes(model, arguments)
    return nonfinite.with_guard(arguments)


def _check_processes(model, arguments):
    """Several processes (`jax.distributed`): every process must have built
    the same model (else a `ValueError` on every process, before any step);
    in-memory arrays are not sharded by Keras's JAX trainer (each process
    would feed all of them as its own share), so they get a warning."""
    import warnings

    from jax.experimental import multihost_utils

    from zoo.core import distributed
    from zoo.core.compat import private

    array_data_adapter = private("keras.array_data_adapter")

    fingerprint = distributed.model_fingerprint(model)
    parts = np.array([(fingerprint >> (14 * k)) & 0x3FFF for k in range(4)], np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(parts)).reshape(-1, 4)
    different = [r for r, row in enumerate(gathered) if (row != gathered[0]).any()]
    if different:
        raise distributed.different_model_error(model, different, "process(es)")
    data = (arguments.get("x"), arguments.get("y"), arguments.get("sample_weight"))
    if data[0] is not None and array_data_adapter.can_convert_arrays(data):
        warnings.warn(
            f"`fit` on {jax.process_count()} JAX processes with in-memory "
            "arrays: Keras does not shard them, so every process trains on "
            "all of them as its own part of each global batch. Feed a "
            "`tf.data.Dataset` batched with the global batch size "
            "(`drop_remainder=True`): Keras gives each process its share.",
            stacklevel=4,
        )


def evaluate_arguments(model, arguments):
    """`evaluate`'s arguments, checked against a `keras.distribution`."""
    _check_batches(arguments, "evaluate")
    return arguments


def _check_batches(arguments, method):
    """Under a `keras.distribution`, in-memory data whose `batch_size` the
    devices of the batch axis do not divide is a clear `ValueError` here,
    before any step; so is, over several processes, a last batch they do
    not divide (one process lays it out whole: `uneven_batches`)."""
    import keras

    from zoo.core import distributed

    distribution = keras.distribution.distribution()
    mesh = getattr(distribution, "device_mesh", None)
    axis = getattr(distribution, "batch_dim_name", None)
    if mesh is None or axis not in mesh.axis_names:
        return
    devices = mesh.shape[mesh.axis_names.index(axis)]
    where = f"the {devices} devices of the {axis!r} axis of {type(distribution).__name__}"
    last_batch = "even" if jax.process_count() > 1 else "any"
    distributed.check_batch_split(arguments, method, devices, where, last_batch)
    distributed.check_dataset_split(arguments, method, devices, where)


@contextlib.contextmanager
def uneven_batches():
    """Around `fit` and `evaluate` (`GenerativeModel`): under a
    `keras.distribution` in one process, a batch whose examples the batch
    axis's devices do not divide (a partial last batch: 37 examples in
    batches of 16 end with 5) is laid out whole on every device instead of
    split over them, so the step computes that batch's update as one device
    does, at the cost of running it on each. (Keras would raise JAX's
    `IndivisibleError` at that batch.) Several processes each hold only
    their share of a batch; there the last batch must still divide."""
    if jax.process_count() > 1:
        yield
        return

    def wrap(distribute):
        def distribute_whole_if_uneven(batch, layout, batch_dim_name):
            sharding = getattr(layout, "backend_layout", layout)
            spec = getattr(sharding, "spec", None)
            if spec and spec[0] is not None and np.ndim(batch):
                axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
                devices = int(np.prod([sharding.mesh.shape[a] for a in axes]))
                if np.shape(batch)[0] % devices:
                    layout = NamedSharding(sharding.mesh, PartitionSpec(None, *spec[1:]))
            return distribute(batch, layout, batch_dim_name)

        return distribute_whole_if_uneven

    with patched("keras.jax.distribute_data_input", wrap):
        yield


def compile_step(model, fn, jit_compile=None):
    # The loop around the step is compiled whole by `compile_function`.
    return fn


# Hooks for callbacks. During `fit` Keras keeps the live state in
# `model._jax_state` and leaves the variables stale (purged) until
# `jax_state_sync()`; callbacks read and write the weights through these,
# so an EMA costs one compiled dispatch per batch and no synchronization.


def _live_state(model):
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        return state
    return None


def trainable_values(model, copy=False):
    state = _live_state(model)
    if state is not None and state.get("trainable_variables") is not None:
        values = list(state["trainable_variables"])
    else:
        values = [v.value for v in model.trainable_variables]
    # Keras donates the state to the next step: keep copies, not references.
    return [jnp.copy(v) for v in values] if copy else values


def set_trainable_values(model, values):
    # After a sync the trainer reads the variables again before its next step.
    if hasattr(model, "jax_state_sync"):
        model.jax_state_sync()
    # Copies: the next compiled step donates (frees) what the variables hold.
    for variable, value in zip(model.trainable_variables, values):
        variable.assign(jnp.copy(value))


@partial(jax.jit, donate_argnums=0)
def _moving_average(averages, values, decay):
    return [
        (a * decay + v.astype(a.dtype) * (1 - decay)).astype(a.dtype)
        for a, v in zip(averages, values)
    ]


def moving_average(averages, values, decay):
    return _moving_average(list(averages), list(values), jnp.float32(decay))
