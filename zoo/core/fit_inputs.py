"""The arguments of `GenerativeModel.fit` and `evaluate`, prepared before
Keras sees them: bound by name, the data and labels checked eagerly,
callbacks' `mode="auto"` resolved, and the backend module's own adjustments
made."""

import inspect

import keras

from zoo.core import backend_module, validators

_SIGNATURES = {
    "fit": inspect.signature(keras.Model.fit),
    "evaluate": inspect.signature(keras.Model.evaluate),
}


def prepare(method, model, args, kwargs):
    """`fit`'s or `evaluate`'s (`method`) arguments by name (those given),
    checked (Keras drops sample weights given with arrays and no `y`), then
    adjusted by the backend module's `fit_arguments` or
    `evaluate_arguments` where it has one: PyTorch's "auto" step needs the
    number of steps `fit` plans (a callback records it), and on a CPU its
    batch-end callbacks run in the step's thread; TensorFlow feeds
    in-memory arrays as pipelines without per-epoch or per-evaluation
    setup. Returns `(arguments, checks)`: `checks` is the
    `validators.BatchChecks` of the data, or None (`fit`'s own
    validation)."""
    arguments = _SIGNATURES[method].bind(model, *args, **kwargs).arguments
    arguments.pop("self")
    arguments.update(arguments.pop("kwargs", {}))
    if (
        arguments.get("sample_weight") is not None
        and arguments.get("y") is None
        # (Keras rejects `sample_weight` itself for datasets and generators.)
        and all(hasattr(leaf, "shape") for leaf in keras.tree.flatten(arguments.get("x")))
    ):
        raise ValueError(
            "`sample_weight` needs `y`: Keras drops the sample weights of "
            "data given without `y`. Pass the `y` the model takes (GPT's "
            "next tokens, a conditional model's labels; a model that takes "
            "none ignores it, so any array with one row per example does)."
        )
    # Eager checks of the data and labels (shape, dtype, documented range,
    # classes) before any step: a compiled step cannot raise on values.
    checks = _inspect_inputs(model, arguments)
    sources = [
        key for key in ("x", "validation_data")
        if checks is not None and validators.is_batch_source(arguments.get(key))
    ]
    if checks is not None and hasattr(model, "jax_state_sync"):
        arguments = with_callbacks(arguments, _KeepJaxState(training=method == "fit"))
    adjust = getattr(backend_module(), f"{method}_arguments", None)
    arguments = arguments if adjust is None else adjust(model, arguments)
    # Then every batch of a dataset, `PyDataset` or `DataLoader` as it is
    # read, wrapped after the backend's own rewrapping (this process's
    # shard under `torchrun`).
    for key in sources:
        arguments[key] = checks.wrap(arguments[key], name=key)
    return arguments, checks


def _inspect_inputs(model, arguments):
    """Eager checks of `fit`'s or `evaluate`'s data and labels (see
    `zoo.core.validators.inspect_inputs`); a generator is replaced by one
    that checks every batch. Returns the `BatchChecks` that then checks
    every batch of a dataset, `PyDataset` or `DataLoader`, or None for
    `fit`'s own validation (checked by `fit`). Also resolves the callbacks'
    `mode="auto"` (`_resolve_monitor_modes`)."""
    _resolve_monitor_modes(model, arguments.get("callbacks"))
    if arguments.get("_use_cached_eval_dataset"):
        # `fit`'s validation at the end of an epoch: Keras reads the data
        # `fit` prepared, already checked (and wrapped) there.
        return None

    def check(x, y):
        model.validate_data(x)
        model.validate_labels(y)

    check = validators.BatchChecks(check)
    if "x" in arguments:
        arguments["x"] = validators.inspect_inputs(check, arguments["x"], arguments.get("y"))
    validation = arguments.get("validation_data")
    if isinstance(validation, (tuple, list)) and validation:
        vx, vy, _ = keras.utils.unpack_x_y_sample_weight(tuple(validation))
        validators.inspect_inputs(check, vx, vy, name="validation_data")
    elif validation is not None:
        arguments["validation_data"] = validators.inspect_inputs(
            check, validation, name="validation_data"
        )
    return check


def _resolve_monitor_modes(model, callbacks):
    """Sets `mode` to "min" or "max" on `EarlyStopping`, `ModelCheckpoint`
    and `ReduceLROnPlateau` callbacks left at `mode="auto"` that monitor
    one of the model's logs (or its `val_` form), from its `log_direction`:
    Keras infers "auto" only for "loss" and for metrics passed to
    `compile`."""
    names = set(model.log_names()) | set(getattr(model, "_trackers", {}))
    for callback in keras.tree.flatten(callbacks) if callbacks else ():
        monitor = getattr(callback, "monitor", None)
        if (
            getattr(callback, "mode", None) != "auto"
            or not isinstance(monitor, str)
            or getattr(callback, "monitor_op", None) is not None
        ):
            continue
        name = monitor.removeprefix("val_")
        if name in names:
            callback.mode = "max" if model.log_direction(name) == "up" else "min"


def with_callbacks(arguments, *extra):
    """`fit`'s or `evaluate`'s arguments with the callbacks `extra` added
    (a `CallbackList`, which Keras takes as it is, is left alone)."""
    callbacks = arguments.get("callbacks")
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return arguments
    return {**arguments, "callbacks": [*(callbacks or []), *extra]}


class _KeepJaxState(keras.callbacks.Callback):
    """Keras's JAX trainer empties the model's variables while their values
    are threaded through the steps, and refills them from the state of the
    last step (`_jax_state`): `fit` at its end, even after an error,
    `evaluate` only when it completes. A batch refused as the first step of
    an epoch reads it (a data source checked batch by batch, shuffled) came
    before any step state, and left the model without weights; so the
    values the variables hold at the start of each epoch and evaluation
    stand as that state until the first step replaces it (references, no
    copies: no step has run on them)."""

    def __init__(self, training):
        super().__init__()
        self.training = training

    def _record(self, optimizer):
        model = self.model
        if not getattr(model, "_jax_state_synced", False):
            return
        state = {
            "trainable_variables": [v.value for v in model.trainable_variables],
            "non_trainable_variables": [v.value for v in model.non_trainable_variables],
            "metrics_variables": [v.value for v in model.metrics_variables],
        }
        if optimizer and model.optimizer is not None:
            state["optimizer_variables"] = [v.value for v in model.optimizer.variables]
        model._jax_state = state

    def on_epoch_begin(self, epoch, logs=None):
        if self.training:
            self._record(optimizer=True)

    def on_test_begin(self, logs=None):
        if not self.training:  # (`fit`'s validation: Keras's own state)
            self._record(optimizer=False)
