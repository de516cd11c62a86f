"""`ConditionalGAN`: a class-conditional GAN with a projection discriminator."""

import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import validators
from zoo.gan._base import check_num_samples, sample_seed
from zoo.gan.gan import GAN


@keras.saving.register_keras_serializable(package="zoo")
class ConditionalGAN(GAN):
    """Class-conditional GAN: `sample(n, labels=...)` draws chosen classes.

    The generator sees `[z, labels]` and concatenates a learned label
    embedding to `z` (Mirza & Osindero, 2014). The discriminator sees
    `[x, labels]` and is a projection discriminator (Miyato & Koyama, 2018):
    `D(x, y) = psi(phi(x)) + <embed(y), phi(x)>`, which conditions through an
    inner product with the features instead of concatenating the label to
    the input. Train with `fit(data, labels)`, labels integers in
    `[0, num_classes)`.

    Args:
        data_shape: shape of one example, `(H, W, C)` or `(D,)`.
        num_classes: number of classes.
        latent_dim: size of the generator's Gaussian input `z` (None: as in `GAN`).
        embedding_dim: size of the generator's label embedding.
        loss, r1_weight, label_smoothing, hidden_units, filters,
            num_stages, spectral_norm, ema_momentum, seed: as in `GAN`.
        generator, discriminator: your own Keras models instead of the
            defaults, taking `[z, labels]` and `[x, labels]` (labels int32 of
            shape `(batch,)`).

    `compile()` with no argument uses the optimizers of `GAN`.

    Example:

    ```python
    import numpy as np
    from zoo.gan import ConditionalGAN

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=512).astype("int32")
    data = (rng.normal(size=(512, 2)) + labels[:, None]).astype("float32")
    cgan = ConditionalGAN(data_shape=(2,), num_classes=3, latent_dim=8,
                          hidden_units=(32, 32))
    cgan.compile()
    cgan.fit(data, labels, batch_size=64, epochs=2, verbose=0)
    cgan.sample(4, labels=[0, 1, 2, 2], seed=0).shape  # (4, 2)
    ```
    """

    conditional = True

    def __init__(self, data_shape, num_classes, latent_dim=None, *, embedding_dim=32, **kwargs):
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer; received {name}={value!r}."
                )
        super().__init__(
            data_shape, latent_dim, num_classes=int(num_classes),
            embedding_dim=int(embedding_dim), **kwargs,
        )

    def generate(self, z, labels=None, training=False):
        return self.generator([z, labels], training=training)

    def critic(self, x, labels=None, training=False):
        logits = self.discriminator([x, labels], training=training)
        # float32 under a mixed-precision policy too: the losses are
        # computed from the logits in float32.
        return ops.reshape(ops.cast(logits, "float32"), (-1,))

    def validate_labels(self, y):
        """`fit` and `evaluate` refuse labels that are not classes in
        `[0, num_classes)` (integer-valued floats pass), before training."""
        if y is not None:
            validators.check_labels(y, self.num_classes, name="y")

    def _labels(self, y):
        if y is None:
            raise ValueError(
                "ConditionalGAN trains on labelled data: call "
                "`fit(data, labels)` with integer labels in "
                f"[0, {self.num_classes})."
            )
        return ops.reshape(ops.cast(y, "int32"), (-1,))

    def train_step_logic(self, x, y=None, sample_weight=None):
        self._no_sample_weight(sample_weight)
        labels = self._labels(y)
        batch_size = ops.shape(x)[0]
        # Samples take the batch's labels, so each class is generated as
        # often as it occurs in the data.
        d_loss = self.minimize(
            "discriminator", lambda: self.discriminator_loss(x, labels)
        )
        g_loss = self.minimize(
            "generator", lambda: self.generator_loss(batch_size, labels)
        )
        self.update_ema()
        return {"d_loss": d_loss, "g_loss": g_loss, "loss": d_loss + g_loss}

    def test_step_logic(self, x, y=None, sample_weight=None):
        self._no_sample_weight(sample_weight)
        labels = self._labels(y)
        d_loss = self.discriminator_loss(x, labels, training=False)
        g_loss = self.generator_loss(ops.shape(x)[0], labels, training=False)
        return {"d_loss": d_loss, "g_loss": g_loss, "loss": d_loss + g_loss}

    def sample(self, num_samples, seed=None, labels=None, batch_size=1024):
        """Draws `num_samples` examples of the given classes, as NumPy float32.

        Args:
            num_samples: how many.
            seed: an integer makes the draw (labels included) repeatable.
            labels: one class for all samples, or one per sample (length
                `num_samples`); None draws classes uniformly.
        """
        num_samples = check_num_samples(num_samples)
        seed = sample_seed(seed)
        labels = self.check_labels(labels, num_samples, seed)
        return self._sample(num_samples, seed, batch_size, labels=labels)

    def check_labels(self, labels, num_samples, seed=0):
        """`labels` as int32 `(num_samples,)`, or a clear ValueError."""
        if labels is None:
            return np.random.default_rng(seed).integers(
                0, self.num_classes, size=num_samples
            ).astype(np.int32)
        array = np.asarray(labels)
        if array.dtype.kind not in "iu" and not (
            array.dtype.kind == "f" and np.all(array == np.round(array))
        ):
            raise ValueError(
                f"`labels` must be integers in [0, {self.num_classes}); "
                f"received dtype {array.dtype}."
            )
        if array.ndim == 0:
            array = np.full((num_samples,), array)
        if array.shape != (num_samples,):
            raise ValueError(
                "`labels` must be one class or one per sample, shape "
                f"({num_samples},); received shape {array.shape}."
            )
        outside = (array < 0) | (array >= self.num_classes)
        if np.any(outside):
            raise ValueError(
                f"`labels` must be in [0, {self.num_classes}) (num_classes="
                f"{self.num_classes}); received {np.unique(array[outside]).tolist()}."
            )
        return array.astype(np.int32)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_classes": self.num_classes, "embedding_dim": self.embedding_dim}
        )
        return config
