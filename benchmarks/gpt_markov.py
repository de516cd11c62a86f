"""GPT on synthetic Markov text: cross-entropy against the entropy rate, and
generation speed with and without the key/value cache.

The source is `zoo.data.MarkovText` (27 characters; order 1 by default,
`--order 2` for a chain that needs attention to the token before), whose
entropy rate H is known exactly: no model can average less than H nats per token on
its text, so `(cross-entropy - H) / H` is how far the model is from the
physical limit. The cross-entropy is measured on held-out sequences, from
position `order` on (earlier positions have less context than the chain
uses, and a higher floor), with the public `GPT.log_prob`. The oracle line
is the source's own cross-entropy on the same sequences: H up to sampling
noise.

Generation: prompts of 16 tokens, 256 new tokens, sampled at temperature 1;
tokens per second = batch * 256 / seconds, compilation excluded (one warm-up
call per setting, reported as `first_call_seconds`, then the best of
`--repeats` with the cache, one timed call without), for batch 1 and 8, with
the cache and without (the whole sequence recomputed at every step).
`--jit-compile` is `GPT.generate`'s: on PyTorch "auto" compiles the steps
with TorchInductor for these 256-token runs (as true does), false runs them
eagerly. On a
small CPU machine run PyTorch with `OMP_NUM_THREADS=1`: its thread pool spins
on ops this small.

Usage (one backend per run):

    KERAS_BACKEND=jax python benchmarks/gpt_markov.py
    KERAS_BACKEND=torch python benchmarks/gpt_markov.py --json torch.json
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/gpt_markov.py \
        --skip-training --jit-compile false       # speed only, eager steps
    python benchmarks/gpt_markov.py --quick   # a smoke run: tiny and short
"""

import argparse
import json
import math
import os
import platform
import time

import _markdown

import keras
import numpy as np

from zoo.data import MarkovText
from zoo.transformer import GPT, CharTokenizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--length", type=int, default=64, help="training sequence length")
    parser.add_argument("--train-tokens", type=float, default=6.2e5,
                        help="training tokens (fresh sequences, one epoch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--test-sequences", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--generation-batches", default="1,8",
                        help="comma-separated batch sizes for the speed test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true",
                        help="only the speed test, on an untrained model of the "
                        "same size (speed does not depend on the weights)")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"],
                        help="GPT.generate's jit_compile; 'true' on PyTorch compiles "
                        "each token's step with TorchInductor")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if args.quick:
        args.train_tokens, args.test_sequences, args.repeats = 2e4, 32, 1
        args.new_tokens, args.generation_batches, args.length = 32, "1", 32
    return args


