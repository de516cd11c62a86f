"""`LatentDiffusion`: diffusion or flow matching in a frozen autoencoder's latent space."""

import inspect
import math
import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel, validators
from zoo.diffusion.ddpm import DDPM
from zoo.diffusion.diffusion_model import check_int
from zoo.diffusion.flow_matching import FlowMatching
from zoo.layers import likelihoods

DIFFUSIONS = {"flow_matching": FlowMatching, "ddpm": DDPM}
LATENTS = ("sample", "mean")
# Arguments of `keras.Model` (not of the inner diffusion model).
_MODEL_KWARGS = ("name", "dtype", "trainable")
_LOG_2PI = math.log(2.0 * math.pi)


def _autoencoder_classes():
    # Imported here: zoo.vae is another family, loaded only when needed.
    from zoo.vae import VAE, VQVAE, ConditionalVAE

    return VAE, VQVAE, ConditionalVAE


def _as_numpy(x):
    return np.asarray(validators.to_numpy(x), dtype=np.float32)


@keras.saving.register_keras_serializable(package="zoo")
class LatentDiffusion(GenerativeModel):
    """Diffusion (`DDPM`) or flow matching (`FlowMatching`) trained with
    `fit` in the latent space of a frozen zoo autoencoder, as Stable
    Diffusion does (Rombach et al., 2022).

    `fit(x)` encodes each batch with the autoencoder's encoder, multiplies
    the latents by `scaling_factor`, and trains the inner diffusion model on
    them; `sample` runs the inner model's sampler in latent space and
    decodes the result to data space. The autoencoder is frozen
    (`trainable=False`, so no optimizer sees its weights) and saved with the
    model: one `.keras` file or one preset holds both.

    Latents: for a `VAE`, a draw `z ~ q(z|x)` at every step (`latents=
    "sample"`, what Stable Diffusion trains on) or the posterior mean
    (`latents="mean"`); for a `VQVAE`, the encoder's output before
    quantization (the VQ-regularized models of Rombach et al.: `decode`
    quantizes to the nearest codes, then decodes), for either setting.

    Latent scaling: the diffusion model expects data of about unit scale,
    so latents are multiplied by `scaling_factor = 1 / std`, the standard
    deviation of all latent entries of a sample of the training data (the
    `scale_by_std` rule of Stable Diffusion's training code, which gave its
    0.18215). It is computed from up to `adapt_examples` examples by
    `adapt(data)` or, if not yet set, at the start of the first `fit`, and
    stored as a (non-trainable) variable, so a saved model samples as the
    original did. Pass `scaling_factor=` to fix it instead.

    Args:
        autoencoder: a trained zoo `VAE` or `VQVAE`, or the name or path of
            a preset holding one. The model keeps it frozen
            (`trainable=False`); a compiled one is copied first (config and
            weights), so that its training state stays out of this model's
            files and the original stays trainable.
        diffusion: `"flow_matching"` (`FlowMatching`, default) or `"ddpm"`
            (`DDPM`).
        latents: `"sample"` (default) or `"mean"` (see above).
        scaling_factor: None (computed from the data) or a positive number.
        adapt_examples: how many examples the computed scale uses.
        seed: seeds the denoiser's initial weights, the training noise, the
            latent draws and the examples `adapt` picks.
        **kwargs: the inner model's arguments (`num_classes`,
            `label_dropout`, `denoiser` (`"mlp"` for a VAE's vector latents;
            `"unet"` or `"dit"` for a VQVAE's latent grid, or your own Keras
            model), `denoiser_options`, `ema_decay`, `hidden_units`, ...,
            `time_density`, `shift` for flow matching, `schedule`,
            `timesteps`, `prediction` for DDPM), and `name`, `dtype`.

    The inner model is `model.diffusion`, its `data_shape` the latent shape
    (`model.latent_shape`).

    `log_prob(x)` (VAE only) is a lower bound on `log p(x)`: the VAE's
    importance-weighted bound with the diffusion model's density (its
    probability-flow ODE, see `DiffusionModel.log_prob`) as the prior over
    latents, `log p(z) = log p_diffusion(s z) + d log s`. A `VQVAE`'s
    posterior is a single point, which has no density, so there is no such
    bound; `log_prob` raises a `ValueError`.

    Example:

    ```python
    from zoo.data import digits
    from zoo.diffusion import LatentDiffusion
    from zoo.vae import VAE

    images, _ = digits("train")
    vae = VAE((8, 8, 1), latent_dim=4, num_levels=17, filters=8, seed=0)
    vae.compile()
    vae.fit(images[:256], batch_size=64, epochs=1, verbose=0)
    model = LatentDiffusion(vae, hidden_units=32, num_blocks=1, seed=0)
    model.compile()
    model.fit(images[:256], batch_size=64, epochs=1, verbose=0)
    samples = model.sample(8, steps=4, seed=0)  # (8, 8, 8, 1) images
    ```
    """

    def __init__(
        self,
        autoencoder,
        diffusion="flow_matching",
        *,
        latents="sample",
        scaling_factor=None,
        adapt_examples=1024,
        seed=None,
        **kwargs,
    ):
        model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
        super().__init__(seed=seed, **model_kwargs)
        self.autoencoder = self._resolve_autoencoder(autoencoder)
        # Twice: on TensorFlow, Keras skips the assignment (and so the
        # sublayers) when the value is already False, as it is for an
        # autoencoder rebuilt from a saved config.
        self.autoencoder.trainable = True
        self.autoencoder.trainable = False
        if diffusion not in DIFFUSIONS:
            raise ValueError(f"`diffusion` must be one of {tuple(DIFFUSIONS)}; "
                             f"received {diffusion!r}.")
        if latents not in LATENTS:
            raise ValueError(f"`latents` must be one of {LATENTS}; received {latents!r}.")
        if scaling_factor is not None:
            if (isinstance(scaling_factor, bool) or not isinstance(scaling_factor, numbers.Real)
                    or not math.isfinite(scaling_factor) or scaling_factor <= 0):
                raise ValueError("`scaling_factor` must be None (computed from the data) "
                                 f"or a positive number; received {scaling_factor!r}.")
            scaling_factor = float(scaling_factor)
        self.diffusion_type = diffusion
        self.latents = latents
        self.fixed_scaling_factor = scaling_factor
        self.adapt_examples = check_int(adapt_examples, "adapt_examples")
        self.data_shape = tuple(self.autoencoder.data_shape)
        self.data_range = self.autoencoder.data_range
        self.is_vq = isinstance(self.autoencoder, _autoencoder_classes()[1])
        self.latent_shape = (
            tuple(self.autoencoder.latent_shape) if self.is_vq
            else (self.autoencoder.latent_dim,)
        )
        cls = DIFFUSIONS[diffusion]
        accepted = set(inspect.signature(cls.__init__).parameters) - {
            "self", "data_shape", "seed", "kwargs"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"Unknown argument(s) {unknown} for LatentDiffusion with "
                f"diffusion={diffusion!r}; it takes {sorted(accepted)} "
                f"(the {cls.__name__} arguments) and {list(_MODEL_KWARGS)}."
            )
        if "dtype" in model_kwargs:  # a mixed-precision policy reaches the denoiser
            kwargs["dtype"] = model_kwargs["dtype"]
        # Its own seed: the same one would make its training noise repeat
        # the latent draws of this model's generator.
        self.diffusion = cls(self.latent_shape, seed=validators.derive_seed(seed, 7919),
                             name="diffusion", **kwargs)
        # Built: its denoiser is (DiffusionModel leaves that to compile).
        self.diffusion._mark_built()
        # 0 until computed: a scale is positive.
        self._scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(scaling_factor or 0.0),
            trainable=False, name="scaling_factor",
        )
        self._functions = {}
        self._mark_built()

    def _resolve_autoencoder(self, autoencoder):
        vae, vqvae, conditional = _autoencoder_classes()
        if isinstance(autoencoder, str):
            from zoo.presets import from_preset

            autoencoder = from_preset(autoencoder)
        if not isinstance(autoencoder, (vae, vqvae)) or isinstance(autoencoder, conditional):
            kind = ("a ConditionalVAE (its latents depend on labels)"
                    if isinstance(autoencoder, conditional)
                    else f"a {type(autoencoder).__name__}")
            raise ValueError(
                "`autoencoder` must be a zoo VAE or VQVAE (a model, or the name "
                f"or path of a preset holding one); received {kind}."
            )
        if not autoencoder.built:
            raise ValueError(
                f"`autoencoder` ({type(autoencoder).__name__}) is not built: build "
                "its networks (for example with a `keras.Input`) and train it first."
            )
        if getattr(autoencoder, "compiled", False):
            # Its training state (optimizer, loss trackers) is no part of
            # this model and would go into its files: a copy without it.
            copy = type(autoencoder).from_config(autoencoder.get_config())
            copy.set_weights(autoencoder.get_weights())
            autoencoder = copy
        return autoencoder

    # ------------------------------------------------------------------
    # Checks.

    def _check_trained(self):
        ae = self.autoencoder
        if self.is_vq:
            # Every training step moves the code usage off its zeros.
            untrained = not np.any(ops.convert_to_numpy(ae.quantizer.code_usage))
        else:
            untrained = int(ops.convert_to_numpy(ae.train_steps)) == 0
        if untrained:
            raise ValueError(
                f"`autoencoder` ({type(ae).__name__}) has never been trained: a "
                "latent diffusion model learns the latent space of a trained, "
                "frozen autoencoder. Train it with `fit` or load a trained preset."
            )

    def validate_data(self, x):
        """Also names the autoencoder when the example shape differs."""
        if hasattr(x, "shape") and tuple(x.shape[1:]) != self.data_shape and not any(
            d is None for d in x.shape[1:]
        ):
            raise ValueError(
                f"The data do not match `autoencoder`: it takes examples of shape "
                f"{self.data_shape}, the data have shape {tuple(x.shape[1:])} "
                f"(batch shape {tuple(x.shape)})."
            )
        super().validate_data(x)

    @property
    def scaling_factor(self):
        """The latent scale (a float), or None until `adapt` or `fit` sets it."""
        value = float(ops.convert_to_numpy(self._scale))
        return value if value > 0 else None

    def _require_scale(self, what):
        if self.scaling_factor is None:
            raise ValueError(
                f"`{what}` needs the latent scaling factor: call `fit` or "
                "`adapt(data)` first, or pass `scaling_factor=`."
            )
        return self.scaling_factor

    # ------------------------------------------------------------------
    # The latent space.

    def _latent_statistics(self, x):
        """`(mean, log_var)` of q(z|x) (a VQVAE: the encoder's output and
        None), as float32 tensors, unscaled."""
        out = ops.cast(self.autoencoder.encoder(x, training=False), "float32")
        if self.is_vq:
            return out, None
        mean, log_var = ops.split(out, 2, axis=-1)
        return mean, log_var

    def _encode_fn(self):
        if "encode" not in self._functions:
            self._functions["encode"] = self.compile_function(
                lambda x: tuple(v for v in self._latent_statistics(x) if v is not None))
        return self._functions["encode"]

    def _unscaled_latents(self, x, rng, batch_size):
        """Latents of `x` (NumPy) as training draws them, before scaling."""
        fn = self._encode_fn()
        out = []
        for start in range(0, len(x), batch_size):
            stats = fn(ops.convert_to_tensor(x[start:start + batch_size]), seed=0)
            mean = _as_numpy(stats[0])
            if not self.is_vq and self.latents == "sample":
                std = np.exp(0.5 * _as_numpy(stats[1]))
                mean = mean + std * rng.standard_normal(mean.shape).astype(np.float32)
            out.append(mean)
        return np.concatenate(out)

    def encode(self, x, seed=None, batch_size=256):
        """The scaled latents of `x` that the diffusion model sees: NumPy
        `(n,) + latent_shape`. With `latents="sample"` (VAE) a draw from
        q(z|x), seeded by `seed`."""
        x = self._check_x(x, "x")
        scale = self._require_scale("encode")
        rng = np.random.default_rng(validators.check_seed(seed))
        batch_size = check_int(batch_size, "batch_size")
        return self._unscaled_latents(x, rng, batch_size) * np.float32(scale)

    def decode(self, z, batch_size=256):
        """Data from scaled latents `(n,) + latent_shape` (as `encode` and the
        sampler give them): the decoder's mean, float32 NumPy. A VQVAE's
        latents are quantized to their nearest codes first."""
        scale = self._require_scale("decode")
        z = _as_numpy(z)
        if z.ndim != len(self.latent_shape) + 1 or z.shape[1:] != self.latent_shape:
            raise ValueError(f"`z` must have shape (n,) + {self.latent_shape}; "
                             f"received {z.shape}.")
        z = z / np.float32(scale)
        ae = self.autoencoder
        if not self.is_vq:
            return ae.decode(z, batch_size=batch_size)
        indices = np.concatenate([
            ops.convert_to_numpy(ae.quantizer.nearest(ops.convert_to_tensor(z[s:s + batch_size])))
            for s in range(0, len(z), batch_size)
        ])
        return ae.decode(indices.astype(np.int32), batch_size=batch_size)

    # ------------------------------------------------------------------
    # The latent scale.

    def _check_x(self, x, name):
        x = _as_numpy(x)
        if x.ndim != len(self.data_shape) + 1 or x.shape[1:] != self.data_shape:
            raise ValueError(
                f"`{name}` does not match `autoencoder`: it takes examples of shape "
                f"{self.data_shape}, `{name}` has shape {x.shape}."
            )
        return x

    def _adapt_sample(self, data):
        """Up to `adapt_examples` examples of `data` as NumPy."""
        if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
            data = data[0]  # (x, y) given as a tuple
        if hasattr(data, "shape"):
            x = self._check_x(data, "data")
            if len(x) > self.adapt_examples:
                # A random subset: the first rows may be sorted by class.
                rng = np.random.default_rng(validators.derive_seed(self.seed, 17) or 0)
                x = x[np.sort(rng.choice(len(x), self.adapt_examples, replace=False))]
            return x
        if isinstance(data, keras.utils.PyDataset):
            batches = (data[i] for i in range(data.num_batches or len(data)))
        elif hasattr(data, "as_numpy_iterator"):  # tf.data
            batches = data.as_numpy_iterator()
        elif iter(data) is data:
            raise ValueError(
                "The latent scaling factor is computed from the training data at "
                "the start of the first `fit`, which cannot read a one-shot "
                "iterator or generator without losing its batches: call "
                "`adapt(data)` with an array or a dataset first, or pass "
                "`scaling_factor=`."
            )
        else:
            batches = iter(data)  # a re-iterable: a list of batches, a DataLoader
        parts, count = [], 0
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = self._check_x(x, "data")
            parts.append(x)
            count += len(x)
            if count >= self.adapt_examples:
                break
        if not parts:
            raise ValueError("`data` holds no examples.")
        return np.concatenate(parts)[: self.adapt_examples]

    def adapt(self, data, batch_size=256):
        """Sets `scaling_factor` to 1 / the standard deviation of the latents
        of up to `adapt_examples` examples of `data` (an array, an `(x, y)`
        tuple, a `tf.data.Dataset`, a `keras.utils.PyDataset` or a list of
        batches), all entries pooled, as Stable Diffusion's `scale_by_std`.
        Draws latents as training does (`latents`), seeded by the model's
        seed."""
        self._check_trained()
        x = self._adapt_sample(data)
        rng = np.random.default_rng(validators.derive_seed(self.seed, 31) or 0)
        z = self._unscaled_latents(x, rng, check_int(batch_size, "batch_size"))
        std = float(np.std(z.astype(np.float64)))
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"The latents of `data` have standard deviation {std}; "
                             "no scale can be computed from them.")
        self._scale.assign(1.0 / std)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking that the autoencoder is trained
        and, while `scaling_factor` is unset, computing it from `x` (see
        `adapt`)."""
        arguments = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        self._check_trained()
        if self.scaling_factor is None:
            self.adapt(arguments.get("x"))
        return super().fit(*args, **kwargs)

    # ------------------------------------------------------------------
    # Training.

    def _scaled_latents(self, x):
        mean, log_var = self._latent_statistics(x)
        z = mean
        if log_var is not None and self.latents == "sample":
            noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
            z = mean + ops.exp(0.5 * log_var) * noise
        return ops.stop_gradient(z * ops.cast(self._scale, "float32"))

    def validate_labels(self, y):
        self.diffusion.validate_labels(y)

    def train_step_logic(self, x, y=None, sample_weight=None):
        z = self._scaled_latents(x)
        t, noise, labels = self.diffusion._draws(z, y)
        loss = self.minimize("model", lambda: self.diffusion._loss(z, t, noise, labels, True))
        # The inner model's average, counted by this model's optimizer (the
        # one that trains the denoiser here).
        self.diffusion._update_ema(self.optimizer.iterations)
        return {"loss": loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        z = self._scaled_latents(x)
        t, noise, labels = self.diffusion._draws(z, y)
        return {"loss": self.diffusion._loss(z, t, noise, labels, False)}

    # ------------------------------------------------------------------
    # Sampling and likelihood.

    def sample(self, num_samples, steps=50, sampler=None, guidance_scale=None, labels=None,
               seed=None, return_latents=False, **kwargs):
        """Draws `num_samples` samples in data space (float32 NumPy): the
        inner model's `sample` in latent space, then `decode`.

        Args:
            steps, sampler, guidance_scale, labels, seed: as the inner
                model's `sample` (`FlowMatching.sample`: `"euler"`,
                `"heun"`, `"midpoint"`; `DDPM.sample`: `"ddim"`, `"ddpm"`,
                `"dpm++2m"`); `sampler=None` is its default.
            return_latents: also return the scaled latents.
            **kwargs: the inner `sample`'s other arguments (`use_ema`,
                `eta`, `shift`, `times`, `verbose`, `jit_compile`, ...).
                DDPM's `clip_denoised` defaults to False: latents are not
                confined to [-1, 1].
        """
        self._require_scale("sample")
        if "return_trajectory" in kwargs:
            raise ValueError("`return_trajectory` is not supported by LatentDiffusion."
                             "sample; call `model.diffusion.sample(...)` for the "
                             "latent trajectory and `model.decode` each state.")
        if sampler is not None:
            kwargs["sampler"] = sampler
        if self.diffusion_type == "ddpm":
            kwargs.setdefault("clip_denoised", False)
        z = self.diffusion.sample(num_samples, steps=steps, guidance_scale=guidance_scale,
                                  labels=labels, seed=seed, **kwargs)
        x = self.decode(z)
        return (x, z) if return_latents else x

    def _decoder_log_likelihood(self):
        if "log_px" not in self._functions:
            ae = self.autoencoder

            def fn(x, z):
                params = ae.decoder(z, training=False)
                return likelihoods.log_likelihood(
                    x, params, ae.likelihood, ae.scale, ae.num_levels)

            self._functions["log_px"] = self.compile_function(fn)
        return self._functions["log_px"]

    def log_prob(self, x, labels=None, num_importance_samples=1, seed=0, steps=64,
                 divergence="auto", num_probes=1, batch_size=256):
        """Per-example lower bound on `log p(x)` in nats (float64), VAE only:
        `log mean_k p(x|z_k) p(z_k) / q(z_k|x)`, `z_k ~ q(z|x)` (the ELBO
        for `k = 1`), with the diffusion model's ODE density as `p(z)`.

        Args:
            labels: a conditional model's classes (the bound on
                `log p(x | label)`); None: unconditional.
            num_importance_samples: k.
            seed: seeds the latent draws and the Hutchinson probes.
            steps, divergence, num_probes: the ODE's integration (see
                `DiffusionModel.log_prob`); latents of at most 16 dimensions
                get the exact divergence by default.
            batch_size: examples per pass.
        """
        if self.is_vq:
            raise ValueError(
                "log_prob is not defined for a LatentDiffusion on a VQVAE: its "
                "encoder maps each example to one point, which has no density, so "
                "there is no variational bound, and the decoder (many latents to "
                "one image) cannot be inverted for a change of variables. Use "
                "`model.diffusion.log_prob(model.encode(x))` for the density of "
                "the scaled latents."
            )
        scale = self._require_scale("log_prob")
        x = self._check_x(x, "x")
        k = check_int(num_importance_samples, "num_importance_samples")
        batch_size = check_int(batch_size, "batch_size")
        rng = np.random.default_rng(validators.check_seed(seed))
        mean, log_var = self.autoencoder.encode(x, batch_size=batch_size)
        log_px_fn = self._decoder_log_likelihood()
        d = int(np.prod(self.latent_shape))
        log_w = []
        for _ in range(k):
            eps = rng.standard_normal(mean.shape).astype(np.float32)
            z = mean + np.exp(0.5 * log_var) * eps
            log_q = np.sum(-0.5 * eps.astype(np.float64) ** 2 - 0.5 * log_var - 0.5 * _LOG_2PI,
                           axis=1)
            log_px = np.concatenate([
                _as_numpy(log_px_fn(ops.convert_to_tensor(x[s:s + batch_size]),
                                    ops.convert_to_tensor(z[s:s + batch_size]), seed=0))
                for s in range(0, len(x), batch_size)
            ]).astype(np.float64)
            # p(z) = p_s(s z) s^d: the diffusion model's density is of s z.
            log_pz = self.diffusion.log_prob(
                z * np.float32(scale), labels=labels, steps=steps, divergence=divergence,
                num_probes=num_probes, batch_size=batch_size,
                seed=int(rng.integers(2**31 - 1)),
            ) + d * math.log(scale)
            log_w.append(log_px + log_pz - log_q)
        log_w = np.stack(log_w)
        top = log_w.max(axis=0)
        return top + np.log(np.mean(np.exp(log_w - top), axis=0))

    # ------------------------------------------------------------------
    # Config.

    def get_config(self):
        inner = self.diffusion.get_config()
        for key in ("name", "trainable", "dtype", "seed", "data_shape"):
            inner.pop(key, None)
        return {
            **super().get_config(),
            "autoencoder": keras.saving.serialize_keras_object(self.autoencoder),
            "diffusion": self.diffusion_type,
            "latents": self.latents,
            "scaling_factor": self.fixed_scaling_factor,
            "adapt_examples": self.adapt_examples,
            **inner,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key, value in config.items():
            # The autoencoder and the inner model's Keras objects (a custom
            # denoiser, a text encoder), serialized by `get_config`.
            if isinstance(value, dict) and "class_name" in value and "config" in value \
                    and key != "dtype":
                config[key] = keras.saving.deserialize_keras_object(value)
        return cls(**config)
