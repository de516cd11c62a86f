"""What the GAN family's models share: networks, players, sampling, config."""

import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel, validators
from zoo.layers import networks
from zoo.layers.networks import check_nonnegative  # noqa: F401 (the families import it here)

PLAYERS = ("generator", "discriminator")


def check_num_samples(num_samples):
    if (
        not isinstance(num_samples, numbers.Integral)
        or isinstance(num_samples, bool)
        or num_samples < 1
    ):
        raise ValueError(
            "`num_samples` must be a positive integer; received "
            f"num_samples={num_samples!r}."
        )
    return int(num_samples)


def sample_seed(seed):
    """An int seed for `sample`: the given one, or a fresh one for None.

    `sample` draws with its own integer seed, never with the model's
    `seed_generator`, so sampling does not change what training draws next.
    """
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    return validators.check_seed(seed)


class GANBase(GenerativeModel):
    """Base of `GAN`, `WGANGP` and `ConditionalGAN`; not exported.

    Builds (or adopts) the generator and discriminator, declares them as the
    two players, and implements `sample` and the config. Subclasses write
    the losses and the training step.
    """

    # Subclasses set these: whether labels condition the networks, and the
    # Adam settings of a bare `compile()` for images and for vectors.
    conditional = False
    image_adam = {"learning_rate": 2e-4, "beta_1": 0.5, "beta_2": 0.999}
    vector_adam = {"learning_rate": 1e-3, "beta_1": 0.0, "beta_2": 0.9}

    def __init__(
        self,
        data_shape,
        latent_dim=None,
        *,
        hidden_units=(128, 128, 128),
        filters=64,
        num_stages=None,
        spectral_norm=False,
        generator=None,
        discriminator=None,
        num_classes=None,
        embedding_dim=32,
        ema_momentum=0.999,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.data_shape = networks.check_data_shape(data_shape)
        self._data_size = int(np.prod(self.data_shape))
        if latent_dim is None:
            # Images: DCGAN's size. Vectors: a latent as large as the data
            # (up to 64), as in the 2-D mixture benchmarks; a much larger one
            # leaves mass between the modes.
            latent_dim = 64 if len(self.data_shape) == 3 else min(self.data_shape[0], 64)
        self.latent_dim = networks.check_positive_int(latent_dim, "latent_dim")
        self.hidden_units = networks.check_hidden_units(hidden_units)
        self.filters = networks.check_positive_int(filters, "filters")
        if len(self.data_shape) == 3:
            self.num_stages = networks.conv_num_stages(self.data_shape, num_stages)
        elif num_stages is not None:
            raise ValueError(
                "`num_stages` sets the strided stages of the convolutional "
                f"networks for images; data_shape={self.data_shape} is a "
                "vector, whose networks are MLPs sized by `hidden_units`. "
                f"Leave num_stages=None; received num_stages={num_stages!r}."
            )
        else:
            self.num_stages = None
        self._num_stages_arg = num_stages
        if not isinstance(spectral_norm, bool):
            raise ValueError(
                "`spectral_norm` must be True or False; received "
                f"spectral_norm={spectral_norm!r}."
            )
        self.spectral_norm = spectral_norm
        if num_classes is not None and not self.conditional:
            raise ValueError(
                f"{type(self).__name__} is unconditional and takes no "
                "`num_classes`; use `ConditionalGAN` for class-conditional "
                f"generation. Received num_classes={num_classes!r}."
            )
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim

        # Seeds of the two networks' initializers differ so that they do not
        # start from correlated weights.
        net_seed = None if seed is None else int(seed) * 1000 % 2**31
        shared = dict(
            hidden_units=self.hidden_units, filters=self.filters,
            num_stages=num_stages, num_classes=num_classes,
        )
        self._custom_generator = generator is not None
        self._custom_discriminator = discriminator is not None
        if generator is None:
            generator = networks.default_generator(
                self.data_shape, self.latent_dim, embedding_dim=embedding_dim,
                seed=net_seed, **shared,
            )
        if discriminator is None:
            discriminator = networks.default_discriminator(
                self.data_shape, spectral_norm=spectral_norm,
                seed=validators.derive_seed(net_seed, 500), **shared,
            )
        self._check_networks(generator, discriminator)
        self.generator = generator
        self.discriminator = discriminator

        if ema_momentum is not None and (
            not isinstance(ema_momentum, numbers.Real)
            or isinstance(ema_momentum, bool)
            or not 0 <= ema_momentum < 1
        ):
            raise ValueError(
                "`ema_momentum` must be None or a number in [0, 1); received "
                f"ema_momentum={ema_momentum!r}."
            )
        self.ema_momentum = None if not ema_momentum else float(ema_momentum)
        # A running average of the generator's weights (Yazici et al., 2019)
        # is what `sample` uses: the trained generator keeps circling the
        # equilibrium, and its average sits much closer to it.
        self.ema_generator = None
        if self.ema_momentum is not None:
            self.ema_generator = _clone(generator, name=f"{generator.name}_ema")
        # The default image generator ends in tanh: images in [-1, 1].
        if len(self.data_shape) == 3 and not self._custom_generator:
            self.data_range = (-1.0, 1.0)
        self._mark_built()

    def _check_networks(self, generator, discriminator):
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(net, keras.layers.Layer):
                raise ValueError(
                    f"`{name}` must be a Keras model or layer, or None for the "
                    f"default network; received {name}={net!r}."
                )
        inputs = "[z, labels]" if self.conditional else "z"
        try:
            in_shape, out_shape = generator.input_shape, generator.output_shape
        except (AttributeError, ValueError):
            return  # Not built yet (a subclassed model): nothing to check.
        if tuple(out_shape[1:]) != self.data_shape:
            raise ValueError(
                f"`generator` must map {inputs} to data of shape "
                f"{self.data_shape} (the `data_shape`); its output shape is "
                f"{tuple(out_shape)}."
            )
        z_shape = in_shape[0] if isinstance(in_shape, list) else in_shape
        if tuple(z_shape[1:]) != (self.latent_dim,):
            raise ValueError(
                f"`generator`'s input z must have shape (batch, "
                f"{self.latent_dim}) (the `latent_dim`); it has shape "
                f"{tuple(z_shape)}."
            )

    # ------------------------------------------------------------------
    # The protocol of GenerativeModel.

    def players(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def default_optimizer(self, player):
        settings = self.image_adam if len(self.data_shape) == 3 else self.vector_adam
        return keras.optimizers.Adam(**settings)

    def log_names(self):
        return ("loss", "d_loss", "g_loss")

    # ------------------------------------------------------------------
    # Pieces of a step.

    def latent(self, batch_size):
        """Fresh latent codes drawn from the training seed generator."""
        return keras.random.normal(
            (batch_size, self.latent_dim), seed=self.seed_generator
        )

    def generate(self, z, labels=None, training=False):
        """Generator output for latent codes `z` (and `labels`)."""
        return self.generator(z, training=training)

    def critic(self, x, labels=None, training=False):
        """Discriminator logits for data `x` (and `labels`), shape `(batch,)`."""
        logits = self.discriminator(x, training=training)
        # float32 under a mixed-precision policy too: the losses are
        # computed from the logits in float32.
        return ops.reshape(ops.cast(logits, "float32"), (-1,))

    def update_ema(self):
        """Moves `ema_generator` towards `generator`; one call per step.

        The momentum ramps up as `min(m, (1 + t) / (10 + t))` over the
        generator's first updates `t`, so the average does not carry the
        random initial weights for thousands of steps.
        """
        if self.ema_generator is None:
            return
        t = ops.cast(self.player_optimizer("generator").iterations, "float32")
        momentum = ops.minimum(self.ema_momentum, (1.0 + t) / (10.0 + t))
        for average, current in zip(self.ema_generator.weights, self.generator.weights):
            if "float" in keras.backend.standardize_dtype(average.dtype):
                average.assign(
                    momentum * average + (1.0 - momentum) * ops.cast(current, average.dtype)
                )
            else:
                average.assign(current)

    def _no_sample_weight(self, sample_weight):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not use sample weights; call "
                "`fit` without `sample_weight` (and without `class_weight`)."
            )

    # ------------------------------------------------------------------
    # Sampling.

    def sample(self, num_samples, seed=None, batch_size=1024):
        """Draws `num_samples` examples; a NumPy float32 array in data space.

        Uses `ema_generator` (the generator's running average) unless
        `ema_momentum` is None. The same integer `seed` gives the same
        samples; sampling never touches the seed generator of training.
        """
        return self._sample(num_samples, seed, batch_size)

    def _sample(self, num_samples, seed, batch_size, labels=None):
        num_samples = check_num_samples(num_samples)
        batch_size = networks.check_positive_int(batch_size, "batch_size")
        seed = sample_seed(seed)
        z = keras.random.normal((num_samples, self.latent_dim), seed=seed)
        generator = self.generator if self.ema_generator is None else self.ema_generator
        chunks = []
        for start in range(0, num_samples, batch_size):
            part = z[start : start + batch_size]
            if labels is not None:
                part = [part, ops.convert_to_tensor(labels[start : start + batch_size])]
            chunks.append(
                ops.convert_to_numpy(generator(part, training=False))
            )
        return np.concatenate(chunks).astype(np.float32)

    # ------------------------------------------------------------------
    # Config.

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "data_shape": list(self.data_shape),
                "latent_dim": self.latent_dim,
                "hidden_units": list(self.hidden_units),
                "filters": self.filters,
                "num_stages": self._num_stages_arg,
                "spectral_norm": self.spectral_norm,
                "ema_momentum": self.ema_momentum,
                "generator": (
                    _serialize(self.generator) if self._custom_generator else None
                ),
                "discriminator": (
                    _serialize(self.discriminator)
                    if self._custom_discriminator else None
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for name in PLAYERS:
            if config.get(name) is not None:
                config[name] = keras.saving.deserialize_keras_object(
                    config[name], custom_objects=custom_objects
                )
        return cls(**config)


def _serialize(network):
    # Tuples become lists, as they do in a saved file, so that a loaded
    # model's config equals the one it was saved with.
    def lists(value):
        if isinstance(value, dict):
            return {k: lists(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [lists(v) for v in value]
        return value

    return lists(keras.saving.serialize_keras_object(network))


def _clone(network, name):
    """A copy of `network` with the same weights, frozen (non-trainable)."""
    try:
        clone = keras.models.clone_model(network)
    except Exception as error:  # Subclassed models cannot always be cloned.
        raise ValueError(
            f"Could not copy the generator {network.name!r} for the weight "
            f"average ({error}). Pass a functional or Sequential generator, "
            "or ema_momentum=None to sample from the generator itself."
        ) from error
    clone.name = name
    clone.set_weights(network.get_weights())
    clone.trainable = False
    return clone
