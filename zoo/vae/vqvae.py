"""`VQVAE`: a vector-quantized autoencoder (van den Oord et al., 2017)."""

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel, validators
from zoo.layers import likelihoods, vae_networks
from zoo.layers.vector_quantizer import VectorQuantizer
from zoo.vae import _common

# The sampling prior mixes in this much of the uniform distribution, so
# that no code has probability zero and every ELBO is finite.
PRIOR_SMOOTHING = 1e-3


@keras.saving.register_keras_serializable(package="zoo")
class VQVAE(GenerativeModel):
    """VQ-VAE: an encoder to a grid of vectors, each snapped to the nearest of
    `num_codes` learned codes, and a decoder from the codes.

    The loss per example, in nats and squared distances summed over the grid:

        loss = reconstruction_loss + codebook_loss + commitment_cost * commitment_loss

    with `reconstruction_loss = -log p(x | z_q)` (the same likelihoods as
    `VAE`), `codebook_loss = |sg(z_e) - z_q|^2` moving the codes towards the
    encoder outputs, and `commitment_loss = |z_e - sg(z_q)|^2` keeping the
    encoder near its codes. The decoder reads `z_e + sg(z_q - z_e)`, whose
    gradient passes straight through the quantization to the encoder. With
    `ema_decay` the codebook follows moving averages of its vectors instead
    and there is no codebook loss. Codes that fall out of use are restarted
    at encoder outputs (`dead_code_threshold`, see `VectorQuantizer`). The
    logs add `perplexity` (the effective number of codes used in a batch)
    and `usage` (the fraction of codes used at least once in a batch).

    Generative model and likelihood: a prior over the code grid, fitted
    during training as an exponential moving average of each grid position's
    code frequencies (a factorized categorical; VQ-VAE's autoregressive prior
    is left out), and p(x | z_q). Since q(z|x) puts all its mass on one
    grid, `elbo(x) = log p(x | z_q(x)) + log prior(z_q(x))` is a valid lower
    bound on `log p(x)` under that model, and the importance-weighted bound
    equals it for every `k`.

    Args:
        data_shape: `(H, W, C)` images (conv networks, a grid of codes at
            reduced resolution) or `(D,)` vectors (MLPs, `num_latents` codes).
        num_codes: codebook size.
        code_dim: dimension of each code.
        likelihood, scale, num_levels: the decoder likelihood, as in `VAE`.
        commitment_cost: weight of the commitment loss (0.25 in the paper).
        ema_decay: None (codebook trained by its loss) or the EMA decay.
            With a likelihood in nats, and a learned scale above all, the
            reconstruction gradient dwarfs the codebook loss's, and a
            codebook trained by gradient can lag the encoder for a while;
            an EMA codebook (0.95 to 0.99) follows it at once.
        dead_code_threshold: restart codes getting fewer vectors than this
            per batch (moving average); 0 turns restarts off.
        num_latents: codes per example for vector data (default 4); images
            take their grid from the encoder.
        filters, hidden_units: sizes of the default networks.
        encoder: optional network from `x` to `(..., code_dim)`.
        decoder: optional network from the encoder's output shape to the
            likelihood parameters (see `VAE`).
        seed: seeds the initializers, the codebook and the restarts.

    Example:

    ```python
    from zoo.data import digits
    from zoo.vae import VQVAE

    images, _ = digits("train")
    vq = VQVAE(data_shape=(8, 8, 1), num_codes=32, code_dim=8, num_levels=17,
               ema_decay=0.95, seed=0)
    vq.compile()
    vq.fit(images[:256], batch_size=64, epochs=1, verbose=0)
    codes = vq.encode(images[:4])           # (4, 4, 4) integer codes
    stats = vq.codebook_usage(images[:256]) # usage, perplexity, counts
    ```
    """

    data_dtype = "float"

    def __init__(
        self,
        data_shape,
        num_codes=64,
        code_dim=16,
        *,
        likelihood="gaussian",
        scale="learned",
        num_levels=None,
        commitment_cost=0.25,
        ema_decay=None,
        dead_code_threshold=1.0,
        num_latents=None,
        filters=32,
        hidden_units=(256,),
        encoder=None,
        decoder=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.data_shape = vae_networks.check_data_shape(data_shape)
        self.num_codes = _common.check_positive_int(num_codes, "num_codes", 2)
        self.code_dim = _common.check_positive_int(code_dim, "code_dim")
        likelihoods.check_likelihood(likelihood, scale, num_levels)
        self.likelihood = likelihood
        self.scale = scale if scale == "learned" else float(scale)
        self.num_levels = None if num_levels is None else int(num_levels)
        self.commitment_cost = _common.check_nonnegative(
            commitment_cost, "commitment_cost"
        )
        if num_latents is not None:
            _common.check_positive_int(num_latents, "num_latents")
            if len(self.data_shape) != 1:
                raise ValueError(
                    "`num_latents` is for vector data only (images take their "
                    "code grid from the encoder); received num_latents="
                    f"{num_latents!r} with data_shape={self.data_shape}."
                )
        self.num_latents = num_latents
        self.filters = _common.check_positive_int(filters, "filters")
        self.hidden_units = list(vae_networks.check_hidden_units(hidden_units))
        self.quantizer = VectorQuantizer(
            self.num_codes, self.code_dim, ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold, seed=seed, name="quantizer",
        )
        self.ema_decay = self.quantizer.ema_decay
        self.dead_code_threshold = self.quantizer.dead_code_threshold
        self._custom_encoder = _common.check_network(encoder, "encoder") is not None
        self._custom_decoder = _common.check_network(decoder, "decoder") is not None
        self.encoder = encoder if encoder is not None else vae_networks.vq_encoder(
            self.data_shape, self.code_dim, filters=self.filters,
            hidden_units=self.hidden_units, num_latents=num_latents or 4, seed=seed,
        )
        self.latent_shape = self._check_encoder()
        channels = likelihoods.num_parameters(self.likelihood, self.scale)
        if len(self.data_shape) == 3:
            channels *= self.data_shape[-1]
        self.decoder = decoder if decoder is not None else vae_networks.vq_decoder(
            self.latent_shape, self.data_shape, output_channels=channels,
            filters=self.filters, hidden_units=self.hidden_units,
            seed=validators.derive_seed(seed, 1000),
        )
        self._check_decoder()
        self.num_positions = int(np.prod(self.latent_shape[:-1]))
        # The factorized prior: each position's code frequencies.
        self.prior_frequencies = self.add_weight(
            shape=(self.num_positions, self.num_codes),
            initializer=keras.initializers.Constant(1.0 / self.num_codes),
            trainable=False, name="prior_frequencies",
        )
        # The loss terms and code statistics of the last training step (see
        # `VAE.last_terms`): reconstruction, codebook, commitment,
        # perplexity, usage.
        self.last_terms = self.add_weight(
            shape=(5,), initializer="zeros", trainable=False, name="last_terms"
        )
        self.data_range = _common.data_range(self.data_shape, likelihood, self.num_levels)
        self._mark_built()

    def _param_shape(self):
        channels = likelihoods.num_parameters(self.likelihood, self.scale)
        return (*self.data_shape[:-1], channels * self.data_shape[-1])

    def _check_encoder(self):
        # Symbolic: builds the network and checks its shape, computing nothing.
        out = self.encoder(keras.KerasTensor((1, *self.data_shape)))
        shape = tuple(out.shape)
        if len(shape) < 2 or shape[-1] != self.code_dim:
            raise ValueError(
                "`encoder` must map a batch of data to (batch, ..., code_dim="
                f"{self.code_dim}); it gives {shape} for a batch of 1."
            )
        return shape[1:]

    def _check_decoder(self):
        out = self.decoder(keras.KerasTensor((1, *self.latent_shape)))
        if tuple(out.shape) != (1, *self._param_shape()):
            raise ValueError(
                f"`decoder` must map (batch, {', '.join(map(str, self.latent_shape))}) "
                f"to (batch, {', '.join(map(str, self._param_shape()))}) for "
                f"likelihood={self.likelihood!r}, scale={self.scale!r}; it gives "
                f"{tuple(out.shape)} for a batch of 1."
            )

    # ------------------------------------------------------------------
    # Steps.

    def log_names(self):
        names = ["loss", "reconstruction_loss"]
        if self.ema_decay is None:
            names.append("codebook_loss")
        return (*names, "commitment_loss", "perplexity", "usage")

    def log_direction(self, name):
        # More codes in use is better; the losses go down.
        return "up" if name in ("perplexity", "usage") else "down"

    def _log_likelihood(self, x, params):
        return likelihoods.log_likelihood(
            x, params, self.likelihood, self.scale, self.num_levels
        )

    def _encoder_vectors(self, x, training=False):
        # Quantized in the codebook's float32 under a mixed-precision
        # policy too (the encoder computes in float16).
        return ops.cast(self.encoder(x, training=training), self.quantizer.codebook.dtype)

    def _terms(self, x, sample_weight, training):
        """Weighted means of the loss terms, and the batch's code statistics."""
        z_e = self._encoder_vectors(x, training=training)
        indices, codes = self.quantizer.quantize_vectors(z_e)
        # Straight-through: the decoder sees the codes, the encoder gets
        # the decoder's gradient as if there were no quantization.
        z_q = z_e + ops.stop_gradient(codes - z_e)
        params = self.decoder(z_q, training=training)
        n = ops.shape(x)[0]

        def squared(a):
            return ops.sum(ops.reshape(ops.square(a), (n, -1)), axis=1)

        recon = -self._log_likelihood(x, params)
        codebook = squared(ops.stop_gradient(z_e) - codes)
        commitment = squared(z_e - ops.stop_gradient(codes))
        _, usage, perplexity = self.quantizer.code_statistics(indices)
        return (
            _common.weighted_mean(recon, sample_weight),
            _common.weighted_mean(codebook, sample_weight),
            _common.weighted_mean(commitment, sample_weight),
            perplexity,
            usage,
        )

    def _loss(self, recon, codebook, commitment):
        loss = recon + self.commitment_cost * commitment
        if self.ema_decay is None:
            loss = loss + codebook
        return loss

    def _logs(self, loss, terms):
        recon, codebook, commitment, perplexity, usage = terms
        logs = {"loss": loss, "reconstruction_loss": recon}
        if self.ema_decay is None:
            logs["codebook_loss"] = codebook
        logs.update(commitment_loss=commitment, perplexity=perplexity, usage=usage)
        return logs

    def train_step_logic(self, x, y=None, sample_weight=None):
        def loss_fn():
            terms = self._terms(x, sample_weight, training=True)
            self.last_terms.assign(ops.stop_gradient(ops.stack(terms)))
            return self._loss(*terms[:3])

        loss = self.minimize("model", loss_fn)
        terms = ops.convert_to_tensor(self.last_terms)
        # Codebook state (EMA, usage, restarts) and the prior follow the
        # encoder as it is after this step's update.
        z_e = ops.stop_gradient(self._encoder_vectors(x, training=False))
        indices = self.quantizer.nearest(z_e)
        self.quantizer.update(z_e, indices, self.seed_generator)
        frequencies = ops.mean(
            ops.one_hot(
                ops.reshape(indices, (-1, self.num_positions)), self.num_codes,
                dtype="float32",
            ),
            axis=0,
        )
        decay = self.quantizer.usage_decay
        self.prior_frequencies.assign(
            decay * self.prior_frequencies + (1.0 - decay) * frequencies
        )
        return self._logs(loss, [terms[i] for i in range(5)])

    def test_step_logic(self, x, y=None, sample_weight=None):
        terms = self._terms(x, sample_weight, training=False)
        return self._logs(self._loss(*terms[:3]), terms)

    # ------------------------------------------------------------------
    # Eager methods on NumPy arrays: the networks run compiled (see
    # `_common.compiled`), the noise comes from NumPy.

    def _fn(self, name):
        if name == "encode":
            def fn(x):
                return self.quantizer.nearest(self._encoder_vectors(x))
        elif name == "params":
            def fn(indices):
                return self.decoder(self.quantizer.lookup(indices))
        else:  # "reconstruction": log p(x | z_q(x)) and the codes
            def fn(x):
                indices = self.quantizer.nearest(self._encoder_vectors(x))
                params = self.decoder(self.quantizer.lookup(indices))
                return self._log_likelihood(x, params), indices
        return _common.compiled(self, name, fn)

    def _batched(self, name, array, batch_size):
        fn = self._fn(name)
        out = []
        for s, pad in _common.padded_batches(len(array), batch_size):
            y = fn(_common.pad_rows(array[s], pad))
            out.append(keras.tree.map_structure(lambda a: a[: s.stop - s.start], y))
        if isinstance(out[0], (tuple, list)):
            return tuple(np.concatenate(parts) for parts in zip(*out))
        return np.concatenate(out)

    def _prior(self):
        """The sampling prior, `(positions, num_codes)` probabilities."""
        frequencies = np.asarray(ops.convert_to_numpy(self.prior_frequencies), np.float64)
        p = (1.0 - PRIOR_SMOOTHING) * frequencies + PRIOR_SMOOTHING / self.num_codes
        return p / p.sum(axis=1, keepdims=True)

    def encode(self, x, batch_size=256):
        """The code indices of `x`: int32, shape `(n, *latent_shape[:-1])`."""
        x = _common.check_data(x, self.data_shape, type(self).__name__)
        return self._batched("encode", x, batch_size).astype(np.int32)

    def _check_indices(self, indices):
        indices = np.asarray(ops.convert_to_numpy(indices))
        grid = tuple(self.latent_shape[:-1])
        if indices.shape[1:] != grid or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"`indices` must be integer codes of shape (batch, "
                f"{', '.join(map(str, grid))}); received {indices.dtype} of "
                f"shape {indices.shape}."
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_codes):
            raise ValueError(f"`indices` must lie in [0, {self.num_codes}).")
        return indices.astype(np.int32)

    def decode(self, indices, batch_size=256, *, mode="mean", seed=None):
        """Data from code indices: the mean of p(x|z_q), or a draw from it
        with `mode="sample"` (seeded by `seed`)."""
        indices = self._check_indices(indices)
        if mode not in ("mean", "sample"):
            raise ValueError(
                "`mode` must be 'mean' (the decoder's mean) or 'sample' (a "
                f"draw from p(x|z)); received mode={mode!r}."
            )
        params = self._batched("params", indices, batch_size)
        if mode == "mean":
            mean = likelihoods.mean(
                ops.convert_to_tensor(params), self.likelihood, self.scale, self.num_levels
            )
            return _common.to_numpy(mean).astype(np.float32)
        return likelihoods.sample(
            params, self.likelihood, self.scale, self.num_levels,
            _common.numpy_rng(seed),
        )

    def reconstruct(self, x, batch_size=256):
        """The decoder's mean for the codes of each example of `x`."""
        return self.decode(self.encode(x, batch_size), batch_size)

    def sample(self, num_samples, seed=None, *, mode="mean"):
        """Codes drawn from the factorized prior, decoded (see `decode`)."""
        num_samples = _common.check_positive_int(num_samples, "num_samples")
        rng = _common.numpy_rng(seed)
        cdf = np.cumsum(self._prior(), axis=1)
        u = rng.random((num_samples, self.num_positions, 1))
        indices = np.minimum((u > cdf[None]).sum(axis=-1), self.num_codes - 1)
        indices = indices.reshape((num_samples, *self.latent_shape[:-1]))
        return self.decode(indices, mode=mode, seed=int(rng.integers(2**31 - 1)))

    def log_prior(self, indices):
        """Per-example log-probability of code grids under the factorized
        prior, in nats (float64): the part of `elbo` that pays for the codes."""
        indices = self._check_indices(indices)
        flat = indices.reshape(len(indices), self.num_positions)
        log_prior = np.log(self._prior())
        return log_prior[np.arange(self.num_positions)[None], flat].sum(axis=1)

    def elbo(self, x, batch_size=256):
        """Per-example ELBO in nats: `log p(x|z_q(x)) + log prior(z_q(x))`."""
        x = _common.check_data(x, self.data_shape, type(self).__name__)
        log_px, indices = self._batched("reconstruction", x, batch_size)
        return log_px.astype(np.float64) + self.log_prior(indices)

    def log_prob(self, x, num_importance_samples=1, seed=None, batch_size=256):
        """The importance-weighted bound on `log p(x)`, in nats: with a
        one-point posterior every importance weight is the same, so it is
        `elbo(x)` for every `num_importance_samples` (checked, >= 1)."""
        _common.check_positive_int(num_importance_samples, "num_importance_samples")
        _common.numpy_rng(seed)  # validates it; nothing is drawn
        return self.elbo(x, batch_size)

    def codebook_usage(self, x, batch_size=256):
        """Code statistics over all of `x`: a dict with `counts` (per code),
        `usage` (fraction of codes used) and `perplexity` (see
        `VectorQuantizer.code_statistics`)."""
        counts, usage, perplexity = self.quantizer.code_statistics(self.encode(x, batch_size))
        return {
            "counts": _common.to_numpy(counts).astype(np.int64),
            "usage": float(_common.to_numpy(usage)),
            "perplexity": float(_common.to_numpy(perplexity)),
        }

    # ------------------------------------------------------------------
    # Config.

    def get_config(self):
        config = super().get_config()
        config.update(
            data_shape=list(self.data_shape),
            num_codes=self.num_codes,
            code_dim=self.code_dim,
            likelihood=self.likelihood,
            scale=self.scale,
            num_levels=self.num_levels,
            commitment_cost=self.commitment_cost,
            ema_decay=self.ema_decay,
            dead_code_threshold=self.dead_code_threshold,
            num_latents=self.num_latents,
            filters=self.filters,
            hidden_units=list(self.hidden_units),
            **_common.custom_networks_config(self),
        )
        return config

    @classmethod
    def from_config(cls, config):
        return _common.from_config_with_networks(cls, config)
