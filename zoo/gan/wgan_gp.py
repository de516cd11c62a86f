"""`WGANGP`: Wasserstein GAN with a gradient penalty."""

import numbers

import keras
from keras import ops

from zoo.gan._base import GANBase, check_nonnegative


@keras.saving.register_keras_serializable(package="zoo")
class WGANGP(GANBase):
    """Wasserstein GAN with gradient penalty (Gulrajani et al., 2017).

    The critic estimates the Wasserstein-1 distance between data and
    samples, `E[D(x)] - E[D(G(z))]`; instead of clipping its weights, a
    penalty `gp_weight * E[(|grad D(x_hat)| - 1)^2]` on random points
    `x_hat` between data and samples keeps it close to 1-Lipschitz. Each
    batch trains the critic `critic_steps` times (each with fresh noise,
    on the same data), then the generator once.

    Args:
        data_shape: shape of one example, `(H, W, C)` or `(D,)`.
        latent_dim: size of the generator's Gaussian input `z`; None for
            64 with images, the data's size (at most 64) with vectors.
        gp_weight: weight of the gradient penalty (the paper's lambda, 10).
        critic_steps: critic updates per generator update (the paper's 5).
        hidden_units, filters, num_stages, spectral_norm, generator,
            discriminator, ema_momentum, seed: as in `GAN`. The default
            critic has no batch normalization, which the per-example
            penalty forbids.

    `compile()` with no argument uses, for both players, Adam(1e-4,
    beta_1=0.0, beta_2=0.9) with images, the paper's settings, and the same
    betas with a learning rate of 1e-3 with vectors (see `GAN`). Logs `d_loss` (the critic's
    loss with penalty, from its last update), `g_loss` and `loss`.

    Example:

    ```python
    import numpy as np
    from zoo.gan import WGANGP

    data = np.random.default_rng(0).normal(size=(512, 2)).astype("float32")
    wgan = WGANGP(data_shape=(2,), latent_dim=8, hidden_units=(32, 32),
                  critic_steps=2)
    wgan.compile()
    wgan.fit(data, batch_size=64, epochs=2, verbose=0)
    wgan.sample(5, seed=0).shape  # (5, 2)
    ```
    """

    image_adam = {"learning_rate": 1e-4, "beta_1": 0.0, "beta_2": 0.9}
    vector_adam = {"learning_rate": 1e-3, "beta_1": 0.0, "beta_2": 0.9}

    def __init__(self, data_shape, latent_dim=None, *, gp_weight=10.0, critic_steps=5, **kwargs):
        gp_weight = check_nonnegative(gp_weight, "gp_weight")
        if (
            not isinstance(critic_steps, numbers.Integral)
            or isinstance(critic_steps, bool)
            or critic_steps < 1
        ):
            raise ValueError(
                "`critic_steps` must be a positive integer; received "
                f"critic_steps={critic_steps!r}."
            )
        super().__init__(data_shape, latent_dim, **kwargs)
        self.gp_weight = gp_weight
        self.critic_steps = int(critic_steps)

    def gradient_penalty(self, real, fake, epsilon=None, training=True):
        """`E[(|grad D(x_hat)| - 1)^2]`, unweighted, `x_hat` between data and samples.

        `epsilon` (shape `(batch,)`, in [0, 1]) picks `x_hat = epsilon *
        real + (1 - epsilon) * fake`; by default it is drawn uniformly.
        """
        batch_size = ops.shape(real)[0]
        if epsilon is None:
            epsilon = keras.random.uniform((batch_size,), seed=self.seed_generator)
        epsilon = ops.reshape(
            ops.convert_to_tensor(epsilon, dtype=real.dtype),
            (-1,) + (1,) * (len(real.shape) - 1),
        )
        # Under a mixed-precision policy samples come in float16 and data
        # in float32; TensorFlow does not promote.
        fake = ops.cast(fake, real.dtype)
        x_hat = epsilon * real + (1.0 - epsilon) * fake
        grad = self.gradient(lambda x: self.critic(x, training=training), x_hat)
        grad = ops.reshape(grad, (-1, self._data_size))
        # The epsilon keeps the gradient of the norm finite at grad = 0.
        norm = ops.sqrt(ops.sum(ops.square(grad), axis=1) + 1e-12)
        return ops.mean(ops.square(norm - 1.0))

    def critic_loss(self, real, training=True):
        """The critic's loss, penalty included, on data and fresh samples.

        `training=False` (in `evaluate`) runs the networks in inference mode.
        """
        batch_size = ops.shape(real)[0]
        fake = ops.stop_gradient(
            self.generate(self.latent(batch_size), training=training)
        )
        loss = ops.mean(self.critic(fake, training=training)) - ops.mean(
            self.critic(real, training=training)
        )
        if self.gp_weight:
            loss = loss + self.gp_weight * self.gradient_penalty(
                real, fake, training=training
            )
        return loss

    def generator_loss(self, batch_size, training=True):
        """The generator's loss on `batch_size` fresh samples."""
        fake = self.generate(self.latent(batch_size), training=training)
        return -ops.mean(self.critic(fake, training=training))

    def train_step_logic(self, x, y=None, sample_weight=None):
        self._no_sample_weight(sample_weight)
        for _ in range(self.critic_steps):
            d_loss = self.minimize("discriminator", lambda: self.critic_loss(x))
        g_loss = self.minimize("generator", lambda: self.generator_loss(ops.shape(x)[0]))
        self.update_ema()
        return {"d_loss": d_loss, "g_loss": g_loss, "loss": d_loss + g_loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        self._no_sample_weight(sample_weight)
        d_loss = self.critic_loss(x, training=False)
        g_loss = self.generator_loss(ops.shape(x)[0], training=False)
        return {"d_loss": d_loss, "g_loss": g_loss, "loss": d_loss + g_loss}

    def get_config(self):
        config = super().get_config()
        config.update({"gp_weight": self.gp_weight, "critic_steps": self.critic_steps})
        return config
