"""TensorFlow: the step runs inside a `tf.function`; gradients by tape.

Nested tapes give second-order gradients: the tape in `gradient` records
inside the tape of `minimize`, which differentiates through it.
"""

import threading

import numpy as np
import tensorflow as tf

from zoo.core import nonfinite
from zoo.core.compat import private


def _distributed(model):
    """Whether a distribution strategy is in play (then Keras's own data
    handling and step functions are left as they are)."""
    return (
        tf.distribute.has_strategy()
        or model.distribute_strategy is not tf.distribute.get_strategy()
    )


def _one_step_function(model, step):
    """Keras's TF `train_function`/`test_function` for one step per call,
    without its per-call overhead, or None where Keras's own is needed.

    Keras's trainer calls a `tf.function` of the *iterator*, which reads
    the batch in the graph and returns its logs in a `tf.experimental.
    Optional`; looking the function up by the iterator's type, then the
    two eager operations and structure conversions that unwrap the
    `Optional`, cost 1-1.5 ms per call on a CPU, 40-55 % of a small step.
    Here the batch is read eagerly (`next`, which ends the epoch with
    `StopIteration` as Keras expects) and passed to a concrete function
    traced once for the dataset's `element_spec`, whose batch dimension is
    unknown, so one graph serves every batch size, as Keras's does. The
    step, autograph off and `jit_compile` as Keras resolves it, is the one
    Keras's trainer would run. Keras's own function remains for several
    steps per call (its `tf.while_loop` already amortizes the call), eager
    runs, and distribution strategies.
    """
    settings = getattr(model, "_compile_settings", {})
    if (
        settings.get("run_eagerly")
        or model.steps_per_execution != 1
        or _distributed(model)
    ):
        return None

    def one_step_on_data(data):
        # As Keras's trainer: a missing value arrives as an empty Optional.
        data = tf.nest.map_structure(
            lambda v: None if isinstance(v, tf.experimental.Optional) else v,
            data,
        )
        return step(data)

    function = tf.function(
        one_step_on_data,
        reduce_retracing=True,
        jit_compile=model.jit_compile,
        autograph=False,
    )
    traced = []  # (element_spec, concrete function), one per distinct spec
    last = [None, None]  # the spec of the previous call, and its function

    def call(iterator):
        data = next(iterator)
        spec = getattr(iterator, "element_spec", None)
        if spec is None:  # a Python generator (`train_on_batch`)
            return function(data)
        if spec is not last[0]:  # a new iterator: a new epoch or `fit`
            for known, concrete in traced:
                if known == spec:
                    break
            else:
                concrete = function.get_concrete_function(spec)
                traced.append((spec, concrete))
            last[:] = [spec, concrete]
        return last[1](data)

    return call


def make_train_function(model):
    return _one_step_function(model, model.train_step)


def _array_dataset(data, batch_size, steps=None):
    """In-memory `(x, y, sample_weight)` as an unshuffled `tf.data` pipeline
    with Keras's batching, casting and checks, or None for anything else.

    Keras's own pipeline for arrays (`ArrayDataAdapter`) gathers each batch
    through a permutation in several dataset functions; a new iterator over
    it costs 20-25 ms on a CPU, and `evaluate` makes one at every call, as
    does `fit` at every validation. In order, batches are plain slices:
    `from_tensor_slices(...).batch(...)` gives the same elements (same
    structure, dtypes and `element_spec`) at about 2 ms per iterator.
    """
    tree = private("keras.tree")
    array_data_adapter = private("keras.array_data_adapter")
    array_slicing = private("keras.array_slicing")

    if data[0] is None or not array_data_adapter.can_convert_arrays(data):
        return None
    adapter = array_data_adapter.ArrayDataAdapter(
        *data[:2], sample_weight=data[2], batch_size=batch_size, steps=steps, shuffle=False
    )
    inputs = tree.lists_to_tuples(
        array_slicing.convert_to_sliceable(adapter._inputs, target_backend="tensorflow")
    )
    if not all(isinstance(v, (np.ndarray, tf.Tensor)) for v in tree.flatten(inputs)):
        return None  # sparse or ragged: Keras slices those itself
    options = tf.data.Options()
    # As Keras's: no graph rewrites, which would serialize the arrays.
    options.experimental_optimization.apply_default_optimizations = False
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(adapter.batch_size)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def fit_arguments(model, arguments):
    """`_fit_arguments`, with the non-finite-update guard among the
    callbacks (`GenerativeModel.fit` calls this)."""
    from zoo.core import nonfinite

    if _distributed(model):
        _check_strategy(model, arguments, "fit")
    return nonfinite.with_guard(_fit_arguments(model, arguments))


