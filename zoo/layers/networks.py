"""Default networks built from the shape of the data, shared by the families.

Images `(H, W, C)` get DCGAN-style convolutional networks (Radford et al.,
2016): a generator that upsamples with strided transposed convolutions and
batch normalization, and a discriminator (or encoder) that downsamples with
strided convolutions. Vectors `(D,)` get MLPs. Every builder returns a
functional `keras.Model`, already built, so a model that holds it can be
compiled at once.

Class-conditional variants take `num_classes`: the generator then has inputs
`[z, labels]` and concatenates a label embedding to `z`; the discriminator
has inputs `[x, labels]` and adds the projection term of Miyato & Koyama
(2018), `<embed(label), features(x)>`, to its output.

Given a `seed`, every initializer is seeded, so a network is the same each
time it is built on one backend.

Example:

```python
from zoo.layers import networks

g = networks.default_generator((8, 8, 1), latent_dim=16, filters=8)
d = networks.default_discriminator((8, 8, 1), filters=8, spectral_norm=True)
g.output_shape, d.output_shape  # (None, 8, 8, 1), (None, 1)
```
"""

import math
import numbers

import keras
from keras import layers

from zoo.layers.spectral_norm import SpectralNorm

CHANNELS_LAST = "channels_last"
# The auto choice stops halving at 4x4, DCGAN's smallest feature map.
_MIN_FEATURE_SIZE = 4
_MAX_AUTO_STAGES = 4


def check_data_shape(data_shape, name="data_shape"):
    """`data_shape` as a tuple of positive ints: `(D,)` or `(H, W, C)`."""
    try:
        shape = tuple(data_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) not in (1, 3)
        or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
            for d in shape
        )
    ):
        raise ValueError(
            f"`{name}` must be the shape of one example, `(dim,)` for vectors "
            f"or `(height, width, channels)` for channels-last images, with "
            f"positive integers; received {name}={data_shape!r}."
        )
    return tuple(int(d) for d in shape)


def conv_num_stages(data_shape, num_stages=None):
    """How many stride-2 stages a conv network on `data_shape` uses.

    `None` picks the most halvings (at most 4) that keep height and width
    integers of at least 4. An explicit count must divide both sides.
    """
    height, width = data_shape[0], data_shape[1]
    if num_stages is None:
        stages = 0
        while (
            stages < _MAX_AUTO_STAGES
            and height % 2 ** (stages + 1) == 0
            and width % 2 ** (stages + 1) == 0
            and min(height, width) // 2 ** (stages + 1) >= _MIN_FEATURE_SIZE
        ):
            stages += 1
        return stages
    if (
        not isinstance(num_stages, numbers.Integral)
        or isinstance(num_stages, bool)
        or num_stages < 0
    ):
        raise ValueError(
            "`num_stages` must be None or a non-negative integer; received "
            f"num_stages={num_stages!r}."
        )
    factor = 2**num_stages
    if height % factor or width % factor:
        raise ValueError(
            f"`data_shape` {tuple(data_shape)} does not fit num_stages="
            f"{num_stages}: height and width must be divisible by the total "
            f"stride 2**{num_stages} = {factor}. Pick a smaller num_stages, "
            "or None to choose automatically."
        )
    return int(num_stages)


def check_nonnegative(value, name):
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a finite number >= 0; received {name}={value!r}."
        )
    return float(value)


def offset_seed(seed, offset):
    """`seed + offset` modulo 2**31 (the seeds every backend accepts), or
    None for an unseeded layer."""
    return None if seed is None else (seed + offset) % 2**31


def check_positive_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    return int(value)


def check_hidden_units(hidden_units, name="hidden_units"):
    try:
        units = tuple(hidden_units)
    except TypeError:
        units = None
    if not units or not all(
        isinstance(u, numbers.Integral) and not isinstance(u, bool) and u > 0
        for u in units
    ):
        raise ValueError(
            f"`{name}` must be a non-empty list of positive integers (one "
            f"per hidden layer); received {name}={hidden_units!r}."
        )
    return tuple(int(u) for u in units)


