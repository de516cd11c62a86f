"""`GPT.generate` with stop tokens (`stop_token_ids`, KerasHub's name)."""

import numpy as np
import pytest

from zoo.transformer import GPT, CharTokenizer


def _expected(tokens, prompt_length, stops):
    """Each row of `tokens` cut at its first generated stop token and
    padded with the smallest stop id after it."""
    out = tokens.copy()
    for row in out:
        hits = np.flatnonzero(np.isin(row[prompt_length:], stops))
        if len(hits):
            row[prompt_length + hits[0] + 1:] = min(stops)
    return out


def test_generation_stops_at_stop_tokens():
    gpt = GPT(vocab_size=11, max_length=16, num_layers=1, num_heads=2, hidden_dim=8, seed=3)
    prompt = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    free = gpt.generate(prompt, 10, temperature=0)
    # Stop ids that the free run generates in its second new position (so
    # the rows go on after them), and one it may never generate.
    stops = sorted({int(free[0, 4]), int(free[1, 4]), 10})
    stopped = gpt.generate(prompt, 10, temperature=0, stop_token_ids=stops)
    assert stopped.shape == free.shape
    np.testing.assert_array_equal(stopped, _expected(free, 3, stops))
    assert (stopped != free).any()  # something after a stop was replaced


def test_generated_text_ends_at_the_stop_token():
    tokenizer = CharTokenizer.from_text("abcdef.")
    gpt = GPT(max_length=16, num_layers=1, num_heads=2, hidden_dim=8, tokenizer=tokenizer,
              seed=3)
    free = gpt.generate("ab", 8, temperature=0)
    stop = free[3]  # the second new character
    text = gpt.generate("ab", 8, temperature=0,
                        stop_token_ids=int(tokenizer.encode(stop)[0]))
    assert text == free[: free.index(stop, 2) + 1]


@pytest.mark.parametrize("bad", [[], [11], [-1], ["a"], 2.0, True, [[1]]])
def test_bad_stop_token_ids_are_refused(bad):
    gpt = GPT(vocab_size=11, max_length=8, num_layers=1, num_heads=2, hidden_dim=8, seed=0)
    with pytest.raises(ValueError, match="stop_token_ids"):
        gpt.generate(np.array([1, 2]), 2, stop_token_ids=bad)
