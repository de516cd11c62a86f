"""Text conditioning of the diffusion models: captions in, text tokens out.

`DiffusionModel` with a `text_encoder` trains on `fit(images, captions)` and
samples with `sample(n, prompts=[...], guidance_scale=...)`. This module
holds what that needs besides the model: turning captions into the one int32
array `fit` feeds (token ids, -1 at padding, so that the padding mask
travels inside the array on every backend), the checks of prompts and of
conditioning arguments, and the learned null condition of classifier-free
guidance.

The null condition ("no caption") is one learned token, `null_text`, in
position 0 with every other position masked out: captions dropped at the
rate `text_dropout` during training are replaced by it, and guidance mixes
the prediction for the prompt with the prediction for it. It does not
depend on the tokenizer, and works the same with a frozen encoder (where
the encoding of an empty prompt, as Stable Diffusion uses, could not
learn).
"""

import contextlib
import numbers

import keras
import numpy as np
from keras import ops

# What a text encoder must offer (`zoo.multimodal.TextEncoder` does).
_ENCODER_ATTRIBUTES = ("tokenize", "context_length", "hidden_dim")


def check_text_encoder(text_encoder, num_classes, data_shape):
    """`text_encoder` if usable for conditioning, else a ValueError."""
    if text_encoder is None:
        return None
    missing = [a for a in _ENCODER_ATTRIBUTES if not hasattr(text_encoder, a)]
    if not isinstance(text_encoder, keras.layers.Layer) or missing:
        raise ValueError(
            "`text_encoder` must be a Keras layer with `tokenize(prompts) -> (ids, mask)`, "
            "`context_length`, `hidden_dim` and `__call__(ids, padding_mask=mask)` "
            "(e.g. `zoo.multimodal.TextEncoder`, or a CLIP's `text_encoder`); received "
            f"{type(text_encoder).__name__}"
            + (f" without {', '.join(missing)}." if missing else ".")
        )
    if num_classes:
        raise ValueError(
            "A model is conditioned on classes (`num_classes`) or on text "
            "(`text_encoder`), not both; received both."
        )
    if len(data_shape) != 3:
        raise ValueError(
            f"Text conditioning needs image data (height, width, channels) and a U-Net or "
            f"DiT denoiser; data_shape={data_shape}."
        )
    return text_encoder


def is_text(values):
    """Whether `values` are captions (strings), not token ids or labels."""
    if isinstance(values, str):
        return True
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "USO" and (values.size == 0 or isinstance(
            values.reshape(-1)[0], str))
    if isinstance(values, (list, tuple)) and values:
        return all(isinstance(v, str) for v in values)
    return False


def packed_token_ids(text_encoder, prompts):
    """Tokenizes `prompts` with the encoder (its errors and truncation
    warnings included) into one int32 array `(n, context_length)`: the token
    ids, -1 at padding."""
    ids, mask = text_encoder.tokenize(prompts)
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    return np.where(mask, ids, -1).astype(np.int32)


def unpack_token_ids(packed):
    """`(ids, mask)` from a packed array, as tensors (id 0 at padding)."""
    packed = ops.cast(packed, "int32")
    mask = ops.greater_equal(packed, 0)
    return ops.maximum(packed, 0), mask


def check_captions(y, context_length, model_name):
    """Checks what `fit` got as packed token ids (after tokenization)."""
    if y is None:
        raise ValueError(
            f"This {model_name} is text-conditional: train it with fit(images, captions), "
            "captions a list (or array) of strings, one per image."
        )
    y = np.asarray(y)
    if y.dtype.kind in "USO":
        raise ValueError(
            "Captions reached the training step as strings: pass them as a list or NumPy "
            "array to `fit` (which tokenizes them), or tokenize them first with "
            "`model.tokenize_captions(captions)` when feeding a generator or a dataset."
        )
    if y.ndim != 2 or y.shape[1] != context_length or y.dtype.kind not in "iu":
        raise ValueError(
            f"Token ids for this {model_name} must be ints of shape (n, {context_length}) "
            f"(`model.tokenize_captions`); received shape {y.shape}, dtype {y.dtype}."
        )
    rows_empty = np.all(y < 0, axis=1)
    if rows_empty.any():
        raise ValueError(
            f"Caption {int(np.argmax(rows_empty))} has no tokens (every position is padding)."
        )


