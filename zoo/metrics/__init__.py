"""Evaluation metrics for generative models, the same under every backend.

- `frechet_distance`, `kernel_inception_distance` (KID, with its standard
  error) and `precision_recall` on feature sets;
- `fid(real, fake, features="digits" | "inception")`;
- `mode_coverage` for the 2-D toy densities (from `zoo.data`);
- `bits_per_dim` and `perplexity` unit conversions;
- `clip_score` / `CLIPScore`: how well images match their prompts under a
  `zoo.multimodal.CLIP` (100 x mean cosine, as torchmetrics).
"""

from zoo.data import mode_coverage
from zoo.metrics.clip_score import CLIPScore, clip_score
from zoo.metrics.digits_classifier import digits_features
from zoo.metrics.distances import (
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    precision_recall,
)
from zoo.metrics.fid import fid, inception_features
from zoo.metrics.likelihood import bits_per_dim, perplexity

__all__ = [
    "CLIPScore",
    "clip_score",
    "bits_per_dim",
    "digits_features",
    "fid",
    "frechet_distance",
    "frechet_distance_from_moments",
    "inception_features",
    "kernel_inception_distance",
    "mode_coverage",
    "perplexity",
    "precision_recall",
]
