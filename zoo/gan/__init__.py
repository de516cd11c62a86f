"""The GAN family: `GAN`, `WGANGP` and `ConditionalGAN`."""

from zoo.gan.conditional_gan import ConditionalGAN
from zoo.gan.gan import GAN
from zoo.gan.wgan_gp import WGANGP

__all__ = ["GAN", "WGANGP", "ConditionalGAN"]
