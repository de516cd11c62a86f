"""Hugging Face checkpoints: load time, peak memory and generation speed of a
GPT-2-small-sized checkpoint, against transformers and KerasHub.

The checkpoint is made locally with random weights (transformers'
`GPT2LMHeadModel(GPT2Config())`: 124M parameters, 12 layers, width 768,
vocabulary 50257; float32 safetensors, about 500 MB) and kept in
`--checkpoint` for later runs; nothing is downloaded.

- Loading: `zoo.from_preset(folder)` against
  `transformers.AutoModelForCausalLM.from_pretrained(folder)`, each in a
  fresh process (imports excluded): seconds, and the peak resident memory
  during the load above the resident memory before it (sampled every 5 ms).
- Generation: greedy, `--prompt-length` prompt tokens then `--new-tokens`
  new ones, batch 1 and 8, with the key/value cache, compilation excluded
  (one warm-up call per setting, then the best of `--repeats`): tokens per
  second = batch * new tokens / seconds. The zoo's `GPT.generate` against
  KerasHub's `GPT2CausalLM` (greedy sampler, `preprocessor=None`) built by
  `GPT2Backbone.from_preset(folder)` from the same weights; both continue
  the same prompts, and the script checks they agree on the tokens.
  KerasHub is optional: without `keras_hub` importable its lines are left
  out.

Usage (one backend per run):

    KERAS_BACKEND=jax python benchmarks/hf_checkpoints.py
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/hf_checkpoints.py --json t.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

DEFAULT_CHECKPOINT = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), "keras_genzoo_gpt2_small_random"
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-keras-hub", action="store_true")
    parser.add_argument("--load-only", action="store_true", help="no generation timings")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--measure-load", choices=["zoo", "transformers"],
                        help=argparse.SUPPRESS)  # the child process's job
    return parser.parse_args(argv)


def make_checkpoint(directory):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    model.save_pretrained(directory)


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The largest resident memory seen during a `with` block, sampled every
    5 ms by a thread (`ru_maxrss` would report the imports' peak when the
    load's is lower)."""

    def __enter__(self):
        import threading

        self.before = self.peak = rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def measure_load(which, directory):
    if which == "zoo":
        import zoo

        load = zoo.from_preset
    else:
        import transformers

        load = transformers.AutoModelForCausalLM.from_pretrained
    with PeakRss() as memory:
        start = time.perf_counter()
        model = load(directory)
        seconds = time.perf_counter() - start
    del model
    return {"seconds": seconds, "peak_rss_growth_mb": memory.peak - memory.before}


def load_in_child(which, directory):
    out = subprocess.run(
        [sys.executable, __file__, "--measure-load", which, "--checkpoint", directory],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_time(fn, repeats):
    fn()  # compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    args = parse_args(argv)
    if args.measure_load:
        print(json.dumps(measure_load(args.measure_load, args.checkpoint)))
        return None
    import keras

    if not os.path.isdir(args.checkpoint):
        print(f"making the random GPT-2-small checkpoint in {args.checkpoint} ...")
        make_checkpoint(args.checkpoint)
    import transformers

    results = {
        "backend": keras.backend.backend(), "keras": keras.__version__,
        "transformers": transformers.__version__, "machine": platform.processor()
        or platform.machine(), "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
    }
    results["load_zoo"] = load_in_child("zoo", args.checkpoint)
    results["load_transformers"] = load_in_child("transformers", args.checkpoint)
    print(f"load zoo: {results['load_zoo']}")
    print(f"load transformers: {results['load_transformers']}")

    if args.load_only:
        return finish(results, args)
    import zoo

    gpt = zoo.from_preset(args.checkpoint)
    keras_hub_lm = None
    if not args.skip_keras_hub:
        try:
            import keras_hub

            results["keras_hub"] = keras_hub.__version__
            backbone = keras_hub.models.GPT2Backbone.from_preset(args.checkpoint)
            keras_hub_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
            keras_hub_lm.compile(sampler="greedy")
        except ImportError as error:
            print(f"KerasHub left out: {error}")
    rng = np.random.default_rng(0)
    total = args.prompt_length + args.new_tokens
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        prompts = rng.integers(0, gpt.vocab_size, (batch, args.prompt_length)).astype("int32")
        seconds, tokens = best_time(
            lambda: gpt.generate(prompts, args.new_tokens, temperature=0), args.repeats
        )
        results[f"zoo_tokens_per_second_batch_{batch}"] = batch * args.new_tokens / seconds
        line = f"batch {batch}: zoo {batch * args.new_tokens / seconds:.1f} tokens/s"
        if keras_hub_lm is not None:
            ids = np.zeros((batch, total), "int32")
            ids[:, : args.prompt_length] = prompts
            mask = np.zeros((batch, total), bool)
            mask[:, : args.prompt_length] = True
            seconds, out = best_time(
                lambda: keras_hub_lm.generate({"token_ids": ids, "padding_mask": mask},
                                              stop_token_ids=None),
                args.repeats,
            )
            rate = batch * args.new_tokens / seconds
            results[f"keras_hub_tokens_per_second_batch_{batch}"] = rate
            agree = float(np.mean(np.asarray(out["token_ids"]) == tokens))
            results[f"tokens_agree_batch_{batch}"] = agree
            line += f", KerasHub {rate:.1f} tokens/s (same tokens: {agree:.0%})"
        print(line)
    return finish(results, args)


def finish(results, args):
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
