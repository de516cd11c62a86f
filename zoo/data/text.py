"""Token data for language models: a Markov source with an exactly known entropy
rate, byte-level tokens from any file, and cutting token streams into windows.

All token arrays are int32: embedding lookups take them on every backend,
whereas uint8 indices would be read as boolean masks by torch.
"""

import bisect
import os
import pathlib
import string

import numpy as np

from zoo.data._checks import check_int, check_positive, make_rng

__all__ = [
    "MarkovText",
    "MARKOV_ALPHABET",
    "bytes_from_file",
    "text_from_bytes",
    "windows",
]

# All 95 printable ASCII characters; lowercase and space first, so that
# vocab_size=27 reads as letters and spaces.
MARKOV_ALPHABET = (
    string.ascii_lowercase + " " + string.ascii_uppercase + string.digits + string.punctuation
)
# The stationary distribution is solved densely over vocab_size**order states;
# 4096 states keep that solve under a second and ~256 MB.
_MAX_STATES = 4096


def _entropy_rows(p):
    """Entropy in nats of each row of a probability matrix (0 log 0 = 0)."""
    logs = np.log(np.where(p > 0, p, 1.0))
    return -np.sum(p * logs, axis=-1)


class MarkovText:
    """A random Markov chain over printable characters with a known entropy rate.

    Each context of ``order`` previous tokens has its own next-token
    distribution, drawn from a symmetric Dirichlet with parameter
    ``concentration`` using ``seed``; smaller ``concentration`` gives peakier
    rows and a lower entropy rate. Every transition has positive probability,
    so the chain is irreducible and aperiodic and has one stationary
    distribution, solved exactly. Samples start in that stationary
    distribution, so every position has the same marginal and the expected
    negative log-likelihood per token (after the first ``order``) is exactly
    ``entropy_rate()``: the floor a language model trained on this source can
    reach, in nats per token (divide by ``log(2)`` for bits).

    Args:
        vocab_size: number of tokens, 2..95; token ``i`` prints as
            ``MARKOV_ALPHABET[i]`` (27 gives ``a``-``z`` and space).
        order: how many previous tokens the next one depends on;
            ``vocab_size ** order`` may be at most 4096.
        concentration: Dirichlet parameter of each row, > 0.
        seed: int >= 0 that fixes the chain.

    Example:
        >>> from zoo.data import MarkovText
        >>> source = MarkovText(vocab_size=27, order=1, seed=0)
        >>> round(source.entropy_rate(), 4), round(source.marginal_entropy(), 4)
        (2.3917, 3.2364)
        >>> batch = source.sequences(8, 64, seed=0)  # (8, 64) int32
        >>> text = source.decode(batch[0])
        >>> len(text)
        64
    """

    def __init__(self, vocab_size=27, order=1, concentration=0.3, seed=0):
        self.vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
        if self.vocab_size > len(MARKOV_ALPHABET):
            raise ValueError(
                f"vocab_size must be at most {len(MARKOV_ALPHABET)} (the printable "
                f"ASCII characters); got {self.vocab_size}."
            )
        self.order = check_int(order, "order", minimum=1)
        num_states = self.vocab_size**self.order
        if num_states > _MAX_STATES:
            raise ValueError(
                f"vocab_size ** order must be at most {_MAX_STATES}; got "
                f"{self.vocab_size} ** {self.order} = {num_states}. Lower vocab_size "
                f"or order."
            )
        self.concentration = check_positive(concentration, "concentration")
        self.seed = check_int(seed, "seed", minimum=0)
        self.alphabet = MARKOV_ALPHABET[: self.vocab_size]
        self._index = {ch: i for i, ch in enumerate(self.alphabet)}

        rng = np.random.default_rng(self.seed)
        rows = rng.dirichlet(np.full(self.vocab_size, self.concentration), num_states)
        # Tiny concentrations can underflow entries to exactly 0; a floor at the
        # smallest normal float keeps every transition possible (irreducibility)
        # without changing any probability measurably.
        rows = np.maximum(rows, np.finfo(np.float64).tiny)
        self._rows = rows / rows.sum(axis=1, keepdims=True)
        self._rows.setflags(write=False)
        self._state_probs = self._solve_stationary()
        self._state_probs.setflags(write=False)
        cumulative = np.cumsum(self._rows, axis=1)
        # u in [0, 1) must never fall past the last token through rounding.
        cumulative[:, -1] = 1.0
        self._cumulative = cumulative

    def get_config(self):
        return {
            "vocab_size": self.vocab_size,
            "order": self.order,
            "concentration": self.concentration,
            "seed": self.seed,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"MarkovText({args})"

    # A context (x_1, ..., x_order), oldest first, is the state index
    # sum_i x_i * V ** (order - i); appending token x moves to
    # (state % V ** (order - 1)) * V + x.

    def _solve_stationary(self):
        v, num_states = self.vocab_size, len(self._rows)
        shift = v ** (self.order - 1)
        states = np.arange(num_states)
        successors = (states % shift)[:, None] * v + np.arange(v)[None, :]
        # Solve pi (Q - I) = 0 with sum(pi) = 1 (replacing one redundant equation).
        system = np.zeros((num_states, num_states))
        np.add.at(
            system, (successors, np.broadcast_to(states[:, None], successors.shape)), self._rows
        )
        system[states, states] -= 1.0
        system[-1, :] = 1.0
        rhs = np.zeros(num_states)
        rhs[-1] = 1.0
        pi = np.linalg.solve(system, rhs)
        pi = np.maximum(pi, 0.0)
        return pi / pi.sum()

    @property
    def transitions(self):
        """Next-token probabilities, float64 of shape ``(V,) * order + (V,)`` (read-only).

        ``transitions[a, b]`` (order 1) is P(next = b | current = a).
        """
        return self._rows.reshape((self.vocab_size,) * (self.order + 1))

    def stationary_distribution(self):
        """Stationary probability of each context, float64 of shape ``(V,) * order``.

        For ``order=1`` this is the marginal probability of each token.
        """
        return self._state_probs.reshape((self.vocab_size,) * self.order)

    def entropy_rate(self):
        """Entropy rate in nats per token: ``sum_s pi(s) H(P(. | s))``, exact."""
        return float(self._state_probs @ _entropy_rows(self._rows))

    def marginal_entropy(self):
        """Entropy in nats of one token's stationary marginal: what a model that
        ignores context (a unigram model) can reach at best."""
        marginal = self.stationary_distribution()
        marginal = marginal.reshape(-1, self.vocab_size).sum(axis=0)
        return float(_entropy_rows(marginal))

    def sequences(self, num_sequences, length, seed=None):
        """Draw independent stationary chains, int32 of shape ``(num_sequences, length)``.

        ``sample(n, seed)`` equals ``sequences(1, n, seed)[0]``. For
        next-token training draw ``length = context + 1`` and use
        ``x[:, :-1]`` as inputs and ``x[:, 1:]`` as targets.

        Example:
            >>> from zoo.data import MarkovText
            >>> MarkovText().sequences(4, 16, seed=0).shape
            (4, 16)
        """
        num_sequences = check_int(num_sequences, "num_sequences", minimum=0)
        length = check_int(length, "length", minimum=0)
        rng = make_rng(seed)
        first, uniforms = self._draw(rng, num_sequences, length)
        out = np.empty((num_sequences, length), dtype=np.int32)
        out[:, : first.shape[1]] = first
        if length <= self.order:
            return out
        v, shift = self.vocab_size, self.vocab_size ** (self.order - 1)
        states = first @ (v ** np.arange(self.order - 1, -1, -1))
        for t in range(self.order, length):
            u = uniforms[:, t - self.order]
            # Counting cumulative entries <= u is bisect_right, as in sample().
            token = (self._cumulative[states] <= u[:, None]).sum(axis=1)
            out[:, t] = token
            states = (states % shift) * v + token
        return out

    def sample(self, num_tokens, seed=None):
        """Draw one stationary chain of ``num_tokens`` tokens, int32 ``(num_tokens,)``.

        A plain Python loop, well under a second per million tokens. For
        training batches use ``sequences``, which is vectorised across chains.

        Example:
            >>> from zoo.data import MarkovText
            >>> source = MarkovText()
            >>> tokens = source.sample(100_000, seed=0)
            >>> nll = -source.token_log_probs(tokens)[1:].mean()
            >>> bool(abs(nll - source.entropy_rate()) < 0.02)
            True
        """
        num_tokens = check_int(num_tokens, "num_tokens", minimum=0)
        rng = make_rng(seed)
        first, uniforms = self._draw(rng, 1, num_tokens)
        out = first[0].tolist()
        if num_tokens > self.order:
            v, shift = self.vocab_size, self.vocab_size ** (self.order - 1)
            state = 0
            for token in out:
                state = state * v + token
            rows = self._cumulative.tolist()
            for u in uniforms[0].tolist():
                token = bisect.bisect_right(rows[state], u)
                out.append(token)
                state = (state % shift) * v + token
        return np.asarray(out, dtype=np.int32)

    def _draw(self, rng, n, length):
        """First ``min(order, length)`` tokens of n chains from the stationary
        distribution, and the uniforms that drive the remaining steps."""
        cdf = np.cumsum(self._state_probs)
        states = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)
        digits = np.stack(
            [
                (states // self.vocab_size**p) % self.vocab_size
                for p in range(self.order - 1, -1, -1)
            ],
            axis=1,
        ).astype(np.int32)
        uniforms = rng.random((n, max(length - self.order, 0)))
        return digits[:, : min(self.order, length)], uniforms

    def token_log_probs(self, tokens):
        """Log-probability in nats of each token given the ones before it.

        ``tokens`` is ``(length,)`` or ``(n, length)``; returns float64 of the
        same shape. The first ``order`` positions use the stationary
        distribution's conditionals (the chains start stationary), later ones
        the transition probabilities, so ``-token_log_probs(t)[..., order:]``
        averages to ``entropy_rate()``.
        """
        tokens = self._check_tokens(tokens, "tokens")
        if tokens.shape[-1] == 0:
            return np.zeros(tokens.shape)
        flat = tokens.reshape(-1, tokens.shape[-1]).astype(np.int64)
        n, length = flat.shape
        v, k = self.vocab_size, self.order
        out = np.empty((n, length))
        # Stationary marginals of the first j context tokens, for j = 0..k.
        joint = self.stationary_distribution()
        prefix_probs = [joint.sum(axis=tuple(range(j, k))) for j in range(k + 1)]
        for j in range(min(k, length)):
            num = prefix_probs[j + 1][tuple(flat[:, : j + 1].T)]
            den = prefix_probs[j][tuple(flat[:, :j].T)] if j else 1.0
            out[:, j] = np.log(num) - np.log(den)
        if length > k:
            weights = v ** np.arange(k - 1, -1, -1)
            contexts = np.lib.stride_tricks.sliding_window_view(flat, k, axis=1)[:, :-1]
            states = contexts @ weights
            out[:, k:] = np.log(self._rows[states, flat[:, k:]])
        return out.reshape(tokens.shape)

    def log_prob(self, tokens):
        """Total log-probability in nats of each sequence: a float for a 1-D
        ``tokens``, float64 ``(n,)`` for 2-D."""
        total = self.token_log_probs(tokens).sum(axis=-1)
        return float(total) if np.ndim(total) == 0 else total

    def decode(self, tokens):
        """Tokens to text: a str for 1-D ``tokens``, a list of str for 2-D."""
        tokens = self._check_tokens(tokens, "tokens")
        if tokens.ndim == 1:
            return "".join(self.alphabet[t] for t in tokens.tolist())
        return ["".join(self.alphabet[t] for t in row) for row in tokens.tolist()]

    def encode(self, text):
        """Text to int32 tokens; every character must be in ``alphabet``."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str; got {type(text).__name__}.")
        unknown = sorted(set(text) - set(self._index))
        if unknown:
            raise ValueError(
                f"text holds characters outside this source's alphabet "
                f"{self.alphabet!r}: {''.join(unknown)!r}."
            )
        return np.fromiter((self._index[c] for c in text), dtype=np.int32, count=len(text))

    def _check_tokens(self, tokens, name):
        arr = np.asarray(tokens)
        if arr.size == 0 and arr.ndim in (1, 2):  # [] arrives as float64
            return arr.astype(np.int64)
        if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{name} must be an integer array of shape (length,) or (n, length); "
                f"got dtype {arr.dtype} and shape {arr.shape}."
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"{name} must lie in [0, {self.vocab_size - 1}]; got values from "
                f"{arr.min()} to {arr.max()}."
            )
        return arr


def bytes_from_file(path):
    """Read any file as byte-level tokens (vocabulary 256), int32 of shape ``(size,)``.

    Example:
        >>> import os, tempfile
        >>> from zoo.data import bytes_from_file, text_from_bytes
        >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        ...     _ = f.write("héllo")
        >>> tokens = bytes_from_file(f.name)
        >>> tokens.tolist(), text_from_bytes(tokens)
        ([104, 195, 169, 108, 108, 111], 'héllo')
        >>> os.remove(f.name)
    """
    path = pathlib.Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"bytes_from_file(path=...): no such file: '{path}'.")
    if not path.is_file():
        raise ValueError(f"bytes_from_file(path=...) must name a file; '{path}' is not one.")
    data = path.read_bytes()
    if not data:
        raise ValueError(
            f"bytes_from_file(path=...): '{path}' is empty; it needs at least one byte."
        )
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)


def text_from_bytes(tokens):
    """Byte tokens (0..255) back to text, decoded as UTF-8 with invalid bytes replaced.

    Generated byte sequences may cut a multi-byte character; those bytes show
    as U+FFFD instead of raising.

    Example:
        >>> from zoo.data import text_from_bytes
        >>> text_from_bytes([104, 105, 255])
        'hi\\ufffd'
    """
    arr = np.asarray(tokens)
    if arr.shape == (0,):  # [] arrives as float64; nothing to check
        return ""
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"tokens must be a 1-D integer array; got dtype {arr.dtype} and shape {arr.shape}."
        )
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(
            f"tokens must lie in [0, 255]; got values from {arr.min()} to {arr.max()}."
        )
    return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def windows(tokens, length, stride=None):
    """Cut a 1-D token stream into windows, int32 of shape ``(n, length)``.

    Windows start every ``stride`` tokens (default ``length``: no overlap);
    tokens after the last full window are dropped. For next-token training cut
    windows one longer than the context and split them into inputs ``w[:, :-1]``
    and targets ``w[:, 1:]``.

    Example:
        >>> import numpy as np
        >>> from zoo.data import windows
        >>> windows(np.arange(10), 4)
        array([[0, 1, 2, 3],
               [4, 5, 6, 7]], dtype=int32)
        >>> windows(np.arange(10), 4, stride=3).shape
        (3, 4)
    """
    arr = np.asarray(tokens)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"tokens must be a 1-D integer array; got dtype {arr.dtype} and shape {arr.shape}."
        )
    length = check_int(length, "length", minimum=1)
    stride = length if stride is None else check_int(stride, "stride", minimum=1)
    if len(arr) < length:
        raise ValueError(
            f"windows of length {length} need at least {length} tokens; got {len(arr)}."
        )
    if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
        raise ValueError(
            f"tokens must be non-negative int32 ids; got values from {arr.min()} to {arr.max()}."
        )
    view = np.lib.stride_tricks.sliding_window_view(arr, length)[::stride]
    return np.ascontiguousarray(view, dtype=np.int32)
