"""Small models on the core, defined for the tests of the core itself."""

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel


def mlp(input_dim, output_dim, hidden=8, batch_norm=False, name=None):
    layers = [keras.Input((input_dim,)), keras.layers.Dense(hidden, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(output_dim))
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="zoo_tests")
class TinyGAN(GenerativeModel):
    """Two players on 2-D data: critic steps, optional penalty and BatchNorm."""

    data_shape = (2,)

    def __init__(self, latent_dim=3, critic_steps=1, penalty=0.0, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.critic_steps = critic_steps
        self.penalty = penalty
        self.batch_norm = batch_norm
        self.generator = mlp(latent_dim, 2, name="generator")
        self.discriminator = mlp(2, 1, batch_norm=batch_norm, name="discriminator")
        self.traces = 0  # Python-side count of how often the step logic runs.
        self.eager_flags = []
        self.outer_graphs = []  # TensorFlow: the graph around the step's

    def players(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def log_names(self):
        return ("loss", "d_loss", "g_loss")

    def _noise(self, n):
        return keras.random.normal((n, self.latent_dim), seed=self.seed_generator)

    def discriminator_loss(self, real):
        fake = ops.stop_gradient(self.generator(self._noise(ops.shape(real)[0])))
        d = lambda v: self.discriminator(v, training=True)  # noqa: E731
        loss = ops.mean(ops.softplus(-d(real))) + ops.mean(ops.softplus(d(fake)))
        if self.penalty:
            grad = self.gradient(d, real)
            loss = loss + self.penalty * ops.mean(ops.sum(grad**2, axis=1))
        return loss

    def generator_loss(self, n):
        fake = self.generator(self._noise(n), training=True)
        return ops.mean(ops.softplus(-self.discriminator(fake, training=True)))

    def train_step_logic(self, x, y=None, sample_weight=None):
        self.traces += 1
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self.eager_flags.append(tf.executing_eagerly())
            outer = getattr(tf.compat.v1.get_default_graph(), "outer_graph", None)
            self.outer_graphs.append(getattr(outer, "name", None))
        for _ in range(self.critic_steps):
            d_loss = self.minimize("discriminator", lambda: self.discriminator_loss(x))
        g_loss = self.minimize("generator", lambda: self.generator_loss(ops.shape(x)[0]))
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        d_loss = self.discriminator_loss(x)
        g_loss = self.generator_loss(ops.shape(x)[0])
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}

    def sample(self, num_samples, seed=None):
        z = keras.random.normal((num_samples, self.latent_dim), seed=seed)
        return ops.convert_to_numpy(self.generator(z)).astype("float32")

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "critic_steps": self.critic_steps,
            "penalty": self.penalty,
            "batch_norm": self.batch_norm,
        }


@keras.saving.register_keras_serializable(package="zoo_tests")
class Quantizer(GenerativeModel):
    """Encoder -> rounding -> decoder; `straight_through` passes gradients."""

    data_shape = (2,)

    def __init__(self, straight_through=True, **kwargs):
        super().__init__(**kwargs)
        self.straight_through = straight_through
        self.encoder = mlp(2, 2, name="encoder")
        self.decoder = mlp(2, 2, name="decoder")

    def train_step_logic(self, x, y=None, sample_weight=None):
        def loss_fn():
            h = self.encoder(x)
            q = ops.round(h)
            if self.straight_through:
                q = h + ops.stop_gradient(q - h)
            return ops.mean((self.decoder(q) - x) ** 2)

        return {"loss": self.minimize("model", loss_fn)}

    def get_config(self):
        return {**super().get_config(), "straight_through": self.straight_through}


@keras.saving.register_keras_serializable(package="zoo_tests")
class Counter(GenerativeModel):
    """Its loss is the number of updates so far (or a NaN after `nan_after`).

    The loss is known in advance at every step, so what Keras reports per
    epoch shows whether the trackers reset.
    """

    data_shape = (2,)

    def __init__(self, nan_after=None, **kwargs):
        super().__init__(**kwargs)
        self.nan_after = nan_after
        self.w = self.add_weight(shape=(), initializer="zeros", name="w")

    def train_step_logic(self, x, y=None, sample_weight=None):
        step = ops.cast(self.optimizer.iterations, "float32")
        value = step
        if self.nan_after is not None:
            value = ops.sqrt(self.nan_after - step)
        return {"loss": self.minimize("model", lambda: 0.0 * self.w + value)}

    def test_step_logic(self, x, y=None, sample_weight=None):
        return {"loss": ops.mean(x)}

    def get_config(self):
        return {**super().get_config(), "nan_after": self.nan_after}


@keras.saving.register_keras_serializable(package="zoo_tests")
class NoiseProbe(GenerativeModel):
    """Its loss is one seeded noise draw per step; learning changes nothing."""

    data_shape = (2,)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = self.add_weight(shape=(), initializer="zeros", name="w")

    def train_step_logic(self, x, y=None, sample_weight=None):
        def loss_fn():
            noise = keras.random.normal((), seed=self.seed_generator)
            return noise + 0.0 * self.w

        return {"loss": self.minimize("model", loss_fn)}


def toy_data(n=64, seed=0):
    return np.random.RandomState(seed).randn(n, 2).astype("float32")
