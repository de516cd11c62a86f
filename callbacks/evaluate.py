"""`Evaluate`: a metric of the model, measured during training, in the logs."""

import numbers
import time

import keras

from callbacks import _common


class Evaluate(keras.callbacks.Callback):
    """Runs `metric(model)` every `every` epochs and puts the result in the logs.

    `metric` is any callable taking the model and returning a number (for
    example a FID of `model.sample(...)` against held-out data) or a dict
    of numbers. The value goes into the epoch's logs as `name` (a dict's
    keys as they are), so callbacks *after* this one in the list see it:
    `ModelCheckpoint(monitor=name, mode="min", save_best_only=True)`,
    `EarlyStopping(monitor=name)`, `CSVLogger`, `TensorBoard` and
    `History`. Keras passes one logs dict through the callbacks in list
    order, so put `Evaluate` before them (and after `EMA`, to measure the
    averaged weights). It runs after epochs `every`, `2 * every`, ... and
    after the last; on other epochs the key is absent, which
    `EarlyStopping` and `ModelCheckpoint` skip (with a warning). `CSVLogger`
    fixes its columns at the first epoch, so it records the metric only
    with `every=1`. `timings` holds the seconds each
    evaluation took.

    Args:
        metric: callable `metric(model) -> float or dict of floats`.
        every: evaluate after every `every`-th epoch.
        name: the log key of a number; default the callable's `__name__`.

    Example:

    ```python
    import numpy as np
    from callbacks import Evaluate
    from zoo.data import digits
    from zoo.metrics import fid
    from zoo.vae import VAE

    train, _ = digits("train")
    test, _ = digits("test")
    model = VAE(data_shape=(8, 8, 1), latent_dim=4, num_levels=17,
                filters=4, hidden_units=(16,), seed=0)
    model.compile()
    digits_fid = Evaluate(lambda m: fid(test[:256], m.sample(256, seed=0)),
                          every=1, name="fid")
    model.fit(train[:256], batch_size=64, epochs=2, verbose=0,
              callbacks=[digits_fid])
    model.history.history["fid"]          # one FID per epoch
    ```
    """

    def __init__(self, metric, every=1, name=None):
        super().__init__()
        if not callable(metric):
            raise ValueError(
                "`metric` must be a callable taking the model and returning a "
                f"number or a dict of numbers; received metric={metric!r}."
            )
        self.metric = metric
        self.every = _common.check_positive_int(every, "every")
        if name is None:
            name = getattr(metric, "__name__", None)
            if not name or name == "<lambda>":
                name = "metric"
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty string; received name={name!r}.")
        self.name = name
        self.timings = []

    def on_epoch_end(self, epoch, logs=None):
        if not _common.due(epoch, self.every, (self.params or {}).get("epochs")):
            return
        start = time.perf_counter()
        result = self.metric(self.model)
        self.timings.append(time.perf_counter() - start)
        values = result if isinstance(result, dict) else {self.name: result}
        for key, value in values.items():
            value = keras.ops.convert_to_numpy(value) if not isinstance(
                value, numbers.Number) else value
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Evaluate: `metric` must return a number or a dict of "
                    f"numbers; {key!r} is {value!r}."
                ) from None
            if logs is not None:
                logs[key] = value
