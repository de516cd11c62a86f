"""Diffusion models: `DDPM` (DDPM, DDIM and DPM-Solver++ samplers) and
`FlowMatching` (rectified flow: Euler, Heun and midpoint samplers), and
`LatentDiffusion` (either, in a frozen autoencoder's latent space)."""

from zoo.diffusion.ddpm import DDPM
from zoo.diffusion.diffusion_model import DiffusionModel
from zoo.diffusion.flow_matching import FlowMatching
from zoo.diffusion.flow_samplers import FLOW_SAMPLERS, TIME_DENSITIES
from zoo.diffusion.latent_diffusion import LatentDiffusion
from zoo.diffusion.samplers import SAMPLERS
from zoo.diffusion.schedules import SCHEDULES, alphas_cumprod

__all__ = ["DDPM", "FLOW_SAMPLERS", "FlowMatching", "LatentDiffusion", "SAMPLERS", "TIME_DENSITIES", "SCHEDULES", "alphas_cumprod"]
