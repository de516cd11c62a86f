"""Building blocks shared by the model families."""

from zoo.layers import networks
from zoo.layers.networks import (
    dcgan_discriminator,
    dcgan_generator,
    default_discriminator,
    default_generator,
    mlp_discriminator,
    mlp_generator,
)
from zoo.layers.spectral_norm import SpectralNorm

__all__ = [
    "SpectralNorm",
    "dcgan_discriminator",
    "dcgan_generator",
    "default_discriminator",
    "default_generator",
    "mlp_discriminator",
    "mlp_generator",
    "networks",
]
