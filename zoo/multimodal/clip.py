"""`CLIP`: an image encoder and a text encoder aligned by a symmetric
contrastive loss (Radford et al., 2021)."""

import math

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel, validators
from zoo.multimodal.text_encoder import TextEncoder, _positive_int


def _to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


@keras.saving.register_keras_serializable(package="zoo")
class CLIP(GenerativeModel):
    """Contrastive image-text model: images and captions in one embedding
    space, an image close to the captions that describe it.

    An image encoder (a small conv net) and a `TextEncoder` (mean-pooled,
    then a linear projection) each map to `embed_dim` unit vectors. For a
    batch of `n` pairs the logits are `s * images @ texts.T` with a learned
    scale `s = exp(logit_scale)`, and the loss is the symmetric
    cross-entropy of CLIP: the mean of the image-to-text and text-to-image
    cross-entropies whose targets are the diagonal. The scale starts at
    `1 / 0.07` and is capped at `max_logit_scale` (100, as CLIP clips it).

    Train with `fit` on a dict `{"images": (n, *image_shape) in [-1, 1],
    "token_ids": ids}`: `ids` from `tokenize`, `(n, context_length)` (one
    caption per image) or `(n, k, context_length)` (k captions per image:
    each step draws one per image, from the model's seed generator). The
    logs are `loss`, `logit_scale` (`s`) and `batch_accuracy` (the share
    of images whose own caption has the highest logit in the batch).

    Then `encode_image`, `encode_text`, `similarity`, zero-shot
    classification from prompts (`zero_shot_classify`) and retrieval
    (`retrieve_images`, `retrieve_texts`), all on NumPy arrays.

    Args:
        tokenizer: a `WordTokenizer` or its vocabulary, a list of words
            (`zoo.data.caption_vocabulary()` for the captioned digits).
        image_shape: `(height, width, channels)` of the images.
        embed_dim: the shared embedding width.
        context_length, text_hidden_dim, text_num_layers, text_num_heads:
            the `TextEncoder`'s `context_length`, `hidden_dim`,
            `num_layers`, `num_heads`.
        image_filters: the conv net's width (filters of its first layer).
        logit_scale_init: the initial `s`.
        max_logit_scale: the cap on `s`.
        seed: seeds the initial weights and the caption draws.

    Example:

    ```python
    from zoo.data import caption_vocabulary, captioned_digits
    from zoo.multimodal import CLIP

    data = captioned_digits("train", seed=0)
    clip = CLIP(caption_vocabulary(), embed_dim=16, text_hidden_dim=16,
                text_num_layers=1, text_num_heads=2, image_filters=8, seed=0)
    clip.compile()
    clip.fit({"images": data.images[:256], "token_ids": clip.tokenize(data.captions[:256])},
             batch_size=64, epochs=1, verbose=0)
    prompts = [f"a photo of the digit {w}" for w in ("zero", "one", "two", "three",
               "four", "five", "six", "seven", "eight", "nine")]
    probabilities = clip.zero_shot_classify(data.images[:8], prompts)   # (8, 10)
    best = clip.retrieve_images(["a thick seven"], data.images[:100], k=5)  # (1, 5)
    ```
    """

    data_range = (-1.0, 1.0)

    def __init__(
        self,
        tokenizer,
        image_shape=(8, 8, 1),
        embed_dim=64,
        *,
        context_length=16,
        text_hidden_dim=64,
        text_num_layers=2,
        text_num_heads=4,
        image_filters=32,
        logit_scale_init=1 / 0.07,
        max_logit_scale=100.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        image_shape = tuple(image_shape) if isinstance(image_shape, (list, tuple)) else None
        if image_shape is None or len(image_shape) != 3 or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
            for d in image_shape
        ):
            raise ValueError(
                "`image_shape` must be (height, width, channels) of positive integers; "
                f"received {image_shape!r}."
            )
        self.image_shape = tuple(int(d) for d in image_shape)
        self.embed_dim = _positive_int(embed_dim, "embed_dim")
        self.image_filters = _positive_int(image_filters, "image_filters")
        if not (isinstance(max_logit_scale, (int, float)) and max_logit_scale > 0):
            raise ValueError(f"`max_logit_scale` must be > 0; received {max_logit_scale!r}.")
        if not (isinstance(logit_scale_init, (int, float))
                and 0 < logit_scale_init <= max_logit_scale):
            raise ValueError(
                "`logit_scale_init` must be in (0, max_logit_scale]; received "
                f"logit_scale_init={logit_scale_init!r}, max_logit_scale={max_logit_scale!r}."
            )
        self.logit_scale_init = float(logit_scale_init)
        self.max_logit_scale = float(max_logit_scale)
        self.text_encoder = TextEncoder(
            tokenizer, context_length=context_length, hidden_dim=text_hidden_dim,
            num_layers=text_num_layers, num_heads=text_num_heads,
            seed=validators.derive_seed(self.seed, 1000), name="text_encoder",
        )
        self.tokenizer = self.text_encoder.tokenizer
        self.text_projection = keras.layers.Dense(
            self.embed_dim, use_bias=False, name="text_projection",
            kernel_initializer=keras.initializers.GlorotUniform(
                seed=validators.derive_seed(self.seed, 2000)),
        )
        self.text_projection.build((None, self.text_encoder.hidden_dim))
        self.image_encoder = self._default_image_encoder()
        # CLIP learns log(s); the cap is applied where s is used.
        self.logit_scale = self.add_weight(
            shape=(), name="logit_scale",
            initializer=keras.initializers.Constant(math.log(self.logit_scale_init)),
        )
        # The in-batch accuracy of the last step, carried out of the loss
        # closure (on JAX its tensors cannot leave it) through a variable.
        self.last_accuracy = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="last_accuracy"
        )
        self._mark_built()

    def _default_image_encoder(self):
        f = self.image_filters

        def conv(filters, strides, offset):
            return keras.layers.Conv2D(
                filters, 3, strides=strides, padding="same", activation="gelu",
                data_format="channels_last",
                kernel_initializer=keras.initializers.HeUniform(
                    seed=validators.derive_seed(self.seed, offset)),
            )

        return keras.Sequential([
            keras.Input(self.image_shape),
            conv(f, 1, 1), conv(2 * f, 2, 2), conv(2 * f, 1, 3), conv(4 * f, 2, 4),
            keras.layers.GlobalAveragePooling2D(data_format="channels_last"),
            keras.layers.Dense(4 * f, activation="gelu", kernel_initializer=(
                keras.initializers.GlorotUniform(seed=validators.derive_seed(self.seed, 5)))),
            keras.layers.Dense(self.embed_dim, kernel_initializer=(
                keras.initializers.GlorotUniform(seed=validators.derive_seed(self.seed, 6)))),
        ], name="image_encoder")

    # ------------------------------------------------------------------
    # Tensors.

    @property
    def context_length(self):
        return self.text_encoder.context_length

    def _image_embeddings(self, images, training=False):
        z = ops.cast(self.image_encoder(images, training=training), "float32")
        return z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-12)

    def _text_embeddings(self, token_ids, training=False):
        mask = ops.not_equal(token_ids, self.tokenizer.pad_id)
        tokens = self.text_encoder(token_ids, padding_mask=mask, training=training)
        z = ops.cast(self.text_projection(self.text_encoder.pool(tokens, mask)), "float32")
        return z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-12)

    def scale(self):
        """`s`, the logit scale in use: `exp(logit_scale)` capped."""
        return ops.exp(ops.minimum(ops.cast(self.logit_scale, "float32"),
                                   math.log(self.max_logit_scale)))

    @staticmethod
    def contrastive_loss(image_embeddings, text_embeddings, scale, sample_weight=None):
        """Per-pair symmetric cross-entropy of a batch of `n` matching pairs:
        `(CE(logits[i], i) + CE(logits[:, i], i)) / 2` with `logits = scale *
        images @ texts.T`, averaged over the batch (weighted as Keras losses
        are). Also returns the logits."""
        logits = scale * ops.matmul(image_embeddings, ops.transpose(text_embeddings))
        targets = ops.arange(ops.shape(logits)[0])
        image_to_text = keras.losses.sparse_categorical_crossentropy(
            targets, logits, from_logits=True)
        text_to_image = keras.losses.sparse_categorical_crossentropy(
            targets, ops.transpose(logits), from_logits=True)
        per_pair = 0.5 * (image_to_text + text_to_image)
        if sample_weight is not None:
            per_pair = per_pair * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        return ops.mean(per_pair), logits

    def _one_caption(self, token_ids):
        token_ids = ops.cast(token_ids, "int32")
        if len(token_ids.shape) == 2:
            return token_ids
        # (batch, k, context): one of the k captions per image, drawn anew.
        batch, k = ops.shape(token_ids)[0], token_ids.shape[1]
        pick = keras.random.randint((batch,), 0, k, seed=self.seed_generator)
        chosen = ops.take_along_axis(token_ids, ops.reshape(pick, (-1, 1, 1)), axis=1)
        return chosen[:, 0]

    # ------------------------------------------------------------------
    # Training.

    def log_names(self):
        return ("loss", "logit_scale", "batch_accuracy")

    def log_direction(self, name):
        return "up" if name == "batch_accuracy" else "down"

    def validate_data(self, x):
        if not isinstance(x, dict) or set(x) != {"images", "token_ids"}:
            raise ValueError(
                "CLIP trains on a dict {'images': images, 'token_ids': ids} (ids from "
                f"`clip.tokenize(captions)`); received {type(x).__name__}"
                f"{' with keys ' + str(sorted(x)) if isinstance(x, dict) else ''}."
            )
        images, ids = x["images"], x["token_ids"]
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"CLIP expects 'images' of shape (batch, {', '.join(map(str, self.image_shape))})"
                f"; received {tuple(images.shape)}."
            )
        if len(ids.shape) not in (2, 3) or ids.shape[-1] != self.context_length:
            raise ValueError(
                "CLIP expects 'token_ids' of shape (batch, context_length) or (batch, "
                f"captions, context_length) with context_length={self.context_length}; "
                f"received {tuple(ids.shape)}."
            )
        if isinstance(images, np.ndarray):
            validators.check_data_range(images, self.data_range, "CLIP", "images")
        if isinstance(ids, np.ndarray):
            if ids.dtype.kind not in "iu" or (ids.size and (
                    ids.min() < 0 or ids.max() >= self.tokenizer.vocab_size)):
                raise ValueError(
                    f"'token_ids' must be integer ids in [0, {self.tokenizer.vocab_size}); "
                    f"received dtype {ids.dtype}, values {ids.min()}..{ids.max()}."
                )
            if len(images) != len(ids):
                raise ValueError(
                    f"'images' and 'token_ids' must have one row per pair; received "
                    f"{len(images)} images and {len(ids)} rows of token ids."
                )

    def _step(self, x, sample_weight, training):
        images = x["images"]
        ids = self._one_caption(x["token_ids"])
        loss, logits = self.contrastive_loss(
            self._image_embeddings(images, training), self._text_embeddings(ids, training),
            self.scale(), sample_weight,
        )
        hits = ops.equal(ops.argmax(logits, axis=1), ops.arange(ops.shape(logits)[0]))
        return loss, ops.mean(ops.cast(hits, "float32"))

    def train_step_logic(self, x, y=None, sample_weight=None):
        def loss_fn():
            loss, accuracy = self._step(x, sample_weight, True)
            self.last_accuracy.assign(ops.stop_gradient(accuracy))
            return loss

        loss = self.minimize("model", loss_fn)
        return {"loss": loss, "logit_scale": self.scale(),
                "batch_accuracy": ops.convert_to_tensor(self.last_accuracy)}

    def test_step_logic(self, x, y=None, sample_weight=None):
        loss, accuracy = self._step(x, sample_weight, False)
        return {"loss": loss, "logit_scale": self.scale(), "batch_accuracy": accuracy}

    # ------------------------------------------------------------------
    # Eager methods on NumPy arrays.

    def tokenize(self, prompts):
        """Token ids of an array of prompts of any shape: `(*shape,
        context_length)` int32 (see `TextEncoder.tokenize` for the errors
        and the truncation warning)."""
        array = np.asarray(prompts, dtype=object) if not isinstance(prompts, str) else None
        if array is None or array.size == 0 or array.ndim == 0:
            return self.text_encoder.tokenize(prompts)[0]  # its error
        ids, _ = self.text_encoder.tokenize([str(p) for p in array.ravel()])
        return ids.reshape(*array.shape, self.context_length)

    def _run(self, name, fn, array, batch_size):
        cache = self.__dict__.setdefault("_zoo_compiled", {})
        if name not in cache:
            call = self.compile_function(fn)
            cache[name] = lambda a: _to_numpy(call(ops.convert_to_tensor(a), seed=0))
        batch_size = _positive_int(batch_size, "batch_size")
        out = []
        for start in range(0, len(array), batch_size):
            chunk = array[start : start + batch_size]
            pad = min(batch_size, len(array)) - len(chunk)
            if pad:  # one shape for every chunk: one compilation
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            out.append(cache[name](chunk)[: len(chunk) - pad])
        return np.concatenate(out)

    def encode_image(self, images, batch_size=256):
        """Unit-norm embeddings `(n, embed_dim)` of images in [-1, 1]."""
        images = np.asarray(_to_numpy(images), dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape or not len(images):
            raise ValueError(
                f"`images` must have shape (n >= 1, {', '.join(map(str, self.image_shape))}); "
                f"received {images.shape}."
            )
        validators.check_data_range(images, self.data_range, "CLIP", "images")
        return self._run("image", self._image_embeddings, images, batch_size)

    def encode_text(self, prompts, batch_size=256):
        """Unit-norm embeddings `(n, embed_dim)` of a list of prompts (or of
        token ids `(n, context_length)`)."""
        if isinstance(prompts, np.ndarray) and prompts.dtype.kind in "iu":
            ids = prompts
            if ids.ndim != 2 or ids.shape[1] != self.context_length or not len(ids):
                raise ValueError(
                    f"Token ids must have shape (n >= 1, {self.context_length}); "
                    f"received {ids.shape}."
                )
        else:
            ids, _ = self.text_encoder.tokenize(prompts)
        return self._run("text", self._text_embeddings, ids.astype(np.int32), batch_size)

    def similarity(self, images, prompts):
        """Cosine similarities `(len(images), len(prompts))`."""
        return self.encode_image(images) @ self.encode_text(prompts).T

    def zero_shot_classify(self, images, class_prompts):
        """Class probabilities `(n, num_classes)` of images from prompts:
        the softmax over classes of `s * cos(image, prompt)`.

        `class_prompts`: one prompt per class ("a photo of the digit
        seven"), or per class a list of prompts whose embeddings are
        averaged (CLIP's prompt ensembling). The predicted class is the
        `argmax` along the last axis.
        """
        if isinstance(class_prompts, str) or not isinstance(class_prompts, (list, tuple)) \
                or not class_prompts:
            raise ValueError(
                "`class_prompts` must be a non-empty list, one prompt (or list of "
                f"prompts) per class; received {class_prompts!r:.80}."
            )
        per_class = [[p] if isinstance(p, str) else list(p) for p in class_prompts]
        if any(not group for group in per_class):
            raise ValueError("`class_prompts` holds an empty list of prompts for a class.")
        flat = self.encode_text([p for group in per_class for p in group])
        ends = np.cumsum([len(g) for g in per_class])
        classes = np.stack([flat[e - len(g) : e].mean(0) for g, e in zip(per_class, ends)])
        classes /= np.maximum(np.linalg.norm(classes, axis=1, keepdims=True), 1e-12)
        logits = float(_to_numpy(self.scale())) * (self.encode_image(images) @ classes.T)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    @staticmethod
    def _top_k(scores, k):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (
                1 <= k <= scores.shape[1]):
            raise ValueError(f"`k` must be an integer in [1, {scores.shape[1]}]; received {k!r}.")
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]

    def retrieve_images(self, prompts, images, k=5):
        """For each prompt, the indices `(len(prompts), k)` of the `k`
        images most similar to it, best first."""
        return self._top_k(self.similarity(images, prompts).T, k)

    def retrieve_texts(self, images, prompts, k=5):
        """For each image, the indices `(len(images), k)` of the `k`
        prompts most similar to it, best first."""
        return self._top_k(self.similarity(images, prompts), k)

    def sample(self, num_samples, seed=None, **kwargs):
        """CLIP draws no samples: it scores images against text. A
        `ValueError` saying so (the zoo's command line and tools call
        `sample` on every model)."""
        raise ValueError(
            "CLIP is not a generator: it embeds images and text (encode_image, "
            "encode_text) to classify, retrieve and score them; it has no samples. "
            "To make images from text, use a text-conditioned diffusion model."
        )

    # ------------------------------------------------------------------
    # Config.

    def get_config(self):
        config = super().get_config()
        config.update(
            tokenizer=keras.saving.serialize_keras_object(self.tokenizer),
            image_shape=list(self.image_shape),
            embed_dim=self.embed_dim,
            context_length=self.context_length,
            text_hidden_dim=self.text_encoder.hidden_dim,
            text_num_layers=self.text_encoder.num_layers,
            text_num_heads=self.text_encoder.num_heads,
            image_filters=self.image_filters,
            logit_scale_init=self.logit_scale_init,
            max_logit_scale=self.max_logit_scale,
            seed=self.seed,
        )
        return config