def train_and_measure_cross_entropy(model, source, args, results):
    steps = max(1, int(args.train_tokens // (args.batch_size * args.length)))
    train = source.sequences(steps * args.batch_size, args.length + 1, seed=1)
    test = source.sequences(args.test_sequences, args.length + 1, seed=2)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps, warmup_target=args.learning_rate,
        warmup_steps=max(1, steps // 20),
    )
    model.compile(optimizer=keras.optimizers.AdamW(
        schedule, weight_decay=0.01, global_clipnorm=1.0
    ))
    start = time.perf_counter()
    history = model.fit(train, batch_size=args.batch_size, epochs=1, verbose=0)
    train_seconds = time.perf_counter() - start

    # log p(tokens[order:] | tokens[:order]) is the log-likelihood of the whole
    # sequence minus that of its first `order` tokens (both given the first).
    order = args.order
    head = model.log_prob(test[:, : order]) if order >= 2 else 0.0
    total = model.log_prob(test)
    per_token = -(total - head) / (test.shape[1] - order)
    cross_entropy = float(per_token.mean())
    oracle = float(-source.token_log_probs(test)[:, order:].mean())
    rate = source.entropy_rate()
    results.update(
        train_steps=steps,
        train_tokens=steps * args.batch_size * args.length,
        train_seconds=round(train_seconds, 1),
        final_train_loss=round(float(history.history["loss"][-1]), 4),
        entropy_rate=round(rate, 4),
        cross_entropy=round(cross_entropy, 4),
        cross_entropy_stderr=round(float(per_token.std() / math.sqrt(len(per_token))), 4),
        oracle_cross_entropy=round(oracle, 4),
        gap_percent=round(100 * (cross_entropy - rate) / rate, 2),
    )


def measure_generation(model, source, args, results):
    speeds = {}
    prompts = source.sequences(64, args.prompt_length, seed=3)
    for batch in [int(b) for b in args.generation_batches.split(",")]:
        prompt = np.resize(prompts, (batch, args.prompt_length)).astype(np.int32)
        for use_cache in (True, False):
            start = time.perf_counter()
            model.generate(prompt, args.new_tokens, seed=0, use_cache=use_cache,
                           jit_compile=args.jit_compile)
            first = time.perf_counter() - start
            times = []
            # Without the cache a call takes seconds to minutes: timed once.
            for r in range(args.repeats if use_cache else 1):
                start = time.perf_counter()
                out = model.generate(prompt, args.new_tokens, seed=r + 1,
                                     use_cache=use_cache, jit_compile=args.jit_compile)
                times.append(time.perf_counter() - start)
            assert out.shape == (batch, args.prompt_length + args.new_tokens)
            key = f"batch{batch}_{'cache' if use_cache else 'nocache'}"
            speeds[key] = {
                "tokens_per_second": round(batch * args.new_tokens / min(times), 1),
                "seconds": round(min(times), 4),
                "first_call_seconds": round(first, 2),
            }
            print(f"  {key}: {speeds[key]}", flush=True)
        cached = speeds[f"batch{batch}_cache"]["tokens_per_second"]
        plain = speeds[f"batch{batch}_nocache"]["tokens_per_second"]
        speeds[f"batch{batch}_cache_speedup"] = round(cached / plain, 1)
    results["generation"] = speeds


def print_tables(results):
    """The results as Markdown tables (what `--markdown` writes)."""
    backend = results["backend"]
    if "cross_entropy" in results:
        print("\n| backend | test cross-entropy (nats/token) | entropy rate | gap | training tokens | training s |")
        print("|---|---|---|---|---|---|")
        print(f"| {backend} | {results['cross_entropy']} ± {results['cross_entropy_stderr']} "
              f"| {results['entropy_rate']} | {results['gap_percent']} % "
              f"| {results['train_tokens']:,} | {results['train_seconds']} |")
    speeds = results["generation"]
    batches = [k[len("batch"):-len("_cache")] for k in speeds if k.endswith("_cache")]
    print("\n| backend | batch | tokens/s, cache | tokens/s, no cache | speed-up | first call, cache (s) |")
    print("|---|---|---|---|---|---|")
    for b in batches:
        cache, plain = speeds[f"batch{b}_cache"], speeds[f"batch{b}_nocache"]
        print(f"| {backend} | {b} | {cache['tokens_per_second']:,.0f} "
              f"| {plain['tokens_per_second']:,.0f} | {speeds[f'batch{b}_cache_speedup']}x "
              f"| {cache['first_call_seconds']} |")


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    backend = keras.backend.backend()
    source = MarkovText(vocab_size=27, order=args.order, seed=0)
    keras.utils.set_random_seed(0)
    model = GPT(
        max_length=max(args.length, args.prompt_length + args.new_tokens),
        num_layers=args.num_layers, num_heads=args.num_heads,
        hidden_dim=args.hidden_dim, position_embedding="rotary",
        tokenizer=CharTokenizer(source.alphabet), seed=0,
    )
    results = {
        "backend": backend,
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "jit_compile": args.jit_compile,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "model": {k: model.get_config()[k] for k in (
            "num_layers", "num_heads", "hidden_dim", "max_length", "position_embedding")},
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
    }
    print(f"backend {backend}, {results['parameters']} parameters", flush=True)
    if not args.skip_training:
        train_and_measure_cross_entropy(model, source, args, results)
        print(
            f"cross-entropy {results['cross_entropy']} +- "
            f"{results['cross_entropy_stderr']} nats/token vs entropy rate "
            f"{results['entropy_rate']} (oracle {results['oracle_cross_entropy']}): "
            f"gap {results['gap_percent']}%  [{results['train_tokens']} tokens, "
            f"{results['train_seconds']} s]", flush=True,
        )
    measure_generation(model, source, args, results)
    # After the speed test, so that its first call includes the compilation.
    prompt = source.decode(source.sequences(1, 16, seed=4)[0])
    results["sample"] = model.generate(
        prompt, min(64, model.max_length - 16), seed=0, jit_compile=args.jit_compile
    )
    print(f"sample: {results['sample']!r}", flush=True)
    results["wall_seconds"] = round(time.perf_counter() - wall, 1)
    print(json.dumps(results, indent=1))
    print_tables(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    with _markdown.capture_argv('GPT on Markov text: cross-entropy and generation speed'):
        main()
