"""Train a character-level GPT on a text file and print samples.

Any UTF-8 text file works; without one, the text is drawn from a synthetic
Markov source (`zoo.data.MarkovText`), whose entropy rate is printed as the
best loss any model can reach on it. The vocabulary is the file's characters
(`CharTokenizer.from_text`), saved with the model.

    KERAS_BACKEND=jax python examples/gpt_text.py
    KERAS_BACKEND=torch python examples/gpt_text.py my_book.txt --epochs 5
    python examples/gpt_text.py notes.txt --save notes.keras --temperature 0.7

Keras prints one line per epoch (`--verbose 1`: the progress bar). On
PyTorch the script uses only the CPU cores other processes leave idle
unless `OMP_NUM_THREADS` is set (`zoo.core.threads.limit_torch_threads`;
see docs/cli.md).
"""

import argparse
import os
import sys

# So that the example runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.data import MarkovText, windows  # noqa: E402
from zoo.transformer import GPT, CharTokenizer  # noqa: E402


def load_text(args):
    if args.path:
        with open(args.path, encoding="utf-8") as f:
            text = f.read()
        # A tenth is held out and must hold a window of length + 1.
        needed = 10 * (args.length + 1) + 16
        if len(text) < needed:
            raise SystemExit(
                f"{args.path} has {len(text)} characters; --length {args.length} "
                f"needs at least {needed} (or pass a smaller --length)."
            )
        return text, None
    source = MarkovText(vocab_size=27, order=1, seed=0)
    text = source.decode(source.sample(args.synthetic_chars, seed=0))
    return text, source.entropy_rate()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", help="a UTF-8 text file (default: synthetic text)")
    parser.add_argument("--length", type=int, default=64, help="context length")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--synthetic-chars", type=int, default=300_000)
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="save the trained model to this .keras file")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras's fit verbosity: 2 one line per epoch (default), "
                        "1 a progress bar, 0 silent")
    args = parser.parse_args()
    if args.save is not None and not args.save.endswith(".keras"):
        parser.error(f"--save must name a .keras file; received {args.save!r}")
    limit_torch_threads()

    text, entropy_rate = load_text(args)
    tokenizer = CharTokenizer.from_text(text)
    tokens = tokenizer.encode(text)
    # Windows one longer than the context: `fit(tokens)` predicts w[:, 1:]
    # from w[:, :-1]. Half-overlapping, the last tenth held out.
    split = int(0.9 * len(tokens))
    train = windows(tokens[:split], args.length + 1, stride=args.length // 2)
    val = windows(tokens[split:], args.length + 1, stride=args.length // 2)
    print(f"{len(text):,} characters, vocabulary of {tokenizer.vocab_size}, "
          f"{len(train)} training and {len(val)} validation windows")

    model = GPT(
        max_length=args.length, num_layers=args.num_layers,
        num_heads=args.num_heads, hidden_dim=args.hidden_dim,
        position_embedding="rotary", tokenizer=tokenizer, seed=args.seed,
    )
    model.compile()
    model.fit(train, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(val,), verbose=args.verbose)
    logs = model.evaluate(val, batch_size=args.batch_size, verbose=0, return_dict=True)
    line = f"validation: {logs['loss']:.4f} nats/char, perplexity {logs['perplexity']:.2f}"
    if entropy_rate is not None:
        line += f" (the source's entropy rate: {entropy_rate:.4f} nats/char)"
    print(line)

    rng = np.random.default_rng(args.seed)
    starts = rng.integers(split, len(text) - 16, size=args.num_samples)
    prompts = [text[s : s + 16] for s in starts]
    samples = model.generate(
        prompts, args.length - 16, temperature=args.temperature, top_k=args.top_k,
        seed=args.seed,
    )
    for prompt, sample in zip(prompts, samples):
        print(f"\n[{prompt}]{sample[len(prompt):]}")
    if args.save:
        model.save(args.save)
        print(f"\nsaved the model to {os.path.abspath(args.save)}")
    else:
        print("\nwrote no files (--save FILE.keras keeps the model)")


if __name__ == "__main__":
    main()
