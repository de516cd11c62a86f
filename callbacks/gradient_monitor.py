"""`GradientMonitor`: per-player and per-layer gradient norms, with warnings."""

import csv
import math
import os
import warnings

import keras

from callbacks import _common

PREFIX = "grad_norm/"


class GradientMonitor(keras.callbacks.Callback):
    """Gradient norms of every update in the logs; warns when they vanish or explode.

    While it is attached, each training step computes, inside the compiled
    step, the global gradient norm of each player's update and the norm
    per layer, and puts them in the step's logs as `grad_norm/<player>`
    and `grad_norm/<player>/<layer>` (averaged over the player's updates
    in the step; gradients of the unscaled loss). So `History`,
    `CSVLogger`, `TensorBoard` and the progress bar see them; the epoch's
    logs carry the last batch's values. Turning the recording on (at the
    start of `fit`) and off again (at the end) rebuilds the step function
    once; without a `GradientMonitor` nothing is computed.

    Every `every` batches it checks each layer's norm and writes a CSV row
    (when `csv_path` is given): `epoch`, `batch`, `step`, then one column
    per norm. A layer whose norm is below `vanish_threshold`, above
    `explode_threshold`, or not finite gets a `UserWarning` (once per layer
    and kind per `fit`); `warnings_seen` lists them all as `(step, key,
    kind, value)`.

    Args:
        every: check (and write a CSV row) every `every` batches.
        csv_path: optional CSV file, overwritten at the start of `fit`.
        vanish_threshold: norms below it count as vanishing (>= 0).
        explode_threshold: norms above it count as exploding.

    Example:

    ```python
    from callbacks import GradientMonitor
    from zoo.data import Ring
    from zoo.gan import GAN

    model = GAN(data_shape=(2,), latent_dim=4, hidden_units=(16,), seed=0)
    model.compile()
    history = model.fit(Ring().sample(256, seed=0), batch_size=64, epochs=1,
                        verbose=0, callbacks=[GradientMonitor()])
    history.history["grad_norm/generator"]     # one value per epoch
    ```
    """

    def __init__(self, every=1, csv_path=None, vanish_threshold=1e-7, explode_threshold=1e3):
        super().__init__()
        self.every = _common.check_positive_int(every, "every")
        self.csv_path = None if csv_path is None else _common.check_directory(csv_path, "csv_path")
        for name, value in (("vanish_threshold", vanish_threshold),
                            ("explode_threshold", explode_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(
                    f"`{name}` must be a non-negative number; received {name}={value!r}."
                )
        if not vanish_threshold < explode_threshold:
            raise ValueError(
                "`vanish_threshold` must be below `explode_threshold`; received "
                f"vanish_threshold={vanish_threshold}, explode_threshold={explode_threshold}."
            )
        self.vanish_threshold = float(vanish_threshold)
        self.explode_threshold = float(explode_threshold)
        self.warnings_seen = []
        self._warned = set()
        self._previous = False
        self._file = None
        self._writer = None
        self._columns = None
        self._step = 0
        self._epoch = 0

    def on_train_begin(self, logs=None):
        model = self.model
        if not hasattr(model, "record_gradient_norms"):
            raise ValueError(
                "GradientMonitor needs a zoo `GenerativeModel` (it asks the "
                f"model's `minimize` for gradient norms); got {type(model).__name__}."
            )
        self._previous = model.record_gradient_norms(True)
        self.warnings_seen = []
        self._warned = set()
        self._step = 0
        if self.csv_path is not None:
            directory = os.path.dirname(os.path.abspath(self.csv_path))
            os.makedirs(directory, exist_ok=True)
            self._file = open(self.csv_path, "w", newline="")
            self._writer = None
            self._columns = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if (self._step - 1) % self.every:
            return
        norms = {k: v for k, v in (logs or {}).items() if k.startswith(PREFIX)}
        if not norms:
            return
        for key, value in norms.items():
            kind = None
            if not math.isfinite(value):
                kind = "non-finite"
            elif key.count("/") >= 2:  # per layer; the global norm is not judged
                if value < self.vanish_threshold:
                    kind = "vanishing"
                elif value > self.explode_threshold:
                    kind = "exploding"
            if kind is not None:
                self.warnings_seen.append((self._step, key, kind, value))
                if (key, kind) not in self._warned:
                    self._warned.add((key, kind))
                    warnings.warn(
                        f"GradientMonitor: {kind} gradients at step {self._step} "
                        f"(epoch {self._epoch + 1}, batch {batch}): {key} = {value:.3g} "
                        f"(thresholds: vanish < {self.vanish_threshold:g}, "
                        f"explode > {self.explode_threshold:g}).",
                        stacklevel=2,
                    )
        if self._file is not None:
            if self._writer is None:
                self._columns = sorted(norms)
                self._writer = csv.writer(self._file)
                self._writer.writerow(["epoch", "batch", "step", *self._columns])
            self._writer.writerow(
                [self._epoch, batch, self._step, *(norms.get(c, "") for c in self._columns)]
            )

    def on_epoch_end(self, epoch, logs=None):
        if self._file is not None:
            self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
        self.model.record_gradient_norms(self._previous)
