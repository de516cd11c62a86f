"""Diffusion models: `DDPM` with DDPM, DDIM and DPM-Solver++ samplers."""

from zoo.diffusion.ddpm import DDPM
from zoo.diffusion.samplers import SAMPLERS
from zoo.diffusion.schedules import SCHEDULES, alphas_cumprod

__all__ = ["DDPM", "SAMPLERS", "SCHEDULES", "alphas_cumprod"]
