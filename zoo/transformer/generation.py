"""Decoding for `GPT.generate`: the cached, compiled loop over new tokens,
greedy or sampled (temperature, top-k, top-p), with optional stop tokens."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import compile_loop, compiles_steps


def _check_int(value, name, minimum, maximum=None):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"`{name}` must be an integer {bounds}; received {name}={value!r}.")
    return int(value)


def _check_float(value, name, low, high, low_open=False, high_open=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be a number in {interval}; received {name}={value!r}.")
    return float(value)


def check_stop_token_ids(stop_token_ids, vocab_size):
    """`stop_token_ids` as a sorted tuple of distinct ints in the
    vocabulary, or None; a clear error for anything else."""
    if stop_token_ids is None:
        return None
    if isinstance(stop_token_ids, numbers.Integral) and not isinstance(stop_token_ids, bool):
        stop_token_ids = (stop_token_ids,)
    values = stop_token_ids.tolist() if isinstance(stop_token_ids, np.ndarray) else stop_token_ids
    if not isinstance(values, (list, tuple)) or not values or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool)
        and 0 <= v < vocab_size for v in values
    ):
        raise ValueError(
            "`stop_token_ids` must be None, a token id or a non-empty sequence of token "
            f"ids in [0, {vocab_size - 1}]; received stop_token_ids={stop_token_ids!r}."
        )
    return tuple(sorted({int(v) for v in values}))


def filter_logits(logits, top_k=None, top_p=None):
    """`logits` with every token outside the top-k and top-p sets at -inf.

    `top_k` keeps the k largest logits; `top_p` (nucleus) then keeps the
    smallest set of most probable tokens whose probability reaches
    `top_p` (the top token always). Ties at a threshold are all kept.
    `logits` is a tensor `(..., vocab_size)`; `top_p` may be a tensor.
    """
    neg_inf = ops.convert_to_tensor(float("-inf"), logits.dtype)
    if top_k is not None:
        kth = ops.top_k(logits, top_k)[0][..., -1:]
        logits = ops.where(logits >= kth, logits, neg_inf)
    if top_p is not None:
        vocab_size = logits.shape[-1]
        descending = ops.top_k(logits, vocab_size)[0]
        probabilities = ops.softmax(descending, axis=-1)
        mass_before = ops.cumsum(probabilities, axis=-1) - probabilities
        keep = mass_before < ops.cast(top_p, logits.dtype)
        threshold = ops.amin(
            ops.where(keep, descending, float("inf")), axis=-1, keepdims=True
        )
        logits = ops.where(logits >= threshold, logits, neg_inf)
    return logits


def _next_token(logits, uniform, greedy, top_k, use_top_p, temperature, top_p, vocab_size):
    if greedy:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")
    logits = filter_logits(logits / temperature, top_k, top_p if use_top_p else None)
    # Inverse-CDF sampling from one uniform per row, on unnormalized
    # weights: filtered tokens weigh exactly 0 and can never be drawn.
    weights = ops.exp(logits - ops.amax(logits, axis=-1, keepdims=True))
    cumulative = ops.cumsum(weights, axis=-1)
    threshold = uniform[:, None] * cumulative[:, -1:]
    token = ops.sum(ops.cast(cumulative <= threshold, "int32"), axis=-1)
    return ops.minimum(token, vocab_size - 1)


def decoder(model, batch, first, total, use_cache, greedy, top_k, use_top_p, return_logits,
            stop_token_ids, jit_compile, compile_steps):
    """The compiled loop for one static setting: fills positions
    `first..total-1` of a `(batch, total)` token buffer."""
    # Every shape is in the key, so no compiled function ever sees two
    # shapes (TensorFlow would relax them to unknown ones).
    key = (batch, first, total, use_cache, greedy, top_k, use_top_p, return_logits,
           stop_token_ids, jit_compile, compile_steps)
    if key in model._decoders:
        return model._decoders[key]
    steps = total - first
    vocab_size = model.vocab_size

    def step(i, state):
        # One token, with every tensor it reads in `state` and every
        # shape static, so that `compile_loop` compiles it once (the
        # loop index is a tensor there, not a constant).
        buffer, caches, all_logits, prompt_lengths, temperature, top_p, uniforms, done = state
        if use_cache:
            token = ops.expand_dims(ops.take(buffer, i, axis=1), 1)
            logits, _, caches = model._forward(token, caches=caches, cache_index=i)
            logits = logits[:, 0]
        else:
            # The whole buffer each step: causal attention keeps the
            # unfilled positions after i from touching position i.
            logits, _, _ = model._forward(buffer)
            logits = ops.take(logits, i, axis=1)
        # `logits` predict position i + 1.
        position = i + 1
        uniform = None if greedy else ops.take(uniforms, position - first, axis=0)
        sampled = _next_token(
            logits, uniform, greedy, top_k, use_top_p, temperature, top_p, vocab_size
        )
        # Writes by masks and reads by `take`: static shapes at any index.
        at = ops.arange(0, total, dtype="int32")[None, :] == position
        given = ops.take(buffer, position, axis=1)
        generated = position >= prompt_lengths
        if stop_token_ids is not None:
            # A row that has stopped is padded with its stop token; the
            # token that stops it is kept.
            sampled = ops.where(done, stop_token_ids[0], sampled)
            hit = ops.any(sampled[:, None] == ops.convert_to_tensor(
                np.array(stop_token_ids, np.int32))[None, :], axis=-1)
            done = ops.logical_or(done, ops.logical_and(generated, hit))
        token = ops.where(generated, sampled, given)
        buffer = ops.where(at, token[:, None], buffer)
        if return_logits:
            all_logits = ops.slice_update(
                all_logits, [0, position - first, 0], logits[:, None]
            )
        return buffer, caches, all_logits, prompt_lengths, temperature, top_p, uniforms, done

    # With the cache a token's step is small and its compiled call's
    # overhead dominates on PyTorch: four tokens per call there.
    loop = compile_loop(model, step, jit_compile=compile_steps, unroll=4 if use_cache else 1)

    def decode(buffer, prompt_lengths, temperature, top_p):
        buffer = ops.convert_to_tensor(buffer, "int32")
        prompt_lengths = ops.convert_to_tensor(prompt_lengths, "int32")
        temperature = ops.convert_to_tensor(temperature, "float32")
        top_p = ops.convert_to_tensor(top_p, "float32")
        # All the noise is drawn before the loop: on JAX a draw from the
        # seed generator inside `fori_loop` repeats in every iteration.
        uniforms = (
            ops.zeros((1, 1), "float32") if greedy
            else keras.random.uniform((steps, batch), seed=model.sampling_seed)
        )
        all_logits = ops.zeros(
            (batch, steps, vocab_size) if return_logits else (1, 1, 1), "float32",
        )
        caches = ()
        if use_cache:
            caches = [block.attention.empty_cache(batch, total) for block in model.blocks]
            if first > 1:
                _, _, caches = model._forward(
                    buffer[:, : first - 1], caches=caches, cache_index=0
                )
        done = ops.zeros((batch,), "bool")
        state = (buffer, caches, all_logits, prompt_lengths, temperature, top_p, uniforms,
                 done)
        state = loop(first - 1, total - 1, state)
        return state[0], state[2]

    model._decoders[key] = model.compile_function(decode, jit_compile=jit_compile)
    return model._decoders[key]


def generate(model, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             seed=None, use_cache=True, return_logits=False, jit_compile="auto",
             stop_token_ids=None):
    """`GPT.generate` (see there)."""
    rows, form = model._prompt_rows(prompt)
    max_new_tokens = _check_int(max_new_tokens, "max_new_tokens", 1)
    temperature = _check_float(temperature, "temperature", 0.0, math.inf, high_open=True)
    if top_k is not None:
        top_k = _check_int(top_k, "top_k", 1, model.vocab_size)
    if top_p is not None:
        top_p = _check_float(top_p, "top_p", 0.0, 1.0, low_open=True)
    if not isinstance(use_cache, bool):
        raise ValueError(f"`use_cache` must be True or False; received {use_cache!r}.")
    stop_token_ids = check_stop_token_ids(stop_token_ids, model.vocab_size)
    compiles_steps(jit_compile, 0)  # checks the setting before the work
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    if lengths.min() < 1:
        raise ValueError("Every prompt needs at least one token; received an empty one.")
    total = int(lengths.max()) + max_new_tokens
    if total > model.max_length:
        raise ValueError(
            f"The prompt ({lengths.max()} tokens) plus max_new_tokens="
            f"{max_new_tokens} makes {total} tokens, more than the model's "
            f"max_length={model.max_length}; shorten the prompt or ask for fewer "
            "tokens."
        )
    buffer = np.zeros((len(rows), total), dtype=np.int32)
    for b, row in enumerate(rows):
        buffer[b, : len(row)] = model._check_tokens(row[None], "prompt")[0]

    greedy = temperature == 0.0
    use_top_p = top_p is not None and top_p < 1.0
    first = int(lengths.min())
    settings = (len(rows), first, total, use_cache, greedy, top_k, use_top_p,
                bool(return_logits), stop_token_ids, jit_compile)
    steps_before = model._decoded_steps.get(settings, 0)
    model._decoded_steps[settings] = steps_before + total - first
    compile_steps = compiles_steps(jit_compile, total - first, steps_before)
    decode = decoder(model, *settings, compile_steps)
    # Temperature and top_p are tensors, not constants of the compiled
    # loop: changing them compiles nothing new.
    tokens, logits = decode(
        buffer, lengths, np.array(max(temperature, 1e-6), np.float32),
        np.array(top_p if use_top_p else 1.0, np.float32), seed=seed,
    )
    tokens = ops.convert_to_numpy(tokens).astype(np.int32)
    out = [tokens[b, : lengths[b] + max_new_tokens] for b in range(len(rows))]
    # A checkpoint's tokenizer leaves its special tokens (Llama's <s>) out
    # of generated text.
    decode_text = getattr(model.tokenizer, "decode_generated", None) or getattr(
        model.tokenizer, "decode", None)
    if form in ("text", "texts"):
        texts = [decode_text(_up_to_stop(t, lengths[b], stop_token_ids))
                 for b, t in enumerate(out)]
        result = texts[0] if form == "text" else texts
    elif form == "single":
        result = out[0]
    elif form == "ragged":
        result = out
    else:
        result = np.stack(out)
    if return_logits:
        return result, ops.convert_to_numpy(logits)
    return result


def _up_to_stop(tokens, prompt_length, stop_token_ids):
    """`tokens` up to and including the first stop token after the prompt."""
    if stop_token_ids is None:
        return tokens
    stops = np.flatnonzero(np.isin(tokens[prompt_length:], stop_token_ids))
    return tokens if not len(stops) else tokens[: prompt_length + stops[0] + 1]
