"""`GAN`: the generative adversarial network, with a choice of losses."""

import keras
from keras import ops

from zoo.gan._base import GANBase, check_nonnegative

LOSSES = ("non_saturating", "hinge", "least_squares")


@keras.saving.register_keras_serializable(package="zoo")
class GAN(GANBase):
    """Generative adversarial network (Goodfellow et al., 2014).

    One discriminator update, then one generator update, per batch. The
    discriminator learns to tell data from samples; the generator learns to
    fool it. Networks are built from `data_shape`: DCGAN convolutional
    networks for images `(H, W, C)` in [-1, 1], MLPs for vectors `(D,)`; or
    pass your own `generator` (`z -> x`) and `discriminator` (`x -> logit`).

    Args:
        data_shape: shape of one example, `(H, W, C)` or `(D,)`.
        latent_dim: size of the generator's Gaussian input `z`; None for
            64 with images, the data's size (at most 64) with vectors.
        loss: `"non_saturating"` (the generator maximizes `log D(G(z))`,
            Goodfellow et al.), `"hinge"` (Lim & Ye, 2017; Miyato et al.,
            2018) or `"least_squares"` (LSGAN, Mao et al., 2017).
        r1_weight: `gamma` of the R1 penalty `gamma / 2 * E|grad D(x)|^2`
            on data (Mescheder et al., 2018); 0 turns it off.
        label_smoothing: one-sided label smoothing (Salimans et al., 2016):
            the discriminator's target for data is `1 - label_smoothing`;
            for the `non_saturating` and `least_squares` losses.
        hidden_units: hidden layer widths of the default MLPs (vectors).
        filters: base width of the default conv networks (images).
        num_stages: stride-2 stages of the default conv networks; None
            picks the most that keep a feature map of at least 4x4.
        spectral_norm: spectral normalization (Miyato et al., 2018) in the
            default discriminator.
        generator, discriminator: your own Keras models instead of the
            defaults (functional or Sequential, so that the weight average
            can copy the generator).
        ema_momentum: `sample` draws from `ema_generator`, an exponential
            moving average of the generator's weights with this momentum
            (Yazici et al., 2019; as in ProGAN and BigGAN); None samples
            from `generator` itself.
        seed: seeds the training noise and the default networks' weights.

    `compile()` with no argument uses, for both players, Adam(2e-4,
    beta_1=0.5) with images, DCGAN's settings (Radford et al., 2016), and
    Adam(1e-3, beta_1=0.0, beta_2=0.9) with vectors: the small MLPs of the
    2-D benchmarks need the larger step to sharpen modes 0.02 wide within
    minutes, and beta_1=0 (as in WGAN-GP and SNGAN) spreads the samples more
    evenly over the modes. Logs `d_loss`, `g_loss` and `loss` (their sum).

    Example:

    ```python
    import numpy as np
    from zoo.gan import GAN

    data = np.random.default_rng(0).normal(size=(512, 2)).astype("float32")
    gan = GAN(data_shape=(2,), latent_dim=8, hidden_units=(32, 32))
    gan.compile()
    gan.fit(data, batch_size=64, epochs=2, verbose=0)
    gan.sample(5, seed=0).shape  # (5, 2)
    ```
    """

    def __init__(
        self,
        data_shape,
        latent_dim=None,
        *,
        loss="non_saturating",
        r1_weight=0.0,
        label_smoothing=0.0,
        **kwargs,
    ):
        if loss not in LOSSES:
            raise ValueError(
                f"`loss` must be one of {', '.join(map(repr, LOSSES))}; "
                f"received loss={loss!r}."
            )
        r1_weight = check_nonnegative(r1_weight, "r1_weight")
        label_smoothing = check_nonnegative(label_smoothing, "label_smoothing")
        if label_smoothing >= 1:
            raise ValueError(
                "`label_smoothing` must be in [0, 1); received "
                f"label_smoothing={label_smoothing!r}."
            )
        if label_smoothing and loss == "hinge":
            raise ValueError(
                "`label_smoothing` changes the target of a classification "
                "loss; the 'hinge' loss has none. Use loss='non_saturating' "
                "or 'least_squares', or label_smoothing=0."
            )
        super().__init__(data_shape, latent_dim, **kwargs)
        self.loss_name = loss
        self.r1_weight = r1_weight
        self.label_smoothing = label_smoothing

    # ------------------------------------------------------------------
    # Losses, on logits.

    def discriminator_loss(self, real, labels=None, training=True):
        """The discriminator's loss on a batch of data and fresh samples.

        `training=False` (in `evaluate`) runs the networks in inference mode,
        so that batch statistics and power iterations stay as they are.
        """
        batch_size = ops.shape(real)[0]
        # The generator is not updated here: no gradient through its output.
        fake = ops.stop_gradient(
            self.generate(self.latent(batch_size), labels, training=training)
        )
        real_logits = self.critic(real, labels, training=training)
        fake_logits = self.critic(fake, labels, training=training)
        target = 1.0 - self.label_smoothing
        if self.loss_name == "non_saturating":
            # Binary cross-entropy with logits: -log sigmoid(l) = softplus(-l).
            loss = ops.mean(
                target * ops.softplus(-real_logits)
                + (1.0 - target) * ops.softplus(real_logits)
            ) + ops.mean(ops.softplus(fake_logits))
        elif self.loss_name == "hinge":
            loss = ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(
                ops.relu(1.0 + fake_logits)
            )
        else:
            loss = 0.5 * ops.mean(ops.square(real_logits - target)) + 0.5 * ops.mean(
                ops.square(fake_logits)
            )
        if self.r1_weight:
            loss = loss + self.r1_weight / 2.0 * self.r1_penalty(real, labels, training)
        return loss

    def generator_loss(self, batch_size, labels=None, training=True):
        """The generator's loss on `batch_size` fresh samples."""
        fake = self.generate(self.latent(batch_size), labels, training=training)
        logits = self.critic(fake, labels, training=training)
        if self.loss_name == "non_saturating":
            return ops.mean(ops.softplus(-logits))
        if self.loss_name == "hinge":
            return -ops.mean(logits)
        return 0.5 * ops.mean(ops.square(logits - 1.0))

    def r1_penalty(self, real, labels=None, training=True):
        """`E |grad_x D(x)|^2` on data, unweighted."""
        grad = self.gradient(lambda x: self.critic(x, labels, training=training), real)
        return ops.mean(ops.sum(ops.reshape(ops.square(grad), (-1, self._data_size)), axis=1))

    # ------------------------------------------------------------------
    # Steps.

    def train_step_logic(self, x, y=None, sample_weight=None):
        self._no_sample_weight(sample_weight)
        batch_size = ops.shape(x)[0]
        d_loss = self.minimize("discriminator", lambda: self.discriminator_loss(x))
        g_loss = self.minimize("generator", lambda: self.generator_loss(batch_size))
        self.update_ema()
        return {"d_loss": d_loss, "g_loss": g_loss, "loss": d_loss + g_loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        self._no_sample_weight(sample_weight)
        d_loss = self.discriminator_loss(x, training=False)
        g_loss = self.generator_loss(ops.shape(x)[0], training=False)
        return {"d_loss": d_loss, "g_loss": g_loss, "loss": d_loss + g_loss}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "loss": self.loss_name,
                "r1_weight": self.r1_weight,
                "label_smoothing": self.label_smoothing,
            }
        )
        return config
