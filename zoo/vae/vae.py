"""`VAE`: a variational autoencoder with a Gaussian latent (Kingma & Welling, 2014)."""

import math

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel, validators
from zoo.layers import likelihoods, vae_networks
from zoo.vae import _common

_LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="zoo")
class VAE(GenerativeModel):
    """Variational autoencoder: q(z|x) = N(mu(x), diag sigma(x)^2), p(z) = N(0, I).

    Trained by maximizing the evidence lower bound (ELBO) with the
    reparameterization trick, `loss = reconstruction_loss + w * kl_loss`
    per example in nats, where `reconstruction_loss = -log p(x|z)` for one
    `z ~ q(z|x)`, `kl_loss = KL(q(z|x) || p(z))` in closed form, and `w`
    is `beta` (a beta-VAE for `beta != 1`), ramped up linearly from 0 over
    the first `kl_warmup_steps` training steps.

    The decoder likelihood (see `zoo.layers.likelihoods`): `"gaussian"` with
    a learned or fixed scale, or `"bernoulli"`. For data on a grid of
    `num_levels` values in [-1, 1] (17 for the digits), the likelihood is
    discretized so that `log_prob` is an honest log-probability of the data;
    with `num_levels=None` it is a density, fine for continuous data only.

    `log_prob(x, num_importance_samples=k)` is the importance-weighted bound
    of Burda et al. (2016), `E log mean_i p(x, z_i) / q(z_i | x)`, a lower
    bound on `log p(x)` that equals the ELBO for `k = 1` and rises towards
    `log p(x)` as `k` grows; it is computed in chunks, so `k = 1000` fits in
    memory.

    Args:
        data_shape: shape of one example, `(H, W, C)` images (conv networks)
            or `(D,)` vectors (MLPs).
        latent_dim: dimension of `z`.
        likelihood: `"gaussian"` or `"bernoulli"`.
        scale: for `"gaussian"`, `"learned"` (the decoder outputs a scale per
            dimension) or a fixed positive standard deviation.
        num_levels: None for continuous data, or the number of evenly spaced
            values the data take in [-1, 1].
        beta: weight of the KL term after warm-up.
        kl_warmup_steps: training steps over which that weight rises from 0.
        filters, hidden_units: sizes of the default networks.
        encoder: optional network from `x` to `2 * latent_dim` outputs (mean,
            then log-variance).
        decoder: optional network from `z` to the likelihood parameters: the
            data shape with `2 * C` channels for a learned scale (means
            first), `C` otherwise; for vectors `2 * D` or `D` units.
        seed: seeds the initializers and the training noise.

    Example:

    ```python
    from zoo.data import digits
    from zoo.vae import VAE

    images, _ = digits("train")
    vae = VAE(data_shape=(8, 8, 1), latent_dim=8, num_levels=17, seed=0)
    vae.compile()
    vae.fit(images[:256], batch_size=64, epochs=1, verbose=0)
    nll = -vae.log_prob(images[:16], num_importance_samples=10).mean()
    samples = vae.sample(16, seed=0)  # (16, 8, 8, 1) in [-1, 1]
    ```
    """

    data_dtype = "float"

    def __init__(
        self,
        data_shape,
        latent_dim=16,
        *,
        likelihood="gaussian",
        scale="learned",
        num_levels=None,
        beta=1.0,
        kl_warmup_steps=0,
        filters=32,
        hidden_units=(256,),
        encoder=None,
        decoder=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.data_shape = vae_networks.check_data_shape(data_shape)
        self.latent_dim = _common.check_positive_int(latent_dim, "latent_dim")
        likelihoods.check_likelihood(likelihood, scale, num_levels)
        self.likelihood = likelihood
        self.scale = scale if scale == "learned" else float(scale)
        self.num_levels = None if num_levels is None else int(num_levels)
        self.beta = _common.check_nonnegative(beta, "beta")
        self.kl_warmup_steps = _common.check_positive_int(
            kl_warmup_steps, "kl_warmup_steps", minimum=0
        )
        self.filters = _common.check_positive_int(filters, "filters")
        self.hidden_units = list(vae_networks.check_hidden_units(hidden_units))
        self._custom_encoder = _common.check_network(encoder, "encoder") is not None
        self._custom_decoder = _common.check_network(decoder, "decoder") is not None
        self.encoder = encoder if encoder is not None else self._default_encoder()
        self.decoder = decoder if decoder is not None else self._default_decoder()
        self._check_networks()
        # Training steps taken: the KL warm-up reads it.
        self.train_steps = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False,
            name="train_steps",
        )
        # The loss terms of the last training step. On JAX the loss closure
        # runs inside `jax.value_and_grad` and its tensors cannot leave it;
        # a variable assigned inside is carried out, so the logs report the
        # very draw the gradient used.
        self.last_terms = self.add_weight(
            shape=(2,), initializer="zeros", trainable=False, name="last_terms"
        )
        self.data_range = _common.data_range(self.data_shape, likelihood, self.num_levels)
        self._mark_built()

    # ------------------------------------------------------------------
    # Networks.

    def _num_classes(self):
        return None

    def _param_shape(self):
        channels = likelihoods.num_parameters(self.likelihood, self.scale)
        return (*self.data_shape[:-1], channels * self.data_shape[-1])

    def _default_encoder(self):
        return vae_networks.vae_encoder(
            self.data_shape, 2 * self.latent_dim, filters=self.filters,
            hidden_units=self.hidden_units, num_classes=self._num_classes(),
            seed=self.seed,
        )

    def _default_decoder(self):
        channels = likelihoods.num_parameters(self.likelihood, self.scale)
        if len(self.data_shape) == 3:
            channels *= self.data_shape[-1]
        return vae_networks.vae_decoder(
            self.latent_dim, self.data_shape, output_channels=channels,
            filters=self.filters, hidden_units=self.hidden_units,
            num_classes=self._num_classes(),
            seed=validators.derive_seed(self.seed, 1000),
        )

    def _check_networks(self):
        # A symbolic call builds both networks, so `compile()` works at
        # once, and catches a custom network of the wrong shape here rather
        # than inside a compiled step, without computing anything.
        condition = None
        if self._num_classes() is not None:
            condition = keras.KerasTensor((1, self._num_classes()))
        x = keras.KerasTensor((1, *self.data_shape))
        out = self.encoder(self._join(x, condition))
        if tuple(out.shape) != (1, 2 * self.latent_dim):
            raise ValueError(
                f"`encoder` must map a batch of shape (batch, "
                f"{', '.join(map(str, self.data_shape))}) to (batch, "
                f"{2 * self.latent_dim}) = (batch, 2 * latent_dim); it gives "
                f"{tuple(out.shape)} for a batch of 1."
            )
        out = self.decoder(self._join(keras.KerasTensor((1, self.latent_dim)), condition))
        if tuple(out.shape) != (1, *self._param_shape()):
            raise ValueError(
                f"`decoder` must map (batch, {self.latent_dim}) to (batch, "
                f"{', '.join(map(str, self._param_shape()))}) for "
                f"likelihood={self.likelihood!r}, scale={self.scale!r}; it gives "
                f"{tuple(out.shape)} for a batch of 1."
            )

    @staticmethod
    def _join(main, condition):
        if condition is None:
            return main
        # Keras rejects a list mixing NumPy arrays and tensors.
        if not isinstance(main, keras.KerasTensor):
            main, condition = ops.convert_to_tensor(main), ops.convert_to_tensor(condition)
        return [main, condition]

    # ------------------------------------------------------------------
    # The model's pieces, as tensors.

    def _posterior(self, x, condition, training=False):
        out = self.encoder(self._join(x, condition), training=training)
        # float32 under a mixed-precision policy too: exp(log_var) and
        # the KL overflow float16 long before they are unreasonable.
        mean, log_var = ops.split(ops.cast(out, "float32"), 2, axis=-1)
        return mean, log_var

    def _params(self, z, condition, training=False):
        return self.decoder(self._join(z, condition), training=training)

    def _log_likelihood(self, x, params):
        return likelihoods.log_likelihood(
            x, params, self.likelihood, self.scale, self.num_levels
        )

    @staticmethod
    def kl_divergence(mean, log_var):
        """KL(N(mean, exp(log_var)) || N(0, I)) per example, in nats."""
        return 0.5 * ops.sum(
            ops.square(mean) + ops.exp(log_var) - 1.0 - log_var, axis=-1
        )

    def kl_weight(self):
        """The weight of the KL term at the current training step."""
        if self.kl_warmup_steps == 0:
            return ops.convert_to_tensor(self.beta, "float32")
        steps = ops.cast(self.train_steps, "float32") + 1.0
        return self.beta * ops.minimum(1.0, steps / self.kl_warmup_steps)

    def _terms(self, x, condition, seed, training):
        """Per-example `(-log p(x|z), KL)` for one reparameterized draw."""
        mean, log_var = self._posterior(x, condition, training=training)
        noise = keras.random.normal(ops.shape(mean), seed=seed)
        z = mean + ops.exp(0.5 * log_var) * noise
        params = self._params(z, condition, training=training)
        return -self._log_likelihood(x, params), self.kl_divergence(mean, log_var)

    # ------------------------------------------------------------------
    # Training and evaluation steps.

    def log_names(self):
        return ("loss", "reconstruction_loss", "kl_loss")

    def _condition_from_y(self, y):
        return None

    def train_step_logic(self, x, y=None, sample_weight=None):
        condition = self._condition_from_y(y)

        def loss_fn():
            recon, kl = self._terms(x, condition, self.seed_generator, True)
            recon = _common.weighted_mean(recon, sample_weight)
            kl = _common.weighted_mean(kl, sample_weight)
            self.last_terms.assign(ops.stop_gradient(ops.stack([recon, kl])))
            return recon + self.kl_weight() * kl

        loss = self.minimize("model", loss_fn)
        self.train_steps.assign_add(ops.convert_to_tensor(1, "int32"))
        terms = ops.convert_to_tensor(self.last_terms)
        return {"loss": loss, "reconstruction_loss": terms[0], "kl_loss": terms[1]}

    def test_step_logic(self, x, y=None, sample_weight=None):
        condition = self._condition_from_y(y)
        recon, kl = self._terms(x, condition, self.seed_generator, False)
        recon = _common.weighted_mean(recon, sample_weight)
        kl = _common.weighted_mean(kl, sample_weight)
        return {
            "loss": recon + self.kl_weight() * kl,
            "reconstruction_loss": recon,
            "kl_loss": kl,
        }

    # ------------------------------------------------------------------
    # Eager methods on NumPy arrays (shared with `ConditionalVAE`): the
    # networks run compiled (see `_common.compiled`), the noise comes from
    # NumPy.

    def _one_hot(self, labels, n):
        return None

    def _fn(self, name):
        """The compiled function `name` of this model (made once). Each
        takes the label one-hots last, for the conditional model only."""
        if name == "posterior":
            def fn(x, *c):
                return self._posterior(x, c[0] if c else None)
        elif name == "params":
            def fn(z, *c):
                return self._params(z, c[0] if c else None)
        else:  # "bound"
            def fn(x, noise, *c):
                # `noise` is (draws, batch, latent_dim); every draw of every
                # example goes through the decoder in one batch.
                c = c[0] if c else None
                mean, log_var = self._posterior(x, c)
                draws = ops.shape(noise)[0]
                z = mean[None] + ops.exp(0.5 * log_var)[None] * noise
                flat_z = ops.reshape(z, (-1, self.latent_dim))
                flat_c = None if c is None else ops.tile(c, (draws, 1))
                flat_x = ops.tile(x, (draws,) + (1,) * len(self.data_shape))
                log_px = self._log_likelihood(flat_x, self._params(flat_z, flat_c))
                log_pz = -0.5 * ops.sum(ops.square(z) + _LOG_2PI, axis=-1)
                log_qz = -0.5 * ops.sum(
                    ops.square(noise) + log_var[None] + _LOG_2PI, axis=-1
                )
                return (
                    ops.reshape(log_px, (draws, -1)),
                    log_pz - log_qz,
                    self.kl_divergence(mean, log_var),
                )
        return _common.compiled(self, name, fn)

    def _encode(self, x, labels, batch_size):
        x = _common.check_data(x, self.data_shape, type(self).__name__)
        c = self._one_hot(labels, len(x))
        fn = self._fn("posterior")
        means, log_vars = [], []
        for s, pad in _common.padded_batches(len(x), batch_size):
            mean, log_var = fn(_common.pad_rows(x[s], pad), *_common.rows(c, s, pad))
            means.append(mean[: s.stop - s.start])
            log_vars.append(log_var[: s.stop - s.start])
        return np.concatenate(means), np.concatenate(log_vars)

    def _decode(self, z, labels, batch_size, mode="mean", rng=None):
        z = np.asarray(ops.convert_to_numpy(z), dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"`z` must have shape (batch, {self.latent_dim}); received "
                f"shape {z.shape}."
            )
        c = self._one_hot(labels, len(z))
        fn = self._fn("params")
        params = np.concatenate([
            fn(_common.pad_rows(z[s], pad), *_common.rows(c, s, pad))[: s.stop - s.start]
            for s, pad in _common.padded_batches(len(z), batch_size)
        ])
        if mode == "sample":
            return likelihoods.sample(params, self.likelihood, self.scale, self.num_levels, rng)
        mean = likelihoods.mean(
            ops.convert_to_tensor(params), self.likelihood, self.scale, self.num_levels
        )
        return _common.to_numpy(mean).astype(np.float32)

    def _sample(self, num_samples, labels, seed, mode):
        num_samples = _common.check_positive_int(num_samples, "num_samples")
        if mode not in ("mean", "sample"):
            raise ValueError(
                "`mode` must be 'mean' (the decoder's mean) or 'sample' (a "
                f"draw from p(x|z)); received mode={mode!r}."
            )
        rng = _common.numpy_rng(seed)
        z = rng.standard_normal((num_samples, self.latent_dim)).astype(np.float32)
        return self._decode(z, labels, 256, mode, rng)

    def _bound(self, x, labels, num_draws, seed, chunk_size, reduce):
        """`reduce(log_px, log_ratio, kl)` per batch of examples, where for
        `num_draws` draws z_i ~ q(z|x) `log_px[i] = log p(x|z_i)` and
        `log_ratio[i] = log p(z_i) - log q(z_i|x)` (arrays `(num_draws, b)`),
        `kl` the closed-form KL `(b,)`; float64, concatenated."""
        x = _common.check_data(x, self.data_shape, type(self).__name__)
        chunk_size = _common.check_positive_int(chunk_size, "chunk_size")
        c = self._one_hot(labels, len(x))
        rng = _common.numpy_rng(seed)
        fn = self._fn("bound")
        # Examples per batch and draws per chunk so that one decoder call
        # sees at most `chunk_size` latent codes.
        batch = max(1, min(len(x), chunk_size // min(num_draws, chunk_size)))
        draws = max(1, min(num_draws, chunk_size // batch))
        out = []
        for s, pad in _common.padded_batches(len(x), batch):
            xb, cb = _common.pad_rows(x[s], pad), _common.rows(c, s, pad)
            keep = s.stop - s.start
            log_px, log_ratio = [], []
            for start in range(0, num_draws, draws):
                noise = rng.standard_normal((draws, len(xb), self.latent_dim))
                px, ratio, kl = fn(xb, noise.astype(np.float32), *cb)
                used = min(draws, num_draws - start)
                log_px.append(px[:used, :keep])
                log_ratio.append(ratio[:used, :keep])
            out.append(reduce(
                np.concatenate(log_px).astype(np.float64),
                np.concatenate(log_ratio).astype(np.float64),
                kl[:keep].astype(np.float64),
            ))
        return np.concatenate(out)

    def _elbo(self, x, labels, num_samples, seed, batch_size):
        num_samples = _common.check_positive_int(num_samples, "num_samples")
        return self._bound(
            x, labels, num_samples, seed, batch_size * num_samples,
            lambda log_px, log_ratio, kl: log_px.mean(axis=0) - kl,
        )

    def _log_prob(self, x, labels, num_importance_samples, seed, chunk_size):
        k = _common.check_positive_int(num_importance_samples, "num_importance_samples")

        def log_mean_exp(log_px, log_ratio, kl):
            log_w = log_px + log_ratio
            top = log_w.max(axis=0)
            return top + np.log(np.mean(np.exp(log_w - top), axis=0))

        return self._bound(x, labels, k, seed, chunk_size, log_mean_exp)

    # ------------------------------------------------------------------
    # Public API.

    def encode(self, x, batch_size=256):
        """`(mean, log_var)` of q(z|x), NumPy arrays of shape `(n, latent_dim)`."""
        return self._encode(x, None, batch_size)

    def decode(self, z, batch_size=256):
        """The decoder's mean of p(x|z) in data space, a NumPy array."""
        return self._decode(z, None, batch_size)

    def reconstruct(self, x, batch_size=256):
        """`decode` of the posterior mean of each example of `x`."""
        return self.decode(self.encode(x, batch_size)[0], batch_size)

    def sample(self, num_samples, seed=None, *, mode="mean"):
        """`num_samples` draws of z ~ p(z), decoded: the mean of p(x|z) for
        `mode="mean"`, or a draw from p(x|z) for `mode="sample"`.

        The same integer `seed` gives the same samples; `seed=None` fresh
        ones. The model's training seed generator is not touched.
        """
        return self._sample(num_samples, None, seed, mode)

    def elbo(self, x, num_samples=1, seed=None, batch_size=256):
        """Per-example ELBO in nats: `E_q log p(x|z) - KL`, the expectation
        estimated with `num_samples` draws, the KL in closed form."""
        return self._elbo(x, None, num_samples, seed, batch_size)

    def log_prob(self, x, num_importance_samples=1, seed=None, chunk_size=8192):
        """Per-example importance-weighted lower bound on `log p(x)`, in nats.

        Burda et al. (2016) with `k = num_importance_samples` draws from
        q(z|x); `k = 1` is a one-draw estimate of the ELBO. At most
        `chunk_size` latent codes go through the decoder at once, and the
        log-mean-exp is accumulated across chunks in float64.
        """
        return self._log_prob(x, None, num_importance_samples, seed, chunk_size)

    # ------------------------------------------------------------------
    # Config.

    def get_config(self):
        config = super().get_config()
        config.update(
            data_shape=list(self.data_shape),
            latent_dim=self.latent_dim,
            likelihood=self.likelihood,
            scale=self.scale,
            num_levels=self.num_levels,
            beta=self.beta,
            kl_warmup_steps=self.kl_warmup_steps,
            filters=self.filters,
            hidden_units=list(self.hidden_units),
            **_common.custom_networks_config(self),
        )
        return config

    @classmethod
    def from_config(cls, config):
        return _common.from_config_with_networks(cls, config)