def check_prompts(prompts, num_samples):
    """`prompts` as a list of `num_samples` strings: one string serves every
    sample; a list must hold one per sample."""
    if isinstance(prompts, str):
        return [prompts] * num_samples
    if isinstance(prompts, np.ndarray):
        prompts = prompts.tolist()
    if not isinstance(prompts, (list, tuple)):
        raise ValueError(
            f"`prompts` must be a string or a list of strings; received "
            f"{type(prompts).__name__}."
        )
    if not prompts:
        raise ValueError("`prompts` is empty: pass one prompt per sample, or one string "
                         "for all of them.")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"`prompts` must hold strings; item {bad[0]} is "
                         f"{type(prompts[bad[0]]).__name__} {prompts[bad[0]]!r:.60}.")
    if len(prompts) != num_samples:
        raise ValueError(
            f"`prompts` holds {len(prompts)} prompts for num_samples={num_samples}: give "
            "one prompt per sample, or a single string for all of them."
        )
    return list(prompts)


def check_guidance(guidance_scale):
    if guidance_scale is None:
        return None
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, (numbers.Real, np.floating, np.integer))
        or not np.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise ValueError(
            "`guidance_scale` must be a finite number >= 0 (0: unconditional, 1: plain "
            f"conditional sampling, > 1: guided); received guidance_scale={guidance_scale!r}."
        )
    return float(guidance_scale)


def null_context(null_text, batch, length):
    """The null condition for `batch` examples: `(context, mask)`, the
    learned token in position 0, padding elsewhere."""
    dim = ops.shape(null_text)[-1]
    first = ops.broadcast_to(ops.reshape(null_text, (1, 1, dim)), (batch, 1, dim))
    rest = ops.zeros((batch, length - 1, dim), first.dtype)
    context = ops.concatenate([first, rest], axis=1)
    mask = ops.concatenate(
        [ops.ones((batch, 1), "bool"), ops.zeros((batch, length - 1), "bool")], axis=1)
    return context, mask


