"""The keras-genzoo command line.

    python -m zoo list [--family FAMILY]
    python -m zoo info PRESET
    python -m zoo sample PRESET --num 16 --seed 0 --out grid.png
    python -m zoo train MODEL --data DATA --epochs N --out DIR

PRESET is a built-in name (`list`), a preset directory, or a file:// /
https:// archive URL. `sample` writes an image grid for image models, a
scatter plot for 2-D models, and prints text for language models. `train`
fits a model on an embedded data set with the Keras progress bar and saves
it as a preset (loadable with `zoo.from_preset(DIR)`). The backend is
`KERAS_BACKEND`'s, as for any Keras program.
"""

import argparse
import inspect
import json
import os
import sys

FAMILIES = ("gan", "vae", "flow", "diffusion", "transformer")
DATASETS = ("digits", "ring", "grid", "moons", "swiss_roll", "markov")
MODELS = ("gan", "wgan_gp", "vae", "vqvae", "realnvp", "glow", "nsf", "ddpm", "gpt")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m zoo",
        description="keras-genzoo: pretrained generative models on every Keras backend.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the built-in presets")
    p.add_argument("--family", choices=FAMILIES, help="only this family's presets")

    p = sub.add_parser("info", help="show a preset's metadata")
    p.add_argument("preset", help="built-in name, preset directory or archive URL")
    p.add_argument("--json", action="store_true", help="print metadata.json as is")

    p = sub.add_parser("sample", help="draw samples from a preset")
    p.add_argument("preset", help="built-in name, preset directory or archive URL")
    p.add_argument("--num", type=_positive_int, default=16, help="number of samples (16)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (0)")
    p.add_argument("--out", help="a .png: an image grid or a 2-D scatter plot (default "
                   "samples.png); a .npy: the raw samples; ignored for text")
    p.add_argument("--steps", type=_positive_int, default=50,
                   help="diffusion models: sampler steps (50)")
    p.add_argument("--prompt", help="language models: text to continue")
    p.add_argument("--max-new-tokens", type=_positive_int, default=64,
                   help="language models: tokens to generate (64)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="language models: sampling temperature (1.0)")

    p = sub.add_parser("train", help="train a model on embedded data; save a preset")
    p.add_argument("model", choices=MODELS, metavar="MODEL",
                   help=f"one of {', '.join(MODELS)}")
    p.add_argument("--data", required=True, choices=DATASETS,
                   help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--epochs", type=_positive_int, required=True)
    p.add_argument("--out", required=True, help="preset directory to write")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--num-data", type=_positive_int, default=20_000,
                   help="points drawn from a toy density, or sequences of Markov text")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


# ---------------------------------------------------------------------------


def _list(args):
    import zoo
    from zoo.presets import preset_metadata

    names = zoo.list_presets(args.family)
    if not names:
        print("No built-in presets" + (f" in family {args.family!r}." if args.family else "."))
        return 0
    rows = [("name", "family", "class", "trained on", "params", "quality")]
    for name in names:
        meta = preset_metadata(name)
        quality = meta.get("quality", {})
        figures = quality.get("figures", {})
        # The figures the preset is checked on are its headline.
        shown = [c["figure"] for c in quality.get("checks", [])] or list(figures)[:2]
        quality = ", ".join(f"{k}={figures[k]}" for k in dict.fromkeys(shown) if k in figures)
        rows.append((name, meta.get("family", "?"), meta.get("class_name", "?").split(">")[-1],
                     meta.get("training_backend", "?"), f"{meta.get('parameter_count', 0):,}",
                     quality))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _info(args):
    from zoo.presets import preset_metadata

    meta = preset_metadata(args.preset)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    print(f"{meta.get('name', args.preset)}: {meta.get('description', '')}".rstrip(": "))
    for key, label in (("class_name", "class"), ("family", "family"), ("dataset", "data"),
                       ("training_backend", "trained on"), ("keras_version", "Keras"),
                       ("parameter_count", "parameters"), ("command", "built by")):
        if key in meta:
            value = f"{meta[key]:,}" if key == "parameter_count" else meta[key]
            print(f"  {label + ':':12} {value}")
    training = meta.get("training")
    if training:
        print(f"  {'training:':12} " + ", ".join(f"{k}={v}" for k, v in training.items()))
    quality = meta.get("quality")
    if quality:
        print(f"  {'quality:':12} " + ", ".join(
            f"{k}={v}" for k, v in {**quality.get("figures", {}),
                                   **quality.get("more_figures", {})}.items()))
        if quality.get("evaluation"):
            print(f"  {'evaluation:':12} zoo.presets.checks.{quality['evaluation']}")
    if meta.get("goldens"):
        print(f"  {'goldens:':12} {meta['goldens']['probe']} on fixed inputs")
    print(f"  {'sha256:':12} " + ", ".join(
        f"{k} {v[:12]}..." for k, v in meta.get("sha256", {}).items()))
    return 0


def _sample(args):
    import numpy as np

    import zoo
    from zoo.images import save_image_grid, save_scatter

    from zoo.presets.format import family_of

    model = zoo.from_preset(args.preset)
    if family_of(model) == "transformer":
        return _generate(model, args)
    kwargs = {}
    if "steps" in inspect.signature(model.sample).parameters:
        kwargs["steps"] = args.steps
    out = args.out or "samples.png"
    if not out.lower().endswith((".png", ".npy")):
        raise ValueError(f"--out must name a .png file (or .npy for raw arrays); received {out!r}.")
    samples = np.asarray(model.sample(args.num, seed=args.seed, **kwargs))
    shape = samples.shape[1:]
    if out.lower().endswith(".npy"):
        np.save(out, samples)
    elif len(shape) == 3 and shape[-1] in (1, 3):
        save_image_grid(samples, out)
    elif shape == (2,):
        save_scatter({"samples": samples}, out)
    else:
        raise ValueError(
            f"Samples of shape {shape} are neither images nor 2-D points; "
            "pass --out FILE.npy to save them as a NumPy array."
        )
    print(f"Wrote {args.num} samples of shape {shape} to {out}")
    return 0


def _generate(model, args):
    import numpy as np

    tokenizer = getattr(model, "tokenizer", None)
    if args.prompt is not None:
        if tokenizer is None:
            raise ValueError("--prompt needs a model with a tokenizer; this one has none.")
        prompt = [args.prompt] * args.num
    else:
        # One token drawn from the vocabulary per sample.
        rng = np.random.default_rng(args.seed)
        prompt = rng.integers(0, model.vocab_size, (args.num, 1)).astype("int32")
    out = model.generate(prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, seed=args.seed)
    if tokenizer is not None and not isinstance(out, list):
        out = tokenizer.decode(out)
    for i, text in enumerate(out):
        print(f"[{i}] {text if isinstance(text, str) else ' '.join(map(str, text))}")
    return 0


def _train(args):
    from zoo.presets import checks
    from zoo.presets.format import family_of

    model, data, dataset = _model_and_data(args)
    model.compile()
    batch_size = min(args.batch_size, len(data))
    model.fit(data, batch_size=batch_size, epochs=args.epochs, verbose=1)
    family = family_of(model)
    metadata = {
        "name": os.path.basename(os.path.normpath(args.out)),
        "dataset": dataset,
        "description": f"{type(model).__name__} trained by `python -m zoo train`.",
        "command": " ".join(["python -m zoo", *sys.argv[1:]]),
        "training": {"epochs": args.epochs, "batch_size": batch_size, "seed": args.seed},
        "goldens": checks.record_goldens(model, checks.DEFAULT_PROBES[family]),
    }
    directory = model.save_to_preset(args.out, metadata=metadata, overwrite=args.overwrite)
    print(f"Saved the preset to {directory}; load it with zoo.from_preset({directory!r}).")
    return 0


def _model_and_data(args):
    import keras

    from zoo import data as zdata

    keras.utils.set_random_seed(args.seed)
    seed = args.seed
    if args.data == "markov":
        if args.model != "gpt":
            raise ValueError(f"--data markov is text: it trains only MODEL gpt, not {args.model}.")
        from zoo.transformer import GPT, CharTokenizer

        source = zdata.MarkovText(vocab_size=27, order=1, seed=0)
        tokens = source.sequences(args.num_data, 65, seed=seed)
        model = GPT(max_length=128, num_layers=2, num_heads=4, hidden_dim=64,
                    position_embedding="rotary", tokenizer=CharTokenizer(source.alphabet),
                    seed=seed)
        return model, tokens, "MarkovText(vocab_size=27, order=1, seed=0)"
    if args.model == "gpt":
        raise ValueError("MODEL gpt trains on text: use --data markov.")
    if args.data == "digits":
        x, _ = zdata.digits("train")
        dataset = "zoo.data.digits, train split"
    else:
        density = zdata.toy_density(args.data)
        x = density.sample(args.num_data, seed=seed)
        dataset = f"{density!r} from zoo.data, {args.num_data} points"
    shape = x.shape[1:]
    images = len(shape) == 3
    levels = 17 if images else None  # the digits' 17 intensity levels
    from zoo.diffusion import DDPM
    from zoo.flow import Glow, NeuralSplineFlow, RealNVP
    from zoo.gan import GAN, WGANGP
    from zoo.vae import VAE, VQVAE

    if args.model == "gan":
        model = GAN(shape, filters=32, seed=seed)
    elif args.model == "wgan_gp":
        model = WGANGP(shape, filters=32, seed=seed)
    elif args.model == "vae":
        model = VAE(shape, latent_dim=8 if images else 2, num_levels=levels, filters=16,
                    seed=seed)
    elif args.model == "vqvae":
        model = VQVAE(shape, num_codes=64, code_dim=8, num_levels=levels, filters=16,
                      seed=seed)
    elif args.model == "realnvp":
        model = RealNVP(shape, num_levels=levels, seed=seed)
    elif args.model == "glow":
        model = Glow(shape, num_levels=levels, seed=seed)
    elif args.model == "nsf":
        if images:
            raise ValueError("MODEL nsf takes vectors: use a toy density, e.g. --data moons.")
        model = NeuralSplineFlow(shape, num_bins=16, seed=seed)
    else:
        model = DDPM(shape, hidden_units=128, seed=seed)
    return model, x, dataset


COMMANDS = {"list": _list, "info": _info, "sample": _sample, "train": _train}


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ValueError as error:  # PresetError included: a clear message, no traceback
        print(f"python -m zoo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
