"""The VAE family: `VAE`, `ConditionalVAE` and `VQVAE`."""

from zoo.vae.conditional_vae import ConditionalVAE
from zoo.vae.vae import VAE
from zoo.vae.vqvae import VQVAE

__all__ = ["VAE", "ConditionalVAE", "VQVAE"]