class TextConditioning:
    """What `DiffusionModel` does with a `text_encoder`: captions through
    `fit`, the training condition (the encoder runs inside the loss, where
    it trains), and prompts encoded once before the sampling loop. Class
    labels go the same ways for a class-conditional model."""

    def tokenize_captions(self, captions):
        """Captions (a list or 1-D array of strings) as the int32 token ids
        `(n, context_length)` that `fit` trains on (-1 at padding); `fit`
        does this itself for captions given as a list or array. Words
        outside the encoder's vocabulary are a ValueError; captions longer
        than its context are truncated with a warning."""
        self._require_text("tokenize_captions")
        captions = np.asarray(captions) if not isinstance(captions, (list, tuple)) else captions
        if isinstance(captions, np.ndarray):
            if captions.ndim != 1:
                raise ValueError(
                    f"Captions must be one per image, a 1-D list or array; received shape "
                    f"{captions.shape}. With k captions per image, pair each with its "
                    "image: `np.repeat(images, k, axis=0)`, `captions.reshape(-1)`.")
            captions = captions.tolist()
        return packed_token_ids(self.text_encoder, captions)

    def _require_text(self, what):
        if self.text_encoder is None:
            raise ValueError(f"`{what}` needs a text-conditioned model; this "
                             f"{type(self).__name__} has no `text_encoder`.")

    def _with_token_ids(self, y):
        """`y` with captions (strings) tokenized for a text model; captions
        given to any other model are an error."""
        if y is None or not is_text(y):
            return y
        if self.text_encoder is None:
            kind = (f"class-conditional (num_classes={self.num_classes}): pass labels"
                    if self.num_classes else "unconditional: pass no `y`")
            raise ValueError(f"Captions given, but this {type(self).__name__} has no "
                             f"`text_encoder`; it is {kind}.")
        return self.tokenize_captions(y)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`; a text model's captions may be given as `y`, a
        list or 1-D array of strings, one per image (tokenized here)."""
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            kwargs["validation_data"] = (validation[0], self._with_token_ids(validation[1]),
                                         *validation[2:])
        return super().fit(x, self._with_token_ids(y), *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`; captions as for `fit`."""
        return super().evaluate(x, self._with_token_ids(y), *args, **kwargs)

    def _training_condition(self, y, n):
        """What a training step conditions on, drawn outside the loss: the
        labels (some dropped), or for text the token ids and which captions
        are dropped (encoded inside the loss, where the encoder trains)."""
        if self.text_encoder is None:
            return self._training_labels(y, n)
        if y is None:
            raise ValueError(f"This {type(self).__name__} is text-conditional: train it "
                             "with fit(images, captions).")
        drop = None
        if self.text_dropout:
            drop = keras.random.uniform((n,), seed=self.seed_generator) < self.text_dropout
        return ops.cast(y, "int32"), drop

    def _denoiser_inputs(self, x_t, t, condition, training):
        """The denoiser's inputs for a training condition (above)."""
        if self.text_encoder is None:
            return [x_t, t] + ([condition] if self.num_classes else [])
        packed, drop = condition
        context, mask = self._encode_tokens(*unpack_token_ids(packed), training)
        if drop is not None:
            null, null_mask = null_context(self.null_text, ops.shape(x_t)[0],
                                           self.text_encoder.context_length)
            context = ops.where(drop[:, None, None], ops.cast(null, context.dtype), context)
            mask = ops.where(drop[:, None], null_mask, mask)
        return [x_t, t, context, mask]

    def _encode_tokens(self, ids, mask, training=False):
        tokens = self.text_encoder(ids, padding_mask=mask,
                                   training=training and self.train_text_encoder)
        if not self.train_text_encoder:
            tokens = ops.stop_gradient(tokens)
        return ops.cast(tokens, "float32"), mask

    def _sampling_condition(self, labels, prompts, guidance_scale, num_samples, use_ema):
        """`(consts, guided)`: the condition tensors a sampler step reads
        (`(labels,)`, or `(context, mask)` for text, the prompts encoded
        once, before the loop) and whether it guides."""
        if self.text_encoder is None:
            if prompts is not None:
                kind = (f"class-conditional (num_classes={self.num_classes}): pass `labels`"
                        if self.num_classes else "unconditional")
                raise ValueError(f"`prompts` given, but this {type(self).__name__} has no "
                                 f"`text_encoder`; it is {kind}.")
            labels = self._check_labels(labels, guidance_scale, num_samples)
            return (ops.convert_to_tensor(
                labels if labels is not None else np.zeros(num_samples, np.int32), "int32"),
            ), guidance_scale is not None
        if labels is not None:
            raise ValueError(f"This {type(self).__name__} is text-conditional: pass "
                             "`prompts=[...]`, not `labels`.")
        guidance_scale = check_guidance(guidance_scale)
        if prompts is None:
            if guidance_scale is not None:
                raise ValueError("`guidance_scale` needs `prompts` to guide towards.")
            return null_context(self.null_text, num_samples,
                                self.text_encoder.context_length), False
        prompts = check_prompts(prompts, num_samples)
        ids, mask = unpack_token_ids(packed_token_ids(self.text_encoder, prompts))
        context = self.ema_weights() if use_ema else contextlib.nullcontext()
        with context:
            tokens, mask = self._encode_tokens(ids, mask)
        return (tokens, mask), guidance_scale is not None

    def _step_condition(self, consts):
        """What `_guided_prediction` takes, from a step's condition tensors."""
        if self.text_encoder is not None:
            return tuple(consts)
        return consts[0] if self.num_classes else None

