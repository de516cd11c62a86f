"""DDPM: denoising diffusion with DDPM, DDIM and DPM-Solver++ sampling."""

import math

import keras
import numpy as np
from keras import ops

from zoo.diffusion.diffusion_model import DiffusionModel, check_int, check_number
from zoo.diffusion.samplers import coefficients, log_snr_timesteps
from zoo.diffusion.schedules import SCHEDULES, alphas_cumprod

PREDICTIONS = ("epsilon", "v", "x0")


@keras.saving.register_keras_serializable(package="zoo")
class DDPM(DiffusionModel):
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
        denoiser: `"mlp"`, `"unet"`, `"dit"` (`zoo.layers.dit.DiT`), None
            (MLP for vectors, U-Net for images), or your own Keras model
            taking `[x_t, t]` (plus `labels` when conditional) and returning
            a tensor shaped like `x_t`.
        denoiser_options: keyword arguments for the chosen denoiser's
            builder (e.g. `{"patch_size": 2, "hidden_dim": 64}` for the DiT).
        ema_decay: decay of the exponential moving average of the
            denoiser's weights kept during training (None: no average),
            warmed up as `min(ema_decay, (1 + n) / (10 + n))` after n updates.
            `sample` uses the average by default; `with model.ema_weights():`
            swaps it in for anything else (evaluation, saving a preset).
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

    `log_prob(x)` integrates the probability-flow ODE (DDIM's) with the
    change of variables (see `DiffusionModel.log_prob`): the density of `x`
    at timestep 0.

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
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}; received {schedule!r}.")
        if prediction not in PREDICTIONS:
            raise ValueError(
                f"`prediction` must be one of {PREDICTIONS}; received {prediction!r}."
            )
        if min_snr_gamma is not None:
            check_number(min_snr_gamma, "min_snr_gamma", 0.0, low_open=True)
        self.timesteps = check_int(timesteps, "timesteps")
        super().__init__(
            data_shape, num_classes=num_classes, label_dropout=label_dropout,
            denoiser=denoiser, denoiser_options=denoiser_options, ema_decay=ema_decay,
            hidden_units=hidden_units, num_blocks=num_blocks, channels=channels,
            channel_multipliers=channel_multipliers, num_res_blocks=num_res_blocks,
            text_encoder=text_encoder, train_text_encoder=train_text_encoder,
            text_dropout=text_dropout, seed=seed, **kwargs,
        )
        self.schedule = schedule
        self.prediction = prediction
        self.min_snr_gamma = min_snr_gamma
        self.alphas_cumprod = alphas_cumprod(schedule, self.timesteps)

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
        x0 = ops.cast(x0, "float32")
        abar = self._abar(t)
        x_t = ops.sqrt(abar) * x0 + ops.sqrt(1.0 - abar) * noise
        pred = self._predict(self._denoiser_inputs(x_t, t, labels, training), training=training)
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

    def _denoising_step(self, batch, guided, clip):
        """One sampler step `x <- c . (x, x0, x0_prev, eps, z)`, written as
        `compile_step` asks. Static shapes: one per batch size."""
        def step(i, state):
            (x, x0_prev), z, (*condition, ts, table, guidance, offset) = state
            k = offset + i
            t = ops.broadcast_to(ops.take(ts, k), (batch,))
            c = ops.take(table, k, axis=0)
            pred = self._guided_prediction(
                x, t, self._step_condition(condition), guidance if guided else None,
            )
            x0, eps = self._x0_and_eps(pred, x, t, clip)
            x = c[0] * x + c[1] * x0 + c[2] * x0_prev + c[3] * eps + c[4] * z
            return x, x0

        return step

    def sample(
        self,
        num_samples,
        steps=50,
        sampler="ddim",
        eta=0.0,
        guidance_scale=None,
        labels=None,
        prompts=None,
        seed=None,
        use_ema=True,
        clip_denoised=None,
        return_trajectory=False,
        verbose="auto",
        jit_compile="auto",
    ):
        """Draws `num_samples` samples, as float32 NumPy in data space.

        Args:
            steps: denoiser evaluations, an integer in 1..timesteps.
            sampler: `"ddpm"` (ancestral), `"ddim"` or `"dpm++2m"`.
            eta: DDIM's noise level (0: deterministic; 1: as DDPM).
            guidance_scale: classifier-free guidance weight w >= 0 (0: the
                unconditional model, 1: plain conditional sampling, above 1:
                guided); needs `labels` or `prompts`.
            labels: class of each sample (int or `(num_samples,)` ints) for
                a conditional model; `None` samples without a label.
            prompts: a text-conditioned model's prompts: one string for
                every sample, or a list of `num_samples` strings; `None`
                samples from the null ("no caption") condition.
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
        steps = check_int(steps, "steps")
        eta = check_number(eta, "eta", 0.0)
        num_samples, seed, x = self._initial_noise(num_samples, seed)
        ts, table = coefficients(sampler, self.alphas_cumprod, steps, eta)
        condition, guided = self._sampling_condition(labels, prompts, guidance_scale,
                                                     num_samples, use_ema)
        clip = len(self.data_shape) == 3 if clip_denoised is None else bool(clip_denoised)
        guidance = ops.convert_to_tensor(
            1.0 if guidance_scale is None else guidance_scale, "float32"
        )
        # Padded to the horizon: one compiled step serves every step count.
        ts_padded = ops.convert_to_tensor(np.pad(ts, (0, self.timesteps - len(ts))))
        table_padded = ops.convert_to_tensor(
            np.pad(table, ((0, self.timesteps - len(ts)), (0, 0)))
        )
        return self._run_sampler(
            name=("ddpm", guided, clip),
            make_step=lambda: self._denoising_step(num_samples, guided, clip),
            carry=(x, ops.zeros_like(x)),
            consts=(*condition, ts_padded, table_padded, guidance),
            num_steps=len(ts), num_samples=num_samples, noise=True, seed=seed,
            jit_compile=jit_compile, return_trajectory=return_trajectory,
            verbose=verbose, use_ema=use_ema,
        )

    # ------------------------------------------------------------------
    # The probability-flow ODE (DDIM's ODE): with y = x / sqrt(abar_t) and
    # sigma_t = sqrt((1 - abar_t) / abar_t), dy/dsigma = eps(x_t, t), which
    # Heun's method integrates in sigma (DDIM is its Euler method). The
    # divergence, about 1 / sigma per dimension where the noise dominates,
    # is integrated by the trapezoid rule in u = log sigma (as
    # `sigma div du`): sigma spans 1e-2 to 1e4, where the trapezoid in sigma
    # itself overshoots. The grid is DPM-Solver++'s (even in log-SNR); the
    # denoiser knows only integer timesteps, and Heun's method evaluates at
    # grid points only.

    def _ode_grid(self, steps):
        steps = min(steps, self.timesteps - 1)
        times = log_snr_timesteps(steps + 1, self.alphas_cumprod)[::-1].copy()
        abar = self.alphas_cumprod[times]
        sigma = np.sqrt((1.0 - abar) / abar)
        du = np.diff(np.log(sigma)) / 2
        return sigma, times, du * sigma[:-1], du * sigma[1:]

    def _ode_drift(self, y, time, labels):
        t = ops.broadcast_to(time, (ops.shape(y)[0],))
        x = ops.sqrt(self._abar(t)) * y
        pred = self._guided_prediction(x, t, labels, None)
        _, eps = self._x0_and_eps(pred, x, t, False)
        return eps

    def _ode_entry(self, x, time):
        a = math.sqrt(self.alphas_cumprod[int(time)])
        # p_x(x) = p_y(x / a) / a^d
        return x / a, np.full((ops.shape(x)[0],), -math.log(a) * np.prod(self.data_shape))

    def _ode_exit(self, y, time):
        # The noise end x_T = a y is taken as N(0, I) (abar_T ~ 0), and
        # p_y(y) = p_x(a y) a^d.
        a = math.sqrt(self.alphas_cumprod[int(time)])
        d = float(np.prod(self.data_shape))
        return self._standard_normal_log_prob(a * y) + d * math.log(a)

    def get_config(self):
        return {
            **super().get_config(),
            "schedule": self.schedule,
            "timesteps": self.timesteps,
            "prediction": self.prediction,
            "min_snr_gamma": self.min_snr_gamma,
        }
