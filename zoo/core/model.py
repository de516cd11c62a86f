"""`GenerativeModel`: a training step written once, run on every backend."""

import contextlib
import functools

import keras
import numpy as np
from keras import ops

from zoo.core import (
    backend_module,
    distributed,
    fit_inputs,
    gradient_norms,
    nonfinite,
    saved_state,
    validators,
)
from zoo.core.multi_optimizer import MultiOptimizer, resolve_optimizer


class GenerativeModel(keras.Model):
    """Base class of every zoo model: one training step for all backends.

    A subclass says *what* one training step does, with `keras.ops` and
    `keras.random`, and the core runs it as a `tf.function` on TensorFlow,
    inside `jax.jit` with the state threaded functionally on JAX, and with
    autograd on PyTorch. A subclass provides:

    - `players()`: the trainable parts, `{name: layer or list of layers}`.
      Each player has its own optimizer. Default: one player, `"model"`,
      owning every trainable variable.
    - `default_optimizer(player)`: what a bare `compile()` uses.
    - `log_names()`: the names `train_step_logic` returns, `"loss"` among
      them. Each gets a `keras.metrics.Mean` that resets every epoch.
    - `train_step_logic(x, y=None, sample_weight=None)`: one step; calls
      `self.minimize(player, loss_fn)` once per update and returns a dict of
      scalar logs. `test_step_logic` likewise for `evaluate`, no updates.

    and may set `data_shape` (the shape of one example), `data_dtype`
    (`"float"` or `"int"`) and `data_range` (`(low, high)`, the values the
    model documents for its data) so that wrong data is rejected with a
    clear error (see `validate_data`), and override `validate_labels` to
    check the `y` of `fit` and `evaluate` (class labels).

    Inside a step:

    - `self.minimize(player, loss_fn)` differentiates `loss_fn()` (a
      closure that computes the loss from scratch) with respect to that
      player's trainable variables only and applies the player's optimizer.
      Call it several times for several updates (critic steps).
    - `self.gradient(fn, x)` is the gradient of `sum(fn(x))` with respect
      to `x`, itself differentiable: gradient penalties go in a loss.
    - Random draws use `seed=self.seed_generator` (never an unseeded draw).
    - Non-trainable updates (BatchNorm statistics, EMA) just work.

    Args:
        seed: None or an integer in [0, 2**31 - 1] (the range every
            backend accepts; anything else is a `ValueError`): seeds the
            training noise and, in the zoo's models, the default networks'
            initial weights.
        **kwargs: `keras.Model` arguments (`name`, `dtype`, ...).

    Example:

    ```python
    import keras
    from keras import ops
    from zoo.core import GenerativeModel

    class Regressor(GenerativeModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.net = keras.Sequential([keras.Input((2,)),
                                         keras.layers.Dense(1)])
            self.data_shape = (2,)

        def train_step_logic(self, x, y=None, sample_weight=None):
            def loss_fn():
                return ops.mean((self.net(x, training=True) - y) ** 2)
            return {"loss": self.minimize("model", loss_fn)}

    model = Regressor()
    model.compile()
    x = keras.random.normal((64, 2), seed=0)
    model.fit(x, ops.sum(x, axis=1, keepdims=True), epochs=2, verbose=0)
    ```
    """

    data_shape = None
    data_dtype = "float"
    # `(low, high)`: the range the model documents for its data ([-1, 1]
    # for images), checked eagerly by `fit` and `evaluate`; None: any.
    data_range = None

    def __init__(self, *, seed=None, **kwargs):
        seed = validators.check_seed(seed)
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Draws inside `compile_function`; reset from the caller's seed at
        # every call, so it never disturbs the training noise.
        self.sampling_seed = keras.random.SeedGenerator(0, name="sampling_seed")
        self._trackers = {}

    # ----------------------------------------------------------------------
    # What subclasses describe.

    def players(self):
        """The trainable parts: `{name: layer or list of layers}`."""
        return {"model": self}

    def default_optimizer(self, player):
        """The optimizer a bare `compile()` gives `player`."""
        return keras.optimizers.Adam(learning_rate=1e-3)

    def log_names(self):
        """Names of the scalars `train_step_logic` returns; includes "loss"."""
        return ("loss",)

    def log_direction(self, name):
        """`"down"` if a lower value of log `name` is better, `"up"` if a
        higher one is. `fit` sets the `mode` of `EarlyStopping`,
        `ModelCheckpoint` and `ReduceLROnPlateau` callbacks left at
        `mode="auto"` that monitor `name` or `"val_" + name` from it.
        Default: `"down"`, right for losses, bits per dimension and
        perplexity of a language model."""
        return "down"

    def train_step_logic(self, x, y=None, sample_weight=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `train_step_logic(x, y, "
            "sample_weight)` returning a dict of scalar logs."
        )

    def test_step_logic(self, x, y=None, sample_weight=None):
        raise NotImplementedError(
            f"{type(self).__name__} does not implement `test_step_logic`, "
            "so it cannot be evaluated."
        )

    # ----------------------------------------------------------------------
    # What a step uses.

    def minimize(self, player, loss_fn):
        """One update of `player`: minimizes `loss_fn()`, returns the loss.

        `loss_fn` takes no arguments and must compute the loss from scratch
        (on JAX it runs inside `jax.value_and_grad`; tensors made inside it
        cannot be used after it returns). Only `player`'s variables change.
        """
        variables = self._player_variables(cached=True).get(player)
        if variables is None:
            raise ValueError(
                f"Unknown player {player!r} in `minimize`; this model's "
                f"players are {list(self._player_variables())}."
            )
        optimizer = self.player_optimizer(player)
        record = None
        if gradient_norms.enabled(self):
            def record(grads):
                gradient_norms.record(self, player, variables, grads, optimizer)
        loss = backend_module().minimize(
            self, loss_fn, variables, optimizer, record=record
        )
        return ops.stop_gradient(loss)

    def gradient(self, fn, x):
        """Gradient of `sum(fn(x))` with respect to `x`, differentiable again.

        For gradient penalties (WGAN-GP, R1): a loss passed to `minimize`
        may contain `self.gradient(critic, x_hat)`, and `minimize`
        differentiates through it to the weights.
        """
        return backend_module().gradient(self, fn, x)

    def compile_function(self, fn, jit_compile=None):
        """Compiles `fn(*tensors)` for inference: sampling and generation loops.

        Returns `call(*tensors, seed=None)`. The function runs inside
        `jax.jit` over the model's current variable values on JAX (so it
        sees weights changed by later training without retracing), as a
        `tf.function` on TensorFlow, and eagerly under `torch.no_grad()` on
        PyTorch. Write loops with `keras.ops.fori_loop`/`while_loop` so they
        compile too, and use `self.fori_loop` for loops that draw noise.
        Inside `fn`, draw noise with `seed=self.sampling_seed`;
        `seed` (an int) makes the draws reproducible, `None` draws a fresh
        one. `fn` takes only tensors: build one compiled function per
        setting of its Python arguments. Variable updates inside `fn` are
        not kept.
        """
        inner = backend_module().compile_function(
            self, fn, self.sampling_seed.state, jit_compile=jit_compile
        )

        def call(*args, seed=None):
            if seed is None:
                seed = int(np.random.randint(1, 2**31 - 1))
            # [0, 2**31 - 1] on every backend (`validators.check_seed`).
            seed = validators.check_seed(seed, allow_none=False)
            state = np.array([seed, 0], dtype=self.sampling_seed.state.dtype)
            return inner(state, *args)

        return call

    def fori_loop(self, lower, upper, body, init_val):
        """`keras.ops.fori_loop` that draws fresh noise at every iteration.

        A compiled loop traces its body once; a `SeedGenerator` advanced in
        the body would hand every iteration the same noise on JAX. This
        loop carries `self.sampling_seed`'s state through the iterations.
        """
        state = self.sampling_seed.state

        def threaded(i, carry):
            value, seed_state = carry
            state.assign(seed_state)
            value = body(i, value)
            return value, state.value

        value, seed_state = ops.fori_loop(lower, upper, threaded, (init_val, state.value))
        state.assign(seed_state)
        return value

    # ----------------------------------------------------------------------
    # Hooks for callbacks (the `callbacks` package): live weights, gradient
    # norms, extra saved state. Callbacks use these, never the backend.

    def record_gradient_norms(self, enabled=True):
        """Makes every `minimize` report gradient norms in the step's logs.

        When on, the logs of each training step carry, for each player,
        `grad_norm/<player>` (the global norm of the gradient of its update)
        and `grad_norm/<player>/<layer>` (one per layer owning trainable
        variables; nested layers are named by their path inside the
        player). Norms are of the unscaled gradient (loss scaling divided
        out), averaged over the player's updates in the step, and computed
        inside the compiled step. Turning this on or off rebuilds the step
        function once; off (the default) nothing is computed. Returns the
        previous setting.
        """
        return gradient_norms.switch(self, enabled)

    def trainable_values(self, copy=False):
        """Current values of `trainable_variables`, also in the middle of `fit`.

        On JAX, `fit` keeps the live weights outside the variables between
        synchronizations; this returns them without synchronizing, so it is
        cheap after every batch. `copy=True` returns copies that later
        updates leave alone (on PyTorch the values are the parameters).
        """
        return backend_module().trainable_values(self, copy=copy)

    def set_trainable_values(self, values):
        """Assigns `values` to `trainable_variables`, also in the middle of
        `fit`: the next training step starts from them."""
        backend_module().set_trainable_values(self, values)

    def moving_average(self, averages, decay):
        """`decay * averages + (1 - decay) * trainable_values()`, compiled.

        `averages`: the list a previous call returned, or None to start from
        copies of the current values. Returns the new list; do not use the
        old one again (its buffers may be reused).
        """
        if averages is None:
            return self.trainable_values(copy=True)
        return backend_module().moving_average(
            averages, self.trainable_values(), float(decay)
        )

    def set_saved_state(self, name, fn):
        """Saves `fn()` (a dict of NumPy arrays) with the model's weights.

        For callbacks whose state must survive `BackupAndRestore` or a
        checkpoint (the EMA's average); `fn=None` unregisters. After
        `load_weights`/`load_model`, `loaded_state(name)` returns it.
        """
        saved_state.register(self, name, fn)

    def loaded_state(self, name, pop=True):
        """The state `name` the last weights load found (a dict), or None."""
        return saved_state.loaded(self, name, pop)

    def player_optimizer(self, player):
        """The optimizer that updates `player`."""
        self._assert_compiled()
        if isinstance(self.optimizer, MultiOptimizer):
            return self.optimizer[player]
        return self.optimizer

    # ----------------------------------------------------------------------
    # compile

    def compile(
        self,
        optimizer=None,
        *,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """Sets one optimizer per player.

        Args:
            optimizer: `None` for each player's default; for a model with
                one player, an optimizer or its name; otherwise a dict
                `{player: optimizer}` naming every player.
            run_eagerly, steps_per_execution, jit_compile: as in
                `keras.Model.compile`, except that on PyTorch
                `jit_compile=True` traces the whole training (and test)
                step once per batch shape and compiles it with
                TorchInductor (`zoo/core/torch_step.py`) instead of Keras's
                `torch.compile`; the first step then takes 20 s to minutes
                on a small CPU. The default ("auto") on PyTorch runs a
                `fit` of at least `zoo.core.TRACE_FIT` (100) steps, and
                every `fit` after it, with that traced step without
                compiling it (a trace of about a second; the first batch
                shape only); shorter fits run eagerly. Every one of these
                steps draws the same random numbers for the same seed. On
                TensorFlow and JAX "auto" is Keras's rule.
            auto_scale_loss: under a `mixed_float16` policy, wrap each
                player's optimizer in a `keras.optimizers.LossScaleOptimizer`.
        """
        self._assert_networks_built()
        player_variables = self._player_variables()
        players = list(player_variables)
        if optimizer is None:
            optimizer = {p: self.default_optimizer(p) for p in players}
        optimizer = resolve_optimizer(optimizer, players, type(self).__name__)
        scale = auto_scale_loss and self.dtype_policy.name == "mixed_float16"
        if isinstance(optimizer, MultiOptimizer):
            if scale:
                for i, inner in enumerate(optimizer.optimizers):
                    if not isinstance(inner, keras.optimizers.LossScaleOptimizer):
                        optimizer.optimizers[i] = (
                            keras.optimizers.LossScaleOptimizer(inner)
                        )
            # Keras would wrap the whole MultiOptimizer; each player's
            # optimizer scales its own loss instead.
            scale = False
        super().compile(
            optimizer=optimizer,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=scale,
        )
        self.__dict__.pop("_train_function_by_norms", None)
        # Our own "loss" tracker replaces the one Keras made for its losses.
        self._loss_tracker = None
        for name in self.log_names():
            if name not in self._trackers:
                self._trackers[name] = keras.metrics.Mean(name=name)
        nonfinite.tracker(self)
        if isinstance(self.optimizer, MultiOptimizer):
            self.optimizer.build_players(player_variables)
        else:
            self.optimizer.build(player_variables[players[0]])
        self._compile_settings = {
            "run_eagerly": run_eagerly,
            "steps_per_execution": steps_per_execution,
            "jit_compile": jit_compile,
            "auto_scale_loss": auto_scale_loss,
        }

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            **self._compile_settings,
        }

    def compile_from_config(self, config):
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"]
        )
        self.compile(**config)

    # ----------------------------------------------------------------------
    # The step, as Keras's trainers call it.

    def train_step(self, *args):
        return backend_module().train_step(self, *args)

    def _make_step_function(self, kind, force):
        # The backend's own train/test function where it has one for these
        # settings (`zoo.core.tensorflow`, `zoo.core.torch_step`), else
        # Keras's.
        attribute = f"{kind}_function"
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        maker = getattr(backend_module(), f"make_{kind}_function", None)
        function = maker(self) if maker is not None else None
        if function is None:
            return getattr(super(), f"make_{kind}_function")(force=force)
        setattr(self, attribute, function)
        return function

    def make_train_function(self, force=False):
        return self._make_step_function("train", force)

    def make_test_function(self, force=False):
        return self._make_step_function("test", force)

    @functools.wraps(keras.Model.fit)  # its signature and docstring
    def fit(self, *args, **kwargs):
        arguments, checks = fit_inputs.prepare("fit", self, args, kwargs)
        with self._refusals(checks):
            return super().fit(**arguments)

    @functools.wraps(keras.Model.evaluate)
    def evaluate(self, *args, **kwargs):
        arguments, checks = fit_inputs.prepare("evaluate", self, args, kwargs)
        with self._refusals(checks):
            return super().evaluate(**arguments)

    @contextlib.contextmanager
    def _refusals(self, checks):
        """Around `fit` and `evaluate`: a batch refused by the checks comes out
        as its `ValueError` (`BatchChecks.reraise`), and on JAX the model
        keeps its weights after any error (Keras's `evaluate` leaves them
        emptied; see `fit_inputs._KeepJaxState`) and a batch its devices do
        not divide is laid out whole on each (`zoo.core.jax.uneven_batches`)."""
        uneven = getattr(backend_module(), "uneven_batches", contextlib.nullcontext)
        try:
            with checks.reraise() if checks is not None else contextlib.nullcontext(), uneven():
                yield
        except BaseException:
            sync = getattr(self, "jax_state_sync", None)
            if sync is not None:
                sync()
            raise

    def __setattr__(self, name, value):
        # Keras's JAX trainer stores the live state here after every step;
        # tracking it (wrapping the dict and its lists of arrays, which
        # hold no layers or variables) cost more than a small model's step.
        if name == "_jax_state":
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def test_step(self, *args):
        return backend_module().test_step(self, *args)

    # Updates whose gradients hold NaN or Inf are skipped; `fit` stops after
    # this many consecutive training steps with a skipped update (None:
    # never). See `zoo.core.nonfinite`.
    max_consecutive_skips = nonfinite.DEFAULT_MAX_CONSECUTIVE_SKIPS

    def _get_metrics_result_or_logs(self, logs):
        # Keras's epoch-end and `evaluate` logs; averaged over the ranks of
        # a multi-process run by the backend where it must (PyTorch).
        logs = super()._get_metrics_result_or_logs(logs)
        reduce = getattr(backend_module(), "reduce_logs", None)
        return logs if reduce is None else reduce(self, logs)

    def run_step(self, data, training):
        """The backend-agnostic body of a train or test step."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self.validate_data(x)
        gradient_norms.begin_step(self)
        nonfinite.begin_step(self)
        if training:
            logs = self.train_step_logic(x, y, sample_weight)
        else:
            logs = self.test_step_logic(x, y, sample_weight)
        logs = self._check_logs(logs, training)
        batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
        # A replica a batch left without examples (TensorFlow strategies)
        # counts for 0 examples in every tracker; its logs, means of
        # nothing, become 1 (finite, and finite in a log too).
        empty = getattr(backend_module(), "empty_replica", lambda: None)()
        results = {}
        for name, value in logs.items():
            if empty is not None:
                value = ops.where(empty, ops.ones_like(value), value)
            results[name] = self._track(self._trackers[name], value, batch_size)
        if training and isinstance(self.optimizer, MultiOptimizer):
            self.optimizer.iterations.assign_add(1)
        if training:
            results.update(gradient_norms.step_logs(self))
        if training:  # updates skipped for non-finite gradients (zoo.core.nonfinite)
            results.update(nonfinite.step_logs(self))
        return results

    @staticmethod
    def _track(tracker, value, batch_size):
        """`tracker.update_state(value, batch_size)`, then its result.

        For a scalar, the two additions `Mean.update_state` comes down to,
        without its broadcasting and dtype checks: a dozen eager operations
        per log on PyTorch (in compiled steps the same graph either way).
        """
        value = ops.stop_gradient(value)
        if type(tracker) is not keras.metrics.Mean or len(ops.shape(value)):
            tracker.update_state(value, batch_size)
            return tracker.result()
        count = ops.cast(batch_size, tracker.dtype)
        tracker.total.assign_add(ops.cast(value, tracker.dtype) * count)
        tracker.count.assign_add(count)
        return ops.divide_no_nan(tracker.total, tracker.count)

    def validate_data(self, x):
        """Rejects data whose shape or dtype differs from `data_shape`.

        Given NumPy values (as `fit` and `evaluate` do before training),
        also checks them against `data_range`: data beyond the range by
        more than its width (images in [0, 255] for a model of [-1, 1])
        are a `ValueError`, data a little outside it a warning (see
        `zoo.core.validators.check_data_range`). Inside a step `x` is a
        tensor and only its shape and dtype are checked.
        """
        validators.check_data(
            x, self.data_shape, self.data_dtype, self.data_range, type(self).__name__
        )

    def validate_labels(self, y):
        """Checks the `y` that `fit` and `evaluate` get, as NumPy (None when
        there is none), before training; a conditional model checks its
        class labels here (`zoo.core.validators.check_labels`). Accepts
        anything by default."""

    def _check_logs(self, logs, training):
        if not isinstance(logs, dict):
            raise ValueError(
                f"{type(self).__name__}.{'train' if training else 'test'}"
                f"_step_logic must return a dict of scalars; got {logs!r}."
            )
        unknown = [name for name in logs if name not in self._trackers]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} returned logs {unknown} that are not "
                f"in `log_names()` = {list(self.log_names())}."
            )
        if training and "loss" not in logs:
            raise ValueError(
                f"{type(self).__name__}.train_step_logic must return a "
                "'loss' entry (TerminateOnNaN and EarlyStopping read it)."
            )
        return logs

    # ----------------------------------------------------------------------
    # Bookkeeping.

    def _assert_compiled(self):
        if not getattr(self, "compiled", False):
            raise ValueError(
                f"{type(self).__name__} must be compiled before training: "
                "call `model.compile()`."
            )

    def _assert_networks_built(self):
        unbuilt = [
            layer.name
            for layer in self._flatten_layers(include_self=False)
            if not layer.built
        ]
        if unbuilt:
            raise ValueError(
                f"{type(self).__name__} has unbuilt layers {unbuilt}: build "
                "every network (for example with a `keras.Input`) before "
                "`compile()`."
            )
        self.built = True

    def _mark_built(self):
        """Marks the model built once every sub-network is, so that a model
        just constructed (never trained) can `load_weights`, `summary` and
        `count_params`, as a built Keras model can. A subclass calls it at
        the end of its constructor."""
        if all(layer.built for layer in self._flatten_layers(include_self=False)):
            self.built = True

    def load_weights(self, filepath, *args, **kwargs):
        # A model built from its constructor arguments has every weight its
        # weights file holds; Keras refuses it only because `build` was
        # never called.
        if not self.built:
            self._assert_networks_built()
        return super().load_weights(filepath, *args, **kwargs)

    def summary(self, *args, print_fn=None, **kwargs):
        if not self.built:
            self._mark_built()
        super().summary(*args, print_fn=print_fn, **kwargs)
        # Keras's "Total params" adds the optimizer's state (Adam: two
        # slots per trainable weight) to the model's weights; say which
        # figure `count_params()` is.
        optimizer = getattr(self, "optimizer", None)
        if self.built and optimizer is not None and optimizer.variables:
            count = self.count_params()
            slots = sum(int(np.prod(v.shape)) for v in optimizer.variables)
            line = (
                f" Model params (count_params()): {count:,} = Trainable + "
                f"Non-trainable; Total params also counts the {slots:,} "
                "optimizer params (optimizer state, not model weights)."
            )
            (print_fn or print)(line)

    def _player_variables(self, cached=False):
        # `minimize` runs every step on torch; the walk over the layers is
        # done once per compile. Stored past Keras's attribute tracking so
        # the model does not adopt the variables as its own.
        if cached and getattr(self, "_player_variables_cache", None):
            return self._player_variables_cache
        players = self.players()
        result = {}
        owner = {}
        for name, parts in players.items():
            if not isinstance(parts, (list, tuple)):
                parts = [parts]
            variables = []
            for part in parts:
                for v in part.trainable_variables:
                    if id(v) in owner:
                        if owner[id(v)] != name:
                            raise ValueError(
                                f"Variable {v.path} belongs to players "
                                f"{owner[id(v)]!r} and {name!r}; each "
                                "variable must belong to one player."
                            )
                        continue
                    owner[id(v)] = name
                    variables.append(v)
            result[name] = variables
        object.__setattr__(self, "_player_variables_cache", result)
        return result

    def _seed_states(self):
        return saved_state.seed_states(self)

    # Keras does not save `SeedGenerator` states; we do, so that a loaded
    # model resumes training with the same noise an uninterrupted run draws.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        saved_state.save(self, store)

    def load_own_variables(self, store):
        own, seed_keys = saved_state.split(self, store)
        super().load_own_variables(own)
        saved_state.restore_seeds(self, store, seed_keys)

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config

    # ----------------------------------------------------------------------
    # Presets (zoo.presets does the work; imported here to avoid a cycle).

    @classmethod
    def from_preset(cls, preset, load_weights=True, sha256=None):
        """Loads a preset (built-in name, directory, or file:// / https://
        archive URL) that must hold a `cls`; see `zoo.from_preset`."""
        from zoo.presets import from_preset

        expected = None if cls is GenerativeModel else cls
        return from_preset(preset, load_weights, sha256=sha256, expected_class=expected)

    def save(self, filepath, *args, **kwargs):
        # In a multi-process run every process runs the script: rank 0
        # alone writes (zoo.core.distributed).
        if not distributed.is_chief():
            return None
        return super().save(filepath, *args, **kwargs)

    def save_to_preset(self, directory, metadata=None, overwrite=False):
        """Writes this model as a preset directory, atomically; see
        `zoo.presets.save_to_preset`."""
        from zoo.presets import save_to_preset

        if not distributed.is_chief():  # rank 0 alone writes
            return directory
        with distributed.without_distribution():
            return save_to_preset(self, directory, metadata=metadata, overwrite=overwrite)
