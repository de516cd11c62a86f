"""The CLIP score: how well images match their prompts under a CLIP model."""

import keras
import numpy as np

__all__ = ["CLIPScore", "clip_score"]


def _cosines(clip, images, prompts):
    if not (hasattr(clip, "encode_image") and hasattr(clip, "encode_text")):
        raise ValueError(
            "`clip` must have `encode_image` and `encode_text` (a zoo.multimodal.CLIP); "
            f"received {type(clip).__name__}."
        )
    if isinstance(prompts, str):
        raise ValueError("`prompts` must be a list of strings, one per image; received a str.")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("`prompts` is empty: pass one prompt per image.")
    images = np.asarray(keras.ops.convert_to_numpy(images))
    if len(images) != len(prompts):
        raise ValueError(
            f"`images` and `prompts` must pair up one to one; received {len(images)} "
            f"images and {len(prompts)} prompts."
        )
    image_embeddings = np.asarray(clip.encode_image(images), np.float64)
    text_embeddings = np.asarray(clip.encode_text(prompts), np.float64)
    # The encoders return unit vectors; normalize again for custom ones.
    image_embeddings /= np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    text_embeddings /= np.linalg.norm(text_embeddings, axis=1, keepdims=True)
    return np.sum(image_embeddings * text_embeddings, axis=1)


def clip_score(clip, images, prompts):
    """`max(100 * mean_i cos(image_i, prompt_i), 0)` under `clip`.

    As torchmetrics' `CLIPScore` computes it: the cosine similarity of each
    image's and its prompt's CLIP embeddings, times 100, averaged over the
    pairs and floored at 0. In [0, 100]; higher means the images match
    their prompts better. Figures are comparable only under the same CLIP.

    Args:
        clip: a trained `zoo.multimodal.CLIP` (anything with `encode_image`
            and `encode_text` returning embeddings).
        images: `(n, *image_shape)` in [-1, 1].
        prompts: `n` strings, the prompt of each image.

    Returns:
        A float.
    """
    return float(max(100.0 * np.mean(_cosines(clip, images, prompts)), 0.0))


@keras.saving.register_keras_serializable(package="zoo")
class CLIPScore(keras.metrics.Metric):
    """The CLIP score, accumulated over batches (see `clip_score`).

    An eager metric on NumPy arrays and strings, like torchmetrics'
    `CLIPScore`: `update_state(images, prompts)` adds a batch of pairs,
    `result()` is `max(100 * mean cosine over every pair so far, 0)`,
    `reset_state()` starts over. Prompts are text, so it is not for
    `compile(metrics=...)`: use it in an evaluation loop or callback.

    Args:
        clip: a trained `zoo.multimodal.CLIP`.
        name: the metric's name.

    Example:

    ```python
    import numpy as np
    from zoo.data import caption_vocabulary, captioned_digits
    from zoo.metrics import CLIPScore
    from zoo.multimodal import CLIP

    data = captioned_digits("test", seed=0)
    clip = CLIP(caption_vocabulary(), embed_dim=8, text_hidden_dim=8, text_num_layers=1,
                text_num_heads=1, image_filters=4, seed=0)
    metric = CLIPScore(clip)
    metric.update_state(data.images[:16], list(data.captions[:16, 0]))
    score = float(metric.result())     # in [0, 100]
    ```
    """

    def __init__(self, clip, name="clip_score", **kwargs):
        super().__init__(name=name, **kwargs)
        if not (hasattr(clip, "encode_image") and hasattr(clip, "encode_text")):
            raise ValueError(
                "`clip` must have `encode_image` and `encode_text` (a zoo.multimodal.CLIP); "
                f"received {type(clip).__name__}."
            )
        self.clip = clip
        # Python floats (float64): the sums of an eager metric, exact over
        # any number of pairs on every backend (JAX keeps no float64).
        self._total = 0.0
        self._count = 0

    def update_state(self, images, prompts):
        cosines = _cosines(self.clip, images, prompts)
        self._total += float(cosines.sum())
        self._count += len(cosines)

    def result(self):
        mean = self._total / self._count if self._count else 0.0
        return keras.ops.convert_to_tensor(max(100.0 * mean, 0.0), "float32")

    def reset_state(self):
        self._total, self._count = 0.0, 0

    def get_config(self):
        # The CLIP model is an argument, not a setting: pass it again when
        # rebuilding the metric.
        return {"name": self.name, "dtype": self.dtype}
