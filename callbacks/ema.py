"""`EMA`: an exponential moving average of the weights, swapped in to be used."""

import warnings

import keras
import numpy as np


def _model(callback):
    # `Callback.model` synchronizes JAX's training state on every access;
    # the per-batch update must not, so it reads `_model` (unwrapping DDP).
    model = callback._model
    return getattr(model, "module", model)


class EMA(keras.callbacks.Callback):
    """Exponential moving average of the trainable weights.

    After every training batch, `average = decay * average + (1 - decay) *
    weights`, starting from the weights at the start of training; the
    update is one compiled call on the live weights (on JAX, on the state
    `fit` threads, with no synchronization). The averaged weights are
    swapped into the model

    - for evaluation: validation during `fit` and `evaluate(...,
      callbacks=[ema])` (`on_test_begin`), swapped back at `on_test_end`;
    - at the end of every epoch, so the callbacks *after* `EMA` in the list
      (`SampleGrid`, `Evaluate`, `ModelCheckpoint`, ...) sample, measure
      and save the average; the training weights come back at the start of
      the next epoch. Put `EMA` first in the callback list.
    - after `fit` the averaged weights stay in: `model.sample`,
      `model.save` and presets use them. The callback keeps the training
      weights, so another `fit` with the same callback continues training
      from them (and the average continues too).

    Resuming: while training, the average (and, when the average is
    swapped in, the training weights) is saved with the model's weights,
    so `BackupAndRestore` and `ModelCheckpoint` files hold everything; a
    `fit` that starts from such a file (restored by `BackupAndRestore`, or
    loaded with `load_weights`/`load_model` before `fit`) continues both
    the training weights and the average exactly. Only trainable weights
    are averaged (BatchNorm statistics are not). With
    `steps_per_execution=k` the average moves once per `k` steps, with
    decay `decay**k`. A step that skipped an update for non-finite
    gradients (the `skipped_updates` log) leaves the average unchanged.

    Args:
        decay: in [0, 1); 0.999 averages over roughly the last 1000 steps.

    Example:

    ```python
    from callbacks import EMA
    from zoo.data import Ring
    from zoo.gan import GAN

    model = GAN(data_shape=(2,), latent_dim=4, hidden_units=(16,), seed=0)
    model.compile()
    ema = EMA(decay=0.99)
    model.fit(Ring().sample(256, seed=0), batch_size=64, epochs=2,
              verbose=0, callbacks=[ema])
    samples = model.sample(100, seed=0)   # from the averaged weights
    ```
    """

    def __init__(self, decay=0.999):
        super().__init__()
        if isinstance(decay, bool) or not isinstance(decay, (int, float, np.floating)) or not (
            0.0 <= float(decay) < 1.0
        ):
            raise ValueError(f"`decay` must be a float in [0, 1); received decay={decay!r}.")
        self.decay = float(decay)
        self._averages = None
        self._training = None  # the training weights while the average is in
        self._test_swap = False
        self._check_loaded = False
        self._last_batch = -1
        self._skipped = 0.0

    # ------------------------------------------------------------------
    # Public helpers.

    @property
    def averaged_weights(self):
        """The averaged trainable weights as NumPy arrays (None before fit)."""
        if self._averages is None:
            return None
        return [keras.ops.convert_to_numpy(a) for a in self._averages]

    @property
    def swapped_in(self):
        """Whether the model holds the averaged weights right now."""
        return self._training is not None

    def swap_in(self):
        """Puts the averaged weights into the model (keeps the training ones)."""
        if self._training is not None or self._averages is None:
            return
        model = self.model
        self._training = model.trainable_values(copy=True)
        model.set_trainable_values(self._averages)

    def swap_out(self):
        """Puts the training weights back into the model."""
        if self._training is None:
            return
        self.model.set_trainable_values(self._training)
        self._training = None

    # ------------------------------------------------------------------
    # Saved with the weights, for BackupAndRestore and checkpoints.

    def _saved_state(self):
        state = {}
        for i, a in enumerate(self._averages or []):
            state[f"average_{i}"] = keras.ops.convert_to_numpy(a)
        for i, t in enumerate(self._training or []):
            state[f"training_{i}"] = keras.ops.convert_to_numpy(t)
        return state

    def _restore_loaded(self, model):
        loaded = model.loaded_state("ema")
        if not loaded:
            return
        variables = model.trainable_variables
        averages = [loaded.get(f"average_{i}") for i in range(len(variables))]
        training = [loaded.get(f"training_{i}") for i in range(len(variables))]
        shapes_ok = all(
            a is not None and tuple(a.shape) == tuple(v.shape)
            for a, v in zip(averages, variables)
        )
        if not shapes_ok or len(loaded) not in (len(variables), 2 * len(variables)):
            warnings.warn(
                "EMA: the loaded weights file holds an average that does not "
                "match this model's trainable weights; starting a new average.",
                stacklevel=2,
            )
            return
        if all(t is not None for t in training):
            # Saved while the average was swapped in: the variables hold it.
            model.set_trainable_values(training)
        self._averages = None
        self._averages = [
            keras.ops.copy(keras.ops.convert_to_tensor(a, dtype=v.dtype))
            for a, v in zip(averages, variables)
        ]

    # ------------------------------------------------------------------
    # Callback hooks.

    def on_train_begin(self, logs=None):
        self.swap_out()
        self.model.set_saved_state("ema", self._saved_state)
        # BackupAndRestore may restore weights after this callback runs;
        # look for a restored average at the first epoch.
        self._check_loaded = True

    def on_epoch_begin(self, epoch, logs=None):
        self.swap_out()
        model = self.model
        if self._check_loaded:
            self._check_loaded = False
            self._restore_loaded(model)
        if self._averages is None:
            self._averages = model.moving_average(None, self.decay)
        self._last_batch = -1
        self._skipped = 0.0  # `skipped_updates` restarts every epoch

    def on_train_batch_end(self, batch, logs=None):
        steps = max(batch - self._last_batch, 1)
        self._last_batch = batch
        # A step whose update was skipped (non-finite gradients, see
        # `zoo.core.nonfinite`) leaves the average as it is too.
        skipped = float((logs or {}).get("skipped_updates", 0.0))
        if skipped > self._skipped:
            self._skipped = skipped
            return
        decay = self.decay**steps
        self._averages = _model(self).moving_average(self._averages, decay)

    def on_test_begin(self, logs=None):
        if self._training is None and self._averages is not None:
            self.swap_in()
            self._test_swap = True

    def on_test_end(self, logs=None):
        if self._test_swap:
            self._test_swap = False
            self.swap_out()

    def on_epoch_end(self, epoch, logs=None):
        self.swap_in()

    def on_train_end(self, logs=None):
        self.swap_in()
        self.model.set_saved_state("ema", None)