class _Seeds:
    """Hands out a distinct initializer seed per layer (or None throughout)."""

    def __init__(self, seed):
        self.next_seed = seed

    def kernel(self):
        return keras.initializers.GlorotUniform(seed=self._draw())

    def embedding(self):
        return keras.initializers.RandomUniform(-0.05, 0.05, seed=self._draw())

    def _draw(self):
        if self.next_seed is None:
            return None
        self.next_seed += 1
        # Inside [0, 2**31 - 1], the seeds every backend accepts.
        return (self.next_seed - 1) % 2**31


def _maybe_sn(layer, spectral_norm):
    return SpectralNorm(layer) if spectral_norm else layer


def _latent_input(latent_dim, num_classes, embedding_dim, seeds):
    """Inputs of a generator, and `z` with the label embedding appended."""
    z = keras.Input((latent_dim,), name="z")
    if num_classes is None:
        return z, z
    labels = keras.Input((), dtype="int32", name="labels")
    embedded = layers.Embedding(
        num_classes, embedding_dim, embeddings_initializer=seeds.embedding(),
        name="label_embedding",
    )(labels)
    return [z, labels], layers.Concatenate(axis=-1)([z, embedded])


def _head(inputs, features, output_units, num_classes, spectral_norm, seeds):
    """Linear logits, plus the projection term when class-conditional."""
    outputs = _maybe_sn(
        layers.Dense(output_units, kernel_initializer=seeds.kernel(), name="output"),
        spectral_norm,
    )(features)
    if num_classes is None:
        return outputs
    x, labels = inputs
    embedded = _maybe_sn(
        layers.Embedding(
            num_classes, features.shape[-1],
            embeddings_initializer=seeds.embedding(), name="projection",
        ),
        spectral_norm,
    )(labels)
    projection = layers.Dot(axes=-1)([embedded, features])
    return layers.Add(name="add_projection")([outputs, projection])


def mlp_generator(
    latent_dim, data_shape, hidden_units=(128, 128, 128), *, num_classes=None,
    embedding_dim=32, output_activation=None, batch_norm=False, seed=None,
    name="generator",
):
    """MLP from `z` (and labels) to a vector of shape `data_shape`, ReLU."""
    seeds = _Seeds(seed)
    inputs, h = _latent_input(latent_dim, num_classes, embedding_dim, seeds)
    for i, units in enumerate(check_hidden_units(hidden_units)):
        h = layers.Dense(units, kernel_initializer=seeds.kernel(), name=f"dense_{i}")(h)
        if batch_norm:
            h = layers.BatchNormalization(axis=-1, name=f"bn_{i}")(h)
        h = layers.ReLU(name=f"relu_{i}")(h)
    outputs = layers.Dense(
        data_shape[0], activation=output_activation,
        kernel_initializer=seeds.kernel(), name="output",
    )(h)
    return keras.Model(inputs, outputs, name=name)


def mlp_discriminator(
    data_shape, hidden_units=(128, 128, 128), *, output_units=1,
    num_classes=None, spectral_norm=False, seed=None, name="discriminator",
):
    """MLP from a vector (and labels) to `output_units` logits, LeakyReLU."""
    seeds = _Seeds(seed)
    x = keras.Input(tuple(data_shape), name="x")
    inputs = x if num_classes is None else [x, keras.Input((), dtype="int32", name="labels")]
    h = x
    for i, units in enumerate(check_hidden_units(hidden_units)):
        h = _maybe_sn(
            layers.Dense(units, kernel_initializer=seeds.kernel(), name=f"dense_{i}"),
            spectral_norm,
        )(h)
        h = layers.LeakyReLU(0.2, name=f"leaky_relu_{i}")(h)
    outputs = _head(inputs, h, output_units, num_classes, spectral_norm, seeds)
    return keras.Model(inputs, outputs, name=name)


