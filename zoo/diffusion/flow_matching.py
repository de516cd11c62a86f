"""FlowMatching: rectified flow with Euler, Heun and midpoint samplers."""

import keras
import numpy as np
from keras import ops

from zoo.diffusion.diffusion_model import DiffusionModel, check_int, check_number
from zoo.diffusion.flow_samplers import (
    TIME_DENSITIES,
    flow_coefficients,
    flow_times,
)

# The denoiser sees t in [0, 1] as t * 1000 (as SD3 and diffusers do), so
# that its sinusoidal time embedding resolves nearby times.
TIME_SCALE = 1000.0
# Coefficient tables are padded to this many rows (or the step count, if
# more), so one compiled step serves every step count.
_TABLE_ROWS = 1024


@keras.saving.register_keras_serializable(package="zoo")
class FlowMatching(DiffusionModel):
    """Flow matching with the rectified-flow path (Lipman et al., 2023; Liu
    et al., 2023), as Stable Diffusion 3 and Flux train it.

    The data `x0` and Gaussian noise are joined by the straight path
    `x_t = (1 - t) x0 + t noise`, t in [0, 1], and the denoiser learns its
    velocity `noise - x0` by least squares at times drawn from
    `time_density`. Sampling integrates `dx/dt = v(x, t)` from noise (t = 1)
    to data (t = 0) with `"euler"`, `"heun"` or `"midpoint"`, in one
    compiled loop (see `DDPM`). `log_prob` integrates the same ODE the other
    way with the change of variables.

    Args:
        data_shape: `(d,)` vectors (default denoiser: a residual MLP) or
            `(H, W, C)` images in [-1, 1] (a U-Net; `denoiser="dit"` for a
            transformer).
        time_density: training-time density of t: `"uniform"` or
            `"logit_normal"` (t = sigmoid(n), n ~ N(logit_mean, logit_std^2):
            SD3's choice, more weight on the middle times).
        logit_mean, logit_std: the logit-normal's parameters.
        shift: time shift `shift t / (1 + (shift - 1) t)` applied to the
            training times and, by default, to the sampling grid (SD3's
            resolution-dependent shift, see
            `zoo.diffusion.flow_samplers.resolution_shift`; 1: none).
        num_classes: enables class conditioning with classifier-free
            guidance; `fit(x, labels)` then.
        label_dropout: share of training labels replaced by "no label".
        denoiser: `"mlp"`, `"unet"`, `"dit"`, None (MLP for vectors, U-Net
            for images) or your own Keras model taking `[x_t, t]` (t float32,
            `1000 t`), plus `labels` when conditional, returning the velocity.
        denoiser_options: keyword arguments for the chosen denoiser's
            builder (e.g. `{"patch_size": 2, "hidden_dim": 64, "depth": 4}`
            for the DiT, `zoo.layers.dit.DiT`).
        ema_decay: decay of the weights' moving average, used by `sample`
            and `log_prob` (None: none); see `DDPM`.
        hidden_units, num_blocks: the default MLP denoiser.
        channels, channel_multipliers, num_res_blocks: the default U-Net.
        text_encoder: enables text conditioning (images only, U-Net or
            DiT): a `zoo.multimodal.TextEncoder` (or a CLIP's text
            encoder) whose token embeddings the denoiser cross-attends to
            (and whose masked mean joins the time embedding); `fit(images,
            captions)` and `sample(n, prompts=[...], guidance_scale=...)`
            then. See docs/text_to_image.md.
        train_text_encoder: train the text encoder jointly (default) or
            keep it frozen (e.g. one taken from a trained CLIP).
        text_dropout: share of training captions replaced by the learned
            null condition, for classifier-free guidance.
        seed: seeds the denoiser's initial weights and the training noise.

    Example:

    ```python
    from zoo.data import Ring
    from zoo.diffusion import FlowMatching

    model = FlowMatching((2,), hidden_units=64, seed=0)
    model.compile()
    model.fit(Ring(std=0.1).sample(2048, seed=0), batch_size=256, epochs=2, verbose=0)
    points = model.sample(500, steps=10, sampler="heun", seed=0)
    log_p = model.log_prob(points[:8], steps=8)
    ```
    """

    time_dtype = "float32"
    # The denoiser's time input spans [0, timesteps]: t * 1000, as diffusers'
    # flow-matching schedulers' `num_train_timesteps` says.
    timesteps = int(TIME_SCALE)

    def __init__(
        self,
        data_shape,
        *,
        time_density="uniform",
        logit_mean=0.0,
        logit_std=1.0,
        shift=1.0,
        num_classes=None,
        label_dropout=0.1,
        denoiser=None,
        denoiser_options=None,
        ema_decay=0.999,
        hidden_units=256,
        num_blocks=3,
        channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        text_encoder=None,
        train_text_encoder=True,
        text_dropout=0.1,
        seed=None,
        **kwargs,
    ):
        if time_density not in TIME_DENSITIES:
            raise ValueError(f"`time_density` must be one of {TIME_DENSITIES}; "
                             f"received {time_density!r}.")
        self.time_density = time_density
        self.logit_mean = check_number(logit_mean, "logit_mean")
        self.logit_std = check_number(logit_std, "logit_std", 0.0, low_open=True)
        self.shift = check_number(shift, "shift", 0.0, low_open=True)
        super().__init__(
            data_shape, num_classes=num_classes, label_dropout=label_dropout,
            denoiser=denoiser, denoiser_options=denoiser_options, ema_decay=ema_decay,
            hidden_units=hidden_units, num_blocks=num_blocks, channels=channels,
            channel_multipliers=channel_multipliers, num_res_blocks=num_res_blocks,
            text_encoder=text_encoder, train_text_encoder=train_text_encoder,
            text_dropout=text_dropout, seed=seed, **kwargs,
        )

    # ------------------------------------------------------------------
    # Training.

    def sample_times(self, n, seed=None):
        """`n` training times from `time_density`, shifted."""
        seed = self.seed_generator if seed is None else seed
        if self.time_density == "uniform":
            u = keras.random.uniform((n,), seed=seed)
        else:
            u = ops.sigmoid(self.logit_mean + self.logit_std * keras.random.normal((n,), seed=seed))
        if self.shift != 1.0:
            u = self.shift * u / (1.0 + (self.shift - 1.0) * u)
        return u

    def interpolate(self, x0, noise, t):
        """The point `(1 - t) x0 + t noise` of the path at times `t` `(n,)`."""
        t = ops.reshape(t, (-1,) + (1,) * len(self.data_shape))
        return (1.0 - t) * x0 + t * noise

    def _loss(self, x0, t, noise, labels, training):
        x0 = ops.cast(x0, "float32")
        x_t = self.interpolate(x0, noise, t)
        inputs = self._denoiser_inputs(x_t, t * TIME_SCALE, labels, training)
        pred = self._predict(inputs, training=training)
        return ops.mean((pred - (noise - x0)) ** 2)

    def _draws(self, x, y):
        n = ops.shape(x)[0]
        t = self.sample_times(n)
        noise = keras.random.normal(ops.shape(x), seed=self.seed_generator)
        return t, noise, self._training_condition(y, n)

    def train_step_logic(self, x, y=None, sample_weight=None):
        t, noise, labels = self._draws(x, y)
        loss = self.minimize("model", lambda: self._loss(x, t, noise, labels, True))
        self._update_ema()
        return {"loss": loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        t, noise, labels = self._draws(x, y)
        return {"loss": self._loss(x, t, noise, labels, False)}

    # ------------------------------------------------------------------
    # Sampling.

    def velocity(self, x, t, labels=None, guidance_scale=None, prompts=None):
        """The denoiser's velocity at `x` and times `t` `(n,)` in [0, 1],
        with classifier-free guidance when `guidance_scale` is given;
        `labels` for a class-conditional model, `prompts` (one string, or
        one per row of `x`) for a text-conditioned one."""
        t = ops.cast(ops.convert_to_tensor(t), "float32") * TIME_SCALE
        x = ops.convert_to_tensor(x, "float32")
        n = ops.shape(x)[0]
        if self.text_encoder is not None or prompts is not None:
            condition, guided = self._sampling_condition(labels, prompts, guidance_scale, n,
                                                         use_ema=False)
            return self._guided_prediction(x, t, self._step_condition(condition),
                                           guidance_scale if guided else None)
        labels = None if labels is None else ops.convert_to_tensor(labels, "int32")
        if self.num_classes and labels is None:
            labels = ops.full((n,), self.num_classes, "int32")
        return self._guided_prediction(x, t, labels, guidance_scale)

    def _flow_step(self, batch, guided, second_order):
        """One step `x <- x + c_1 v(x, t) + c_2 v(x + c_b v(x, t), t_b)`
        (module `flow_samplers`), written as `compile_step` asks."""
        def step(i, state):
            (x,), (*condition, table, guidance, offset) = state
            c = ops.take(table, offset + i, axis=0)
            labels = self._step_condition(condition)
            guidance = guidance if guided else None
            t = ops.broadcast_to(c[0] * TIME_SCALE, (batch,))
            k1 = self._guided_prediction(x, t, labels, guidance)
            if not second_order:
                return (x + c[3] * k1,)
            t_b = ops.broadcast_to(c[1] * TIME_SCALE, (batch,))
            k2 = self._guided_prediction(x + c[2] * k1, t_b, labels, guidance)
            return (x + c[3] * k1 + c[4] * k2,)

        return step

    def sample(
        self,
        num_samples,
        steps=50,
        sampler="euler",
        guidance_scale=None,
        labels=None,
        prompts=None,
        seed=None,
        shift=None,
        times=None,
        use_ema=True,
        return_trajectory=False,
        verbose="auto",
        jit_compile="auto",
    ):
        """Draws `num_samples` samples, as float32 NumPy in data space.

        Args:
            steps: integration steps, an integer >= 1. Euler evaluates the
                velocity once per step; Heun and midpoint twice.
            sampler: `"euler"`, `"heun"` or `"midpoint"`.
            guidance_scale: classifier-free guidance weight w >= 0 (0: the
                unconditional model, 1: plain conditional sampling); needs
                `labels` or `prompts` and a conditional model.
            labels: class of each sample (int or `(num_samples,)` ints) for
                a conditional model; None samples without a label.
            prompts: a text-conditioned model's prompts: one string for
                every sample, or a list of `num_samples` strings; None
                samples from the null ("no caption") condition.
            seed: int seed of the initial noise; None draws a fresh one.
            shift: time shift of the sampling grid (default: the model's).
            times: explicit decreasing times to visit, from the noise end
                (usually 1) to 0, instead of the shifted even grid; `steps`
                is then `len(times) - 1` (e.g. diffusers'
                `FlowMatchEulerDiscreteScheduler.sigmas`).
            use_ema: sample with the averaged weights when kept.
            return_trajectory: also return about ten states from noise to
                data, as `(k, n, ...)`.
            verbose: progress bar for long runs ("auto": above 100 steps).
            jit_compile: as in `DDPM.sample`.
        """
        steps = check_int(steps, "steps")
        shift = self.shift if shift is None else check_number(shift, "shift", 0.0, low_open=True)
        table, evaluations = flow_coefficients(sampler, steps, shift, times)
        steps = len(table)
        num_samples, seed, x = self._initial_noise(num_samples, seed)
        condition, guided = self._sampling_condition(labels, prompts, guidance_scale,
                                                     num_samples, use_ema)
        guidance = ops.convert_to_tensor(
            1.0 if guidance_scale is None else guidance_scale, "float32"
        )
        rows = max(_TABLE_ROWS, steps)
        table = ops.convert_to_tensor(np.pad(table, ((0, rows - steps), (0, 0))))
        second_order = evaluations == 2
        return self._run_sampler(
            name=("flow", guided, second_order, rows),
            make_step=lambda: self._flow_step(num_samples, guided, second_order),
            carry=(x,), consts=(*condition, table, guidance),
            num_steps=steps, num_samples=num_samples, noise=False, seed=seed,
            jit_compile=jit_compile, return_trajectory=return_trajectory,
            verbose=verbose, use_ema=use_ema,
        )

    # ------------------------------------------------------------------
    # The ODE dx/dt = v(x, t) from the data (t = 0) to the noise (t = 1).

    def _ode_grid(self, steps):
        times = flow_times(steps, self.shift)[::-1].copy()
        half = np.diff(times) / 2
        return times, times, half, half

    def _ode_drift(self, x, time, labels):
        t = ops.broadcast_to(time * TIME_SCALE, (ops.shape(x)[0],))
        return self._guided_prediction(x, t, labels, None)

    def _ode_entry(self, x, time):
        return x, np.zeros((ops.shape(x)[0],))

    def _ode_exit(self, x, time):
        return self._standard_normal_log_prob(x)

    def get_config(self):
        return {
            **super().get_config(),
            "time_density": self.time_density,
            "logit_mean": self.logit_mean,
            "logit_std": self.logit_std,
            "shift": self.shift,
        }
