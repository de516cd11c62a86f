"""Non-finite updates: refused, counted, and stopped after too many in a row.

One NaN or Inf row in a batch makes that batch's gradients non-finite, and an
optimizer that applies them turns every weight NaN (plain Keras does, and
`TerminateOnNaN` stops only after the damage). The zoo's `minimize` checks
each update's gradients (after they are averaged across replicas, so every
replica decides alike) and, where any is NaN or Inf, leaves that player's
weights and optimizer state (moments, step counter, the optimizer's own EMA
copies) as they were, and the model's non-trainable statistics (BatchNorm's
moving mean and variance) as they were before the update's loss ran. Inside compiled steps the choice is a tensor select or
a graph conditional, never a Python branch on a value.

Each training step logs `skipped_updates`: the number of updates skipped so
far in the epoch (a `keras.metrics.Sum`, reset every epoch). `fit` adds
`StopOnSkippedUpdates`, which raises `NonFiniteUpdateError` once that many
consecutive training steps skipped an update
(`GenerativeModel.max_consecutive_skips`, 10 by default; 0 or None never
stops).

A `keras.optimizers.LossScaleOptimizer` (mixed float16) is left to itself:
non-finite gradients are how it learns to lower its loss scale, and it
already skips those updates.
"""

import threading

import keras
from keras import ops

SKIPPED = "skipped_updates"
DEFAULT_MAX_CONSECUTIVE_SKIPS = 10


class NonFiniteUpdateError(RuntimeError):
    """Raised by `fit` after `model.max_consecutive_skips` consecutive steps
    whose updates were skipped because their gradients were not finite.

    Example:

    ```python
    from zoo.core import NonFiniteUpdateError

    try:
        raise NonFiniteUpdateError("10 consecutive steps skipped")
    except NonFiniteUpdateError as error:
        print(error)
    ```
    """


def guarded(optimizer):
    """Whether the core checks `optimizer`'s gradients (not a loss-scaling
    optimizer, which skips non-finite updates itself)."""
    return not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def all_finite(grads):
    """A boolean scalar tensor: every entry of every gradient is finite."""
    checks = [ops.all(ops.isfinite(g)) for g in grads if g is not None]
    if not checks:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack(checks))


def state_variables(model):
    """The model's non-trainable floating-point variables (BatchNorm moving
    statistics), not its seed states: a skipped update keeps them too, so
    one NaN batch does not poison the statistics inference uses."""
    cached = model.__dict__.get("_guarded_state")
    if cached is None:
        seeds = {id(s) for s in model._seed_states()}
        cached = [
            v for v in model.non_trainable_variables
            if id(v) not in seeds and "float" in str(v.dtype)
        ]
        object.__setattr__(model, "_guarded_state", cached)
    return cached


# Per thread: `tf.distribute.MirroredStrategy` builds each replica's step
# in its own thread, on the same model object.
_local = threading.local()


def _notes(model):
    notes = getattr(_local, "notes", None)
    if notes is None:
        notes = _local.notes = {}
    return notes.setdefault(id(model), [])


def note(model, finite):
    """Records one update's `finite` (a boolean tensor) for the step's logs."""
    _notes(model).append(finite)


def begin_step(model):
    _notes(model).clear()


def tracker(model):
    """The `skipped_updates` metric of `model` (made on first use)."""
    metric = model._trackers.get(SKIPPED)
    if metric is None:
        metric = keras.metrics.Sum(name=SKIPPED)
        model._trackers[SKIPPED] = metric
    return metric


def step_logs(model):
    """`{"skipped_updates": total this epoch}` after counting this step's
    skipped updates (none where the step made no update)."""
    from zoo.core import backend_module

    metric = tracker(model)
    notes = _notes(model)
    # Under a `tf.distribute` strategy every replica counts the same skip
    # (they decide together), and reading the metric sums the replicas'
    # counts: each adds its share.
    replicas = getattr(backend_module(), "replicas_in_sync", lambda: 1)()
    if notes:
        skipped = sum(ops.cast(ops.logical_not(f), metric.dtype) for f in notes)
        metric.total.assign_add(ops.cast(skipped / replicas, metric.total.dtype))
        notes.clear()  # (no tensors of this step kept past it)
    return {SKIPPED: metric.result()}


class StopOnSkippedUpdates(keras.callbacks.Callback):
    """Stops `fit` with `NonFiniteUpdateError` after `limit` consecutive
    training steps that skipped an update (a step counts once, however many
    of its updates were skipped). Reads the `skipped_updates` log; with
    `steps_per_execution=k` it sees one log per `k` steps. `limit=None`
    reads `model.max_consecutive_skips` when training begins.
    """

    def __init__(self, limit=None):
        super().__init__()
        self.limit = limit
        self.consecutive = 0
        self._last = 0.0

    def on_train_begin(self, logs=None):
        self.consecutive = 0
        self._last = 0.0
        limit = self.limit
        if limit is None:
            model = self._model
            limit = getattr(model, "max_consecutive_skips", DEFAULT_MAX_CONSECUTIVE_SKIPS)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(
                "`max_consecutive_skips` must be a non-negative int or None; "
                f"received {limit!r}."
            )
        self._limit = limit

    def on_epoch_begin(self, epoch, logs=None):
        self._last = 0.0  # the metric restarts every epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs or SKIPPED not in logs:
            return
        total = float(logs[SKIPPED])
        if total > self._last:
            self.consecutive += 1
        else:
            self.consecutive = 0
        self._last = total
        if self._limit and self.consecutive >= self._limit:
            self._model.stop_training = True
            raise NonFiniteUpdateError(
                f"{type(self._model).__name__}: {self.consecutive} consecutive "
                "training steps had non-finite gradients (NaN or Inf), and "
                "their updates were skipped; stopping. Check the data for "
                "NaN/Inf values and out-of-range inputs, or lower the "
                "learning rate. (`model.max_consecutive_skips` sets the "
                "limit; None never stops.)"
            )


def with_guard(arguments):
    """`fit`'s arguments with `StopOnSkippedUpdates` among the callbacks,
    unless one is there already (a `CallbackList` is left alone)."""
    callbacks = arguments.get("callbacks")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return arguments
    callbacks = list(callbacks or [])
    if not any(isinstance(c, StopOnSkippedUpdates) for c in callbacks):
        callbacks.append(StopOnSkippedUpdates())
    return {**arguments, "callbacks": callbacks}