def _check_strategy(model, arguments, method):
    """Under a `tf.distribute` strategy: in-memory data whose `batch_size`
    the replicas do not divide is a `ValueError` (an uneven last batch is
    fine: the step weighs each replica's share by its examples, an empty
    one by 0); under `MultiWorkerMirroredStrategy`, `fit` checks
    that every worker built the same model (a `ValueError` on every worker
    otherwise, rather than each training its own step on shared weights)."""
    from zoo.core import distributed

    strategy = model.distribute_strategy
    replicas = strategy.num_replicas_in_sync
    where = f"the {replicas} replicas of {type(strategy).__name__}"
    distributed.check_batch_split(arguments, method, replicas, where, last_batch="any")
    distributed.check_dataset_split(arguments, method, replicas, where)
    if method == "fit" and _multi_worker(strategy):
        _check_same_model(model, strategy)


def _multi_worker(strategy):
    return private("keras.tensorflow.multi_worker")(strategy)


def _check_same_model(model, strategy):
    """Every worker's model fingerprint, all-gathered (one collective, which
    fails with the strategy's own error if a worker is gone); a
    `ValueError` naming the workers whose model differs from worker 0's."""
    from zoo.core import distributed

    fingerprint = distributed.model_fingerprint(model)
    # Four 14-bit parts: exact in float32, which every collective carries.
    parts = tf.constant([[(fingerprint >> (14 * k)) & 0x3FFF for k in range(4)]], tf.float32)

    def gather():
        return tf.distribute.get_replica_context().all_gather(parts, axis=0)

    gathered = tf.function(lambda: strategy.run(gather), autograph=False)()
    gathered = strategy.experimental_local_results(gathered)[0].numpy()
    # Replicas are numbered worker by worker.
    per_worker = max(1, len(gathered) // distributed.process_count())
    different = sorted({
        r // per_worker for r, row in enumerate(gathered) if (row != gathered[0]).any()
    })
    if different:
        raise distributed.different_model_error(model, different, "worker(s)")


def _fit_arguments(model, arguments):
    """`fit`'s arguments, with in-memory arrays fed as `tf.data` pipelines
    that cost no per-epoch setup (`GenerativeModel.fit` calls this).

    Training arrays: Keras's TensorFlow `fit` makes a new iterator over its
    `tf.data` pipeline at every epoch. Each `iter()` instantiates the
    pipeline's dataset functions (15-25 ms per epoch on a CPU, a quarter of
    an epoch of the 8x8 digits), and with a global seed
    (`keras.utils.set_random_seed`) each new iterator restarts the
    pipeline's `tf.random.shuffle` from its op seed: every epoch sees the
    same order. Here the same pipeline (Keras's `ArrayDataAdapter`: its
    shuffling, batching, partial last batch, class and sample weights) is
    repeated and `fit` runs `steps_per_epoch` = its number of batches, so
    one iterator serves the whole `fit` and each epoch is a new
    permutation, reproducible under a seed. `validation_split` is applied
    first, as Keras does. Left to Keras: a given `steps_per_epoch`, a
    `steps_per_execution` that does not divide the number of batches (a
    call would run past an epoch's last batch), and distribution
    strategies.

    Validation arrays (given, or split off) become the plain pipeline of
    `_array_dataset`, since Keras makes a new iterator at every validation.
    """
    array_data_adapter = private("keras.array_data_adapter")
    array_slicing = private("keras.array_slicing")
    data_adapter_utils = private("keras.data_adapter_utils")

    data = (arguments.get("x"), arguments.get("y"), arguments.get("sample_weight"))
    if data[0] is None or _distributed(model):
        return arguments
    arguments = dict(arguments)
    batch_size = arguments.get("batch_size")
    is_arrays = array_data_adapter.can_convert_arrays(data)
    if is_arrays and arguments.get("validation_split") and arguments.get("validation_data") is None:
        data, arguments["validation_data"] = array_slicing.train_validation_split(
            data, validation_split=arguments["validation_split"]
        )
        arguments.update(x=data[0], y=data[1], sample_weight=data[2], validation_split=0.0)
    if arguments.get("validation_data") is not None:
        validation = _array_dataset(
            data_adapter_utils.unpack_x_y_sample_weight(arguments["validation_data"]),
            arguments.get("validation_batch_size") or batch_size,
        )
        if validation is not None:
            arguments.update(validation_data=validation, validation_batch_size=None)
    if not is_arrays or arguments.get("steps_per_epoch") is not None:
        return arguments
    adapter = array_data_adapter.ArrayDataAdapter(
        *data[:2],
        sample_weight=data[2],
        batch_size=batch_size,
        shuffle=arguments.get("shuffle", True),
        class_weight=arguments.get("class_weight"),
    )
    if adapter.num_batches % model.steps_per_execution:
        return arguments
    arguments.update(
        x=adapter.get_tf_dataset().repeat(),
        y=None,
        sample_weight=None,
        class_weight=None,
        batch_size=None,
        shuffle=False,
        steps_per_epoch=adapter.num_batches,
        # (For validation arrays left to Keras; a dataset ignores it.)
        validation_batch_size=arguments.get("validation_batch_size") or batch_size,
    )
    return arguments


def evaluate_arguments(model, arguments):
    """`evaluate`'s arguments, with in-memory arrays fed as the plain
    pipeline of `_array_dataset` (`GenerativeModel.evaluate` calls this)."""
    if arguments.get("_use_cached_eval_dataset"):
        return arguments
    if _distributed(model):
        _check_strategy(model, arguments, "evaluate")
        return arguments
    dataset = _array_dataset(
        (arguments.get("x"), arguments.get("y"), arguments.get("sample_weight")),
        arguments.get("batch_size"),
        arguments.get("steps"),
    )
    if dataset is None:
        return arguments
    return {**arguments, "x": dataset, "y": None, "sample_weight": None, "batch_size": None}


def make_test_function(model):
    return _one_step_function(model, model.test_step)


# Per step being traced (innermost last): the share of the global batch that
# this replica's loss counts for (a Python float when every replica's share
# is known to be equal, else a tensor), or None outside a strategy.
# Per thread: MirroredStrategy traces each replica's step in its own
# thread, switching between them at every `merge_call`.
_local = threading.local()


def _shares():
    if not hasattr(_local, "shares"):
        _local.shares = []
    return _local.shares


def train_step(model, data):
    return _step(model, data, training=True)


def test_step(model, data):
    return _step(model, data, training=False)


def _step(model, data, training):
    shares = _shares()
    shares.append(_replica_share(data))
    try:
        empty = empty_replica()
        # A replica without examples keeps its copies of the model's
        # statistics (BatchNorm's, EMA weights) as they were: means of
        # nothing would make them NaN.
        state = nonfinite.state_variables(model) if empty is not None else []
        before = [tf.identity(v.value) for v in state]
        logs = model.run_step(data, training=training)
        if state:
            def restore():
                return tf.group([v.assign(b) for v, b in zip(state, before)])

            tf.cond(empty, restore, tf.no_op)
    finally:
        shares.pop()
    return _for_multi_worker(_global_logs(model, logs))


def _replica_share(data):
    """This replica's examples over the global batch's, under a strategy.

    A batch whose size is known when the step is traced (a dataset batched
    with `drop_remainder=True`, whose size `fit` checks the replicas
    divide) gives every replica 1/replicas. Otherwise (a partial last
    batch: the strategy splits 15 examples as 8 and 7) the
    replicas add up their examples (one all-reduce of one number), so each
    replica's mean loss counts for its own examples and the update is the
    one-device update of the whole batch. A replica left without examples
    (a last batch smaller than the replicas: 3 examples split as 1, 1, 1
    and 0) counts for nothing: its share is 0 (`empty_replica`), and
    `minimize`, `_step` and the trackers keep its mean of nothing out of
    the update, the model's statistics and the logs."""
    replicas = replicas_in_sync()
    if replicas <= 1:
        return None
    tensors = [v for v in tf.nest.flatten(data) if isinstance(v, (tf.Tensor, tf.SparseTensor))]
    if not tensors:
        return 1.0 / replicas
    rows = tensors[0].shape[0]
    if rows is not None and rows > 0:
        return 1.0 / replicas
    rows = tf.cast(tf.shape(tensors[0])[0], tf.float32)
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, rows)
    return rows / total


