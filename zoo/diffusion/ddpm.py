"""DDPM: denoising diffusion with DDPM, DDIM and DPM-Solver++ sampling."""

import contextlib
import math

import keras
import numpy as np
from keras import ops

from zoo.core import LONG_LOOP, GenerativeModel, compile_step, compiles_steps
from zoo.diffusion.samplers import coefficients
from zoo.diffusion.schedules import SCHEDULES, alphas_cumprod
from zoo.layers.denoisers import mlp_denoiser, unet_denoiser

PREDICTIONS = ("epsilon", "v", "x0")
# Runs of more than `LONG_LOOP` steps are cut into this many compiled chunks,
# with a progress bar.
_CHUNKS = 10


@keras.saving.register_keras_serializable(package="zoo")
class DDPM(GenerativeModel):
    """Denoising diffusion probabilistic model (Ho et al., 2020).

    Trains a denoiser to undo `x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`
    at random timesteps, and samples with `"ddpm"` (ancestral), `"ddim"` or
    `"dpm++2m"` in as few steps as asked. The sampling loop is compiled on
    each backend (see `GenerativeModel.compile_function`).

    Args:
        data_shape: shape of one example: `(H, W, C)` images in [-1, 1]
            (default denoiser: a U-Net) or `(d,)` vectors (a residual MLP).
        schedule: `"cosine"` or `"linear"`.
        timesteps: the training horizon T.
        prediction: what the denoiser predicts: `"v"` (default; stays well
            conditioned at the noisiest timesteps, where recovering x0 from
            an epsilon prediction divides by sqrt(abar_T) ~ 1e-4),
            `"epsilon"` or `"x0"`.
        min_snr_gamma: if set, Min-SNR-gamma loss weighting (Hang et al.,
            2023), e.g. 5.0.
        num_classes: enables class conditioning with classifier-free
            guidance; `fit(x, labels)` then.
        label_dropout: share of training labels replaced by "no label".
        denoiser: your own Keras model taking `[x_t, t]` (plus `labels` when
            conditional) and returning a tensor shaped like `x_t`.
        ema_decay: decay of the exponential moving average of the
            denoiser's weights kept during training (None: no average),
            warmed up as `min(ema_decay, (1 + n) / (10 + n))` after n updates.
            `sample` uses the average by default; `with model.ema_weights():`
            swaps it in for anything else (evaluation, saving a preset).
        hidden_units, num_blocks: the default MLP denoiser.
        channels, channel_multipliers, num_res_blocks: the default U-Net.

    Calling the model, `model([x_t, t])` (or `[x_t, t, labels]`), returns
    the denoiser's prediction.

    Example:

    ```python
    from zoo.data import Ring
    from zoo.diffusion import DDPM

    model = DDPM((2,), timesteps=100, hidden_units=64)
    model.compile()
    model.fit(Ring(std=0.1).sample(2048, seed=0), batch_size=256, epochs=2)
    points = model.sample(500, steps=20, sampler="dpm++2m", seed=0)
    ```
    """

    def __init__(
        self,
        data_shape,
        *,
        schedule="cosine",
        timesteps=1000,
        prediction="v",
        min_snr_gamma=None,
        num_classes=None,
        label_dropout=0.1,
        denoiser=None,
        ema_decay=0.999,
        hidden_units=256,
        num_blocks=3,
        channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        data_shape = tuple(int(d) for d in data_shape)
        if len(data_shape) not in (1, 3) or min(data_shape) < 1:
            raise ValueError(
                "`data_shape` must be (d,) for vectors or (height, width, channels) "
                f"for images; received {data_shape}."
            )
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}; received {schedule!r}.")
        if prediction not in PREDICTIONS:
            raise ValueError(
                f"`prediction` must be one of {PREDICTIONS}; received {prediction!r}."
            )
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"`min_snr_gamma` must be > 0 or None; received {min_snr_gamma}.")
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1 or None; received {num_classes}.")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"`label_dropout` must be in [0, 1); received {label_dropout}.")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in (0, 1) or None; received {ema_decay}.")
        self.data_shape = data_shape
        self.schedule = schedule
        self.timesteps = int(timesteps)
        self.prediction = prediction
        self.min_snr_gamma = min_snr_gamma
        self.num_classes = int(num_classes) if num_classes else None
        self.label_dropout = float(label_dropout)
        self.ema_decay = ema_decay
        self.hidden_units = hidden_units
        self.num_blocks = num_blocks
        self.channels = channels
        self.channel_multipliers = tuple(channel_multipliers)
        self.num_res_blocks = num_res_blocks
        self.alphas_cumprod = alphas_cumprod(schedule, self.timesteps)
        self._custom_denoiser = denoiser is not None
        if denoiser is None:
            if len(data_shape) == 1:
                denoiser = mlp_denoiser(data_shape, hidden_units=hidden_units,
                                        num_blocks=num_blocks, num_classes=self.num_classes)
            else:
                denoiser = unet_denoiser(data_shape, channels=channels,
                                         channel_multipliers=self.channel_multipliers,
                                         num_res_blocks=num_res_blocks,
                                         num_classes=self.num_classes)
        self.denoiser = denoiser
        self.ema = []
        if ema_decay is not None:
            for i, v in enumerate(denoiser.trainable_variables):
                average = self.add_weight(shape=v.shape, initializer="zeros",
                                          trainable=False, name=f"ema_{i}")
                # A copy: sharing one buffer breaks JAX's donation of the state.
                average.assign(ops.convert_to_numpy(v))
                self.ema.append(average)
        self._samplers = {}
        self._steps = {}
        self._sampled_steps = {}  # sampler steps run per setting ("auto" traces on PyTorch)

    def call(self, inputs, training=False):
        return self.denoiser(inputs, training=training)

    # ------------------------------------------------------------------
    # The forward process and the training objective.

    def _abar(self, t):
        table = ops.convert_to_tensor(self.alphas_cumprod.astype("float32"))
        abar = ops.take(table, ops.cast(t, "int32"))
        return ops.reshape(abar, (-1,) + (1,) * len(self.data_shape))

    def q_mean_variance(self, x0, t):
        """Mean and variance of q(x_t | x_0): `sqrt(abar_t) x0`, `1 - abar_t`."""
        abar = self._abar(t)
        return ops.sqrt(abar) * x0, (1.0 - abar) * ops.ones_like(x0)

    def q_sample(self, x0, t, noise):
        """Draws x_t from q(x_t | x_0) with the given standard-normal `noise`."""
        abar = self._abar(t)
        return ops.sqrt(abar) * x0 + ops.sqrt(1.0 - abar) * noise

    def _loss(self, x0, t, noise, labels, training):
        abar = self._abar(t)
        x_t = ops.sqrt(abar) * x0 + ops.sqrt(1.0 - abar) * noise
        inputs = [x_t, t] + ([labels] if self.num_classes else [])
        pred = self.denoiser(inputs, training=training)
        target = {
            "epsilon": noise,
            "v": ops.sqrt(abar) * noise - ops.sqrt(1.0 - abar) * x0,
            "x0": x0,
        }[self.prediction]
        axes = tuple(range(1, len(self.data_shape) + 1))
        per_example = ops.mean((pred - target) ** 2, axis=axes)
        if self.min_snr_gamma is not None:
            snr = ops.reshape(abar / (1.0 - abar), (-1,))
            clipped = ops.minimum(snr, self.min_snr_gamma)
            weight = {"epsilon": clipped / snr, "v": clipped / (snr + 1.0), "x0": clipped}
            per_example = per_example * weight[self.prediction]
        return ops.mean(per_example)

    def _draws(self, x, y):
        n = ops.shape(x)[0]
        t = keras.random.randint((n,), 0, self.timesteps, seed=self.seed_generator)
        noise = keras.random.normal(ops.shape(x), seed=self.seed_generator)
        labels = None
        if self.num_classes:
            if y is None:
                raise ValueError(
                    "This DDPM is class-conditional (num_classes="
                    f"{self.num_classes}): train it with fit(x, labels)."
                )
            labels = ops.reshape(ops.cast(y, "int32"), (-1,))
            if self.label_dropout:
                drop = keras.random.uniform((n,), seed=self.seed_generator) < self.label_dropout
                labels = ops.where(drop, self.num_classes, labels)
        return t, noise, labels

    def train_step_logic(self, x, y=None, sample_weight=None):
        t, noise, labels = self._draws(x, y)
        loss = self.minimize("model", lambda: self._loss(x, t, noise, labels, True))
        if self.ema:
            # Warm-up (as in common EMA implementations): early averages
            # would otherwise be dominated by the random initial weights.
            updates = ops.cast(self.optimizer.iterations, "float32")
            decay = ops.minimum(self.ema_decay, (1.0 + updates) / (10.0 + updates))
            for average, v in zip(self.ema, self.denoiser.trainable_variables):
                average.assign(decay * average + (1.0 - decay) * v)
        return {"loss": loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        t, noise, labels = self._draws(x, y)
        return {"loss": self._loss(x, t, noise, labels, False)}

    @contextlib.contextmanager
    def ema_weights(self):
        """Swaps the averaged weights into the denoiser inside the block."""
        if not self.ema:
            yield
            return
        variables = self.denoiser.trainable_variables
        saved = [v.numpy() for v in variables]
        for v, average in zip(variables, self.ema):
            v.assign(average)
        try:
            yield
        finally:
            for v, value in zip(variables, saved):
                v.assign(value)

    # ------------------------------------------------------------------
    # Sampling.

    def _x0_and_eps(self, pred, x, t, clip):
        abar = self._abar(t)
        a, s = ops.sqrt(abar), ops.sqrt(1.0 - abar)
        if self.prediction == "epsilon":
            eps = pred
            x0 = (x - s * eps) / a
        elif self.prediction == "v":
            x0 = a * x - s * pred
            eps = s * x + a * pred
        else:
            x0 = pred
            eps = (x - a * x0) / s
        if clip:
            x0 = ops.clip(x0, -1.0, 1.0)
            eps = (x - a * x0) / s
        return x0, eps

    def _guided_prediction(self, x, t, labels, guidance):
        if not self.num_classes:
            return self.denoiser([x, t], training=False)
        if guidance is None:
            return self.denoiser([x, t, labels], training=False)
        null = ops.full_like(labels, self.num_classes)
        both = self.denoiser(
            [ops.concatenate([x, x]), ops.concatenate([t, t]),
             ops.concatenate([labels, null])],
            training=False,
        )
        n = ops.shape(x)[0]
        cond, uncond = both[:n], both[n:]
        return uncond + guidance * (cond - uncond)

    def _denoising_step(self, batch, guided, clip, compiled):
        """One sampler step `x <- c . (x, x0, x0_prev, eps, z)` through
        `compile_step` (on PyTorch traced or compiled by TorchInductor as
        `compiled` says; itself on JAX and TensorFlow, whose whole loop
        compiles). Static shapes: one per batch size."""
        key = (batch, guided, clip, compiled)
        if key not in self._steps:
            def step(i, state):
                x, x0_prev, z, labels, ts, table, offset, guidance = state
                k = offset + i
                t = ops.broadcast_to(ops.take(ts, k), (batch,))
                c = ops.take(table, k, axis=0)
                pred = self._guided_prediction(
                    x, t, labels if self.num_classes else None,
                    guidance if guided else None,
                )
                x0, eps = self._x0_and_eps(pred, x, t, clip)
                x = c[0] * x + c[1] * x0 + c[2] * x0_prev + c[3] * eps + c[4] * z
                return x, x0

            self._steps[key] = compile_step(self, step, jit_compile=compiled)
        return self._steps[key]

    def _sampling_loop(self, batch, length, guided, clip, jit_compile, compile_steps):
        # Every shape is in the key, so no compiled function ever sees two
        # (TensorFlow would relax them to unknown ones).
        key = (batch, length, guided, clip, jit_compile, compile_steps)
        if key not in self._samplers:
            def run(x, x0_prev, labels, ts, table, offset, guidance):
                step = self._denoising_step(batch, guided, clip, compile_steps)

                def body(i, state):
                    x, x0_prev = state
                    # The noise is drawn outside the compiled step (see
                    # `compile_step`); `fori_loop` gives each step its own.
                    z = keras.random.normal(ops.shape(x), seed=self.sampling_seed)
                    return step(i, (x, x0_prev, z, labels, ts, table, offset, guidance))

                return self.fori_loop(0, length, body, (x, x0_prev))

            # "auto": a plain `tf.function` on TensorFlow, where XLA ran the
            # U-Net's steps slower on CPU (26 against 20 ms).
            self._samplers[key] = self.compile_function(
                run, jit_compile=None if jit_compile == "auto" else jit_compile
            )
        return self._samplers[key]

    def sample(
        self,
        num_samples,
        steps=50,
        sampler="ddim",
        eta=0.0,
        guidance_scale=None,
        labels=None,
        seed=None,
        use_ema=True,
        clip_denoised=None,
        return_trajectory=False,
        verbose="auto",
        jit_compile="auto",
    ):
        """Draws `num_samples` samples, as float32 NumPy in data space.

        Args:
            steps: denoiser evaluations, 1..timesteps.
            sampler: `"ddpm"` (ancestral), `"ddim"` or `"dpm++2m"`.
            eta: DDIM's noise level (0: deterministic; 1: as DDPM).
            guidance_scale: classifier-free guidance weight w (1: plain
                conditional sampling); needs `labels`.
            labels: class of each sample (int or `(num_samples,)` ints) for
                a conditional model; `None` samples without a label.
            use_ema: sample with the averaged weights when kept.
            clip_denoised: clip each predicted clean sample to [-1, 1]
                (default: on for images, off for vectors).
            return_trajectory: also return the states `x` visited, about
                ten of them, from noise to data, as `(k, n, ...)`.
            verbose: progress bar for long runs ("auto": above 100 steps).
            jit_compile: how the sampling loop compiles. `"auto"`: the whole
                loop by `jax.jit` on JAX and as a `tf.function` on
                TensorFlow; on PyTorch, where the loop runs in Python, each
                step traced once and compiled by TorchInductor
                (`zoo.core.compile_step`) for runs over 100 steps, or once
                a step for this number of samples and guidance setting is
                compiled (it is kept); shorter runs step eagerly until runs
                of this setting have taken more than 100 steps in all (this
                one included), then run the step traced once (about a
                second; no Keras layer calls per step, the same numbers as
                eager), as compiling takes 10-40 s on a CPU and pays off
                over a few hundred steps. True: XLA on TensorFlow and every
                PyTorch step compiled. False: no `jax.jit` on JAX, no
                tracing or compilation on PyTorch (debugging).
        """
        num_samples = int(num_samples)
        if num_samples < 1:
            raise ValueError(f"`num_samples` must be >= 1; received {num_samples}.")
        ts, table = coefficients(sampler, self.alphas_cumprod, steps, eta)
        labels = self._check_labels(labels, guidance_scale, num_samples)
        clip = len(self.data_shape) == 3 if clip_denoised is None else bool(clip_denoised)
        seed = int(np.random.randint(1, 2**31 - 1)) if seed is None else seed
        x = keras.random.normal((num_samples,) + self.data_shape, seed=seed)
        x0_prev = ops.zeros_like(x)
        label_tensor = ops.convert_to_tensor(
            labels if labels is not None else np.zeros(num_samples, np.int32), "int32"
        )
        guidance = ops.convert_to_tensor(
            1.0 if guidance_scale is None else guidance_scale, "float32"
        )
        # Padded to the horizon: one compiled step serves every step count.
        ts_padded = ops.convert_to_tensor(np.pad(ts, (0, self.timesteps - len(ts))))
        table_padded = ops.convert_to_tensor(
            np.pad(table, ((0, self.timesteps - len(ts)), (0, 0)))
        )
        long_run = len(ts) > LONG_LOOP
        guided = guidance_scale is not None
        setting = (num_samples, guided, clip)
        steps_before = self._sampled_steps.get(setting, 0)
        self._sampled_steps[setting] = steps_before + len(ts)
        compile_steps = compiles_steps(
            jit_compile, len(ts), steps_before, setting + (True,) in self._steps
        )
        chunk = len(ts) if not (long_run or return_trajectory) else math.ceil(len(ts) / _CHUNKS)
        show = long_run if verbose == "auto" else bool(verbose)
        progress = keras.utils.Progbar(len(ts), unit_name="step") if show else None
        trajectory = [ops.convert_to_numpy(x)]
        context = self.ema_weights() if use_ema else contextlib.nullcontext()
        with context:
            for start in range(0, len(ts), chunk):
                length = min(chunk, len(ts) - start)
                loop = self._sampling_loop(
                    num_samples, length, guided, clip, jit_compile, compile_steps
                )
                x, x0_prev = loop(
                    x, x0_prev, label_tensor, ts_padded, table_padded,
                    ops.convert_to_tensor(start, "int32"), guidance, seed=seed + start,
                )
                if return_trajectory:
                    trajectory.append(ops.convert_to_numpy(x))
                if progress is not None:
                    progress.update(start + length)
        samples = ops.convert_to_numpy(x).astype(np.float32)
        if return_trajectory:
            return samples, np.stack(trajectory).astype(np.float32)
        return samples

    def _check_labels(self, labels, guidance_scale, num_samples):
        if labels is None:
            if guidance_scale is not None:
                raise ValueError("`guidance_scale` needs `labels` to guide towards.")
            return None if not self.num_classes else np.full(
                num_samples, self.num_classes, np.int32
            )
        if not self.num_classes:
            raise ValueError(
                "`labels` given, but this DDPM is unconditional (num_classes=None)."
            )
        labels = np.asarray(labels)
        if labels.ndim == 0:
            labels = np.full(num_samples, labels)
        if labels.shape != (num_samples,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"`labels` must be an int or {num_samples} ints; received "
                f"shape {labels.shape}, dtype {labels.dtype}."
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"`labels` must be in [0, {self.num_classes - 1}]; received values "
                f"from {labels.min()} to {labels.max()}."
            )
        return labels.astype(np.int32)

    def get_config(self):
        config = {
            **super().get_config(),
            "data_shape": self.data_shape,
            "schedule": self.schedule,
            "timesteps": self.timesteps,
            "prediction": self.prediction,
            "min_snr_gamma": self.min_snr_gamma,
            "num_classes": self.num_classes,
            "label_dropout": self.label_dropout,
            "ema_decay": self.ema_decay,
            "hidden_units": self.hidden_units,
            "num_blocks": self.num_blocks,
            "channels": self.channels,
            "channel_multipliers": self.channel_multipliers,
            "num_res_blocks": self.num_res_blocks,
            "denoiser": (
                keras.saving.serialize_keras_object(self.denoiser)
                if self._custom_denoiser else None
            ),
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("denoiser") is not None:
            config["denoiser"] = keras.saving.deserialize_keras_object(config["denoiser"])
        return cls(**config)