def dcgan_generator(
    latent_dim, data_shape, filters=64, num_stages=None, *, num_classes=None,
    embedding_dim=32, output_activation="tanh", seed=None, name="generator",
):
    """DCGAN generator: dense to a small map, then stride-2 transposed convs.

    The first map has `filters * 2**(num_stages - 1)` channels and each
    stage halves them, as in DCGAN; `tanh` matches images in [-1, 1].
    """
    height, width, channels = data_shape
    stages = conv_num_stages(data_shape, num_stages)
    seeds = _Seeds(seed)
    inputs, h = _latent_input(latent_dim, num_classes, embedding_dim, seeds)
    start = (height // 2**stages, width // 2**stages, filters * 2 ** max(stages - 1, 0))
    h = layers.Dense(
        start[0] * start[1] * start[2], use_bias=False,
        kernel_initializer=seeds.kernel(), name="project",
    )(h)
    h = layers.Reshape(start, name="reshape")(h)
    h = layers.BatchNormalization(axis=-1, name="bn_project")(h)
    h = layers.ReLU(name="relu_project")(h)
    for i in range(stages):
        h = layers.Conv2DTranspose(
            filters * 2 ** max(stages - 2 - i, 0), 4, strides=2, padding="same",
            use_bias=False, data_format=CHANNELS_LAST,
            kernel_initializer=seeds.kernel(), name=f"deconv_{i}",
        )(h)
        h = layers.BatchNormalization(axis=-1, name=f"bn_{i}")(h)
        h = layers.ReLU(name=f"relu_{i}")(h)
    # float32 under a mixed-precision policy too: samples are float32
    # images, and PyTorch's CPU float16 convolution has no backward pass for
    # one output channel ("slow_conv2d: grad_weight must be contiguous").
    outputs = layers.Conv2D(
        channels, 3, padding="same", activation=output_activation,
        data_format=CHANNELS_LAST, kernel_initializer=seeds.kernel(), name="output",
        dtype="float32",
    )(h)
    return keras.Model(inputs, outputs, name=name)


def dcgan_discriminator(
    data_shape, filters=64, num_stages=None, *, output_units=1,
    num_classes=None, spectral_norm=False, seed=None, name="discriminator",
):
    """DCGAN discriminator: stride-2 convs with LeakyReLU, then a dense head.

    No batch normalization: gradient penalties (WGAN-GP, R1) are defined per
    example, and batch statistics would couple the examples of a batch.
    """
    stages = conv_num_stages(data_shape, num_stages)
    seeds = _Seeds(seed)
    x = keras.Input(tuple(data_shape), name="x")
    inputs = x if num_classes is None else [x, keras.Input((), dtype="int32", name="labels")]
    h = _maybe_sn(
        layers.Conv2D(
            filters, 3, padding="same", data_format=CHANNELS_LAST,
            kernel_initializer=seeds.kernel(), name="conv_in",
        ),
        spectral_norm,
    )(x)
    h = layers.LeakyReLU(0.2, name="leaky_relu_in")(h)
    for i in range(stages):
        h = _maybe_sn(
            layers.Conv2D(
                filters * 2 ** min(i + 1, 3), 4, strides=2, padding="same",
                data_format=CHANNELS_LAST, kernel_initializer=seeds.kernel(),
                name=f"conv_{i}",
            ),
            spectral_norm,
        )(h)
        h = layers.LeakyReLU(0.2, name=f"leaky_relu_{i}")(h)
    h = layers.Flatten(data_format=CHANNELS_LAST, name="flatten")(h)
    outputs = _head(inputs, h, output_units, num_classes, spectral_norm, seeds)
    return keras.Model(inputs, outputs, name=name)


def default_generator(data_shape, latent_dim, *, hidden_units=(128, 128, 128),
                      filters=64, num_stages=None, **kwargs):
    """`dcgan_generator` for images, `mlp_generator` for vectors."""
    data_shape = check_data_shape(data_shape)
    if len(data_shape) == 3:
        return dcgan_generator(latent_dim, data_shape, filters, num_stages, **kwargs)
    return mlp_generator(latent_dim, data_shape, hidden_units, **kwargs)


def default_discriminator(data_shape, *, hidden_units=(128, 128, 128), filters=64,
                          num_stages=None, **kwargs):
    """`dcgan_discriminator` for images, `mlp_discriminator` for vectors."""
    data_shape = check_data_shape(data_shape)
    if len(data_shape) == 3:
        return dcgan_discriminator(data_shape, filters, num_stages, **kwargs)
    return mlp_discriminator(data_shape, hidden_units, **kwargs)