def empty_replica():
    """A boolean tensor, True where this replica's share of the batch being
    traced is empty; None where no replica can be empty (one device, or a
    batch size the replicas divide known when the step is traced)."""
    shares = _shares()
    if not shares or not isinstance(shares[-1], tf.Tensor):
        return None
    return tf.equal(shares[-1], 0.0)


def _global_logs(model, logs):
    """Under a strategy, each tracker's log as its value over every
    replica's examples so far: the trackers' totals and counts summed over
    the replicas (one all-reduce), so that the mean Keras takes of the
    replicas' logs is the number one device logs for the global batch. (A
    replica's own tracker holds its share only: its running loss, and the
    skipped-updates count divided by the replicas.)"""
    replicas = replicas_in_sync()
    if replicas <= 1:
        return logs
    trackers = [(name, model._trackers[name]) for name in sorted(logs) if name in model._trackers]
    if not trackers:
        return logs
    from zoo.core import distributed

    values = [tf.reshape(tf.cast(v.value, tf.float32), [-1]) for _, t in trackers for v in t.variables]
    context = tf.distribute.get_replica_context()
    flat = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat(values, 0))
    return {**logs, **distributed.tracker_results(trackers, flat)}


def _for_multi_worker(logs):
    # Keras's TF trainer reduces a multi-worker run's step outputs with
    # `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar:
    # each log goes out as a vector of one value, and comes back a scalar.
    if not tf.distribute.has_strategy() or not _multi_worker(tf.distribute.get_strategy()):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def minimize(model, loss_fn, variables, optimizer, record=None):
    replicas = replicas_in_sync()
    guarded = nonfinite.guarded(optimizer)
    state = nonfinite.state_variables(model) if guarded else []
    before = [tf.identity(v.value) for v in state]
    with tf.GradientTape() as tape:
        loss = loss_fn()
        scaled = optimizer.scale_loss(loss)
        if replicas > 1:
            # The optimizer sums the replicas' gradients (as Keras's own
            # losses expect, `scale_loss_for_distribution`): each replica's
            # mean loss counts for its share of the global batch (1/replicas
            # when they split it evenly), so the update is the one of the
            # global batch's mean loss, as on one device.
            shares = _shares()
            share = shares[-1] if shares and shares[-1] is not None else 1.0 / replicas
            scaled = scaled * tf.cast(share, scaled.dtype)
    grads = tape.gradient(scaled, variables)
    empty = empty_replica()
    if empty is not None:
        # A replica without examples: its loss, a mean of nothing, may give
        # NaN gradients (a BatchNorm's over no rows), which its share of 0
        # does not cancel. It sends zeros to the replicas' sum instead.
        grads = _zeros_where(empty, grads)
    if record is not None:
        # The global batch's gradient, as one device has it: the replicas'
        # gradients (each of its loss / replicas) summed. (The optimizer
        # sums them again inside `apply`; this extra all-reduce runs only
        # while gradient norms are recorded.)
        dense = [
            None if g is None else
            (tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g)
            for g in grads
        ]
        if replicas > 1:
            present = [k for k, g in enumerate(dense) if g is not None]
            summed = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [dense[k] for k in present]
            )
            for k, g in zip(present, summed):
                dense[k] = g
        record(dense)
    if not guarded:
        optimizer.apply(grads, variables)
        return loss
    finite = nonfinite.all_finite(grads)
    context = tf.distribute.get_replica_context()
    distributed = context is not None and context.num_replicas_in_sync > 1
    if distributed:
        # Each replica's gradients differ until the optimizer sums them:
        # every replica must take the same branch.
        bad = tf.cast(tf.logical_not(finite), tf.float32)
        finite = tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, bad), 0.0)
    nonfinite.note(model, finite)

    def apply():
        optimizer.apply(grads, variables)

    def restore():  # the BatchNorm statistics from before the loss ran
        for variable, value in zip(state, before):
            variable.assign(value)

    # A non-finite update is not applied: weights and optimizer state stay.
    # One replica: a conditional around the optimizer's update. (Running the
    # update and selecting the old values back where the gradients were not
    # finite made a 1-layer GPT's step 1.2-1.3x slower, with or without XLA,
    # `docs/design.md`.)
    if not distributed or private("tensorflow.no_merge_call")():
        tf.cond(finite, apply, restore)
        return loss

    # The optimizer synchronizes the replicas (`merge_call`), which a
    # conditional in the replica context cannot hold: the condition is
    # taken in the cross-replica context, as Keras's LossScaleOptimizer does.
    def cross_replica(strategy, grads, variables, finite):
        finite = strategy.experimental_local_results(finite)[0]  # (all equal)

        def apply_on_replicas():
            strategy.extended.call_for_each_replica(optimizer.apply, args=(grads, variables))

        def restore_on_replicas():
            strategy.extended.call_for_each_replica(restore)

        tf.cond(finite, apply_on_replicas, restore_on_replicas)

    context.merge_call(cross_replica, args=(grads, variables, finite))
    return loss


def _zeros_where(condition, grads):
    """`grads` (tensors, `IndexedSlices` or None), or zeros of their shapes
    where `condition` holds: one conditional, no elementwise pass."""
    flat = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
    present = [t for t in flat if t is not None]
    if not present:
        return grads
    chosen = iter(tf.cond(
        condition,
        lambda: [tf.zeros_like(t) for t in present],
        lambda: [tf.identity(t) for t in present],
    ))
    out = []
    for g, t in zip(grads, flat):
        if t is None:
            out.append(g)
        elif isinstance(g, tf.IndexedSlices):
            out.append(tf.IndexedSlices(next(chosen), g.indices, g.dense_shape))
        else:
            out.append(next(chosen))
    return out


def replicas_in_sync():
    """Replicas a `tf.distribute` strategy runs the step on (1 outside)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: not inside a step
        return 1
    return context.num_replicas_in_sync


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
    # Autograph off, as in Keras's own step functions: the zoo's loops and
    # branches are `keras.ops` already, and autograph's cache of converted
    # functions mixed up two of them in a long test run (calling one with
    # the other's arguments).
    compiled = tf.function(
        fn, jit_compile=jit_compile, reduce_retracing=True, autograph=False
    )

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


@tf.function(reduce_retracing=True, autograph=False)
def _moving_average(averages, values, decay):
    return [
        a * tf.cast(decay, a.dtype) + tf.cast(v, a.dtype) * tf.cast(1 - decay, a.dtype)
        for a, v in zip(averages, values)
    ]


def moving_average(averages, values, decay):
    return _moving_average(
        list(averages), [tf.convert_to_tensor(v) for v in values], tf.constant(decay, tf.float32)
    )
