"""The keras-genzoo command line.

    python -m zoo list [--family FAMILY]
    python -m zoo info PRESET
    python -m zoo sample PRESET --num 16 --seed 0 --out grid.png
    python -m zoo sample t2i_digits --prompt "a slanted seven" --num 16 --out grid.png
    python -m zoo train MODEL --data DATA --epochs N --out DIR

PRESET is a built-in name (`list`), a preset directory, or a file:// /
https:// archive URL. `sample` writes an image grid for image models, a
scatter plot for 2-D models, and prints text for language models. `train`
fits a model on an embedded data set with the Keras progress bar and saves
it as a preset (loadable with `zoo.from_preset(DIR)`). The backend is
`KERAS_BACKEND`'s, as for any Keras program; commands that load Keras print
it once, to stderr.

`--help` and argument errors answer without importing Keras: `python -m zoo`
imports the package `zoo` light (see `zoo/__init__.py`), and each command
imports what it needs. Everything that can be checked before Keras loads
(option combinations, `train --out`) is checked first. TensorFlow's C++
logs are off (`TF_CPP_MIN_LOG_LEVEL=2`) unless `--verbose` is given or the
variable is set. On PyTorch, `sample` and `train` use only the CPU cores
other processes leave idle unless `OMP_NUM_THREADS` is set
(`zoo.core.threads.limit_torch_threads`).
"""

import argparse
import inspect
import json
import os
import shlex
import sys

FAMILIES = ("gan", "vae", "flow", "diffusion", "transformer", "multimodal")
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


# What each `sample` option is for; defaults applied after the model is
# known, so that an option given to a model it does not apply to is an error.
SAMPLE_DEFAULTS = {"steps": 50, "max_new_tokens": 64, "temperature": 1.0}
# Files a preset directory holds (zoo.presets.format); `train --overwrite`
# replaces only such a directory.
PRESET_FILES = ("config.json", "metadata.json", "model.weights.h5")


def _temperature(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m zoo",
        description="keras-genzoo: pretrained generative models on every Keras backend.",
        epilog="The backend is KERAS_BACKEND's (tensorflow, jax or torch).",
    )
    verbose_help = "show TensorFlow's C++ log messages (hidden by default)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    # Also accepted after the command; SUPPRESS keeps a subcommand's unset
    # flag from overwriting the one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="list the built-in presets")
    p.add_argument("--family", choices=FAMILIES, help="only this family's presets")

    p = sub.add_parser("info", parents=[common], help="show a preset's metadata")
    p.add_argument("preset", help="built-in name, preset directory or archive URL")
    p.add_argument("--json", action="store_true", help="print metadata.json as is")

    p = sub.add_parser("sample", parents=[common], help="draw samples from a preset")
    p.add_argument("preset", help="built-in name, preset directory or archive URL")
    p.add_argument("--num", type=_positive_int, default=16, help="number of samples (16)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (0)")
    p.add_argument("--out", help="image and point models: a .png (an image grid or a 2-D "
                   "scatter plot; default samples.png) or a .npy (the raw samples); "
                   "language models print their text instead")
    p.add_argument("--steps", type=_positive_int,
                   help=f"diffusion models: sampler steps ({SAMPLE_DEFAULTS['steps']})")
    p.add_argument("--prompt", help="language models with a tokenizer: text to continue; "
                   "text-to-image models: what every image shows")
    p.add_argument("--guidance-scale", type=_temperature,
                   help="text-to-image models: classifier-free guidance weight, >= 0 "
                   "(the preset's default, else 1: plain conditional sampling)")
    p.add_argument("--max-new-tokens", type=_positive_int,
                   help=f"language models: tokens to generate "
                   f"({SAMPLE_DEFAULTS['max_new_tokens']})")
    p.add_argument("--temperature", type=_temperature,
                   help=f"language models: sampling temperature, 0 for greedy "
                   f"decoding ({SAMPLE_DEFAULTS['temperature']})")

    p = sub.add_parser("train", parents=[common],
                       help="train a model on embedded data; save a preset")
    p.add_argument("model", choices=MODELS, metavar="MODEL",
                   help=f"one of {', '.join(MODELS)}")
    p.add_argument("--data", required=True, choices=DATASETS,
                   help=f"one of {', '.join(DATASETS)} (markov: text, for gpt only)")
    p.add_argument("--epochs", type=_positive_int, required=True,
                   help="passes over the data")
    p.add_argument("--out", required=True, help="preset directory to write (checked "
                   "before training: it must not exist, be empty, or be replaced "
                   "with --overwrite)")
    p.add_argument("--batch-size", type=_positive_int, default=64,
                   help="examples per training step (64)")
    p.add_argument("--num-data", type=_positive_int,
                   help="toy densities: points drawn (20000); markov: sequences (20000); "
                   "not for digits, a fixed data set")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the preset at --out (only a keras-genzoo preset is "
                   "ever replaced)")
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
    import keras
    import numpy as np

    from zoo.images import save_image_grid, save_scatter
    from zoo.presets import from_preset, preset_metadata
    from zoo.presets.format import family_of

    # The options are checked against the preset's class before its weights
    # load; a class not registered here is checked once the model is built.
    cls = keras.saving.get_registered_object(str(preset_metadata(args.preset).get("class_name")))
    if isinstance(cls, type):
        _check_sample_options(args, cls)
    model = from_preset(args.preset)
    if type(model) is not cls:
        cls = type(model)
        _check_sample_options(args, cls)
    text = family_of(cls) == "transformer"
    has_steps = "steps" in inspect.signature(cls.sample).parameters
    for name, value in SAMPLE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if text:
        return _generate(model, args)
    kwargs = {"steps": args.steps} if has_steps else {}
    # A text-to-image model: one whose `sample` takes prompts (a CLIP also
    # has a text encoder, but draws no samples).
    takes_prompts = "prompts" in inspect.signature(cls.sample).parameters
    if takes_prompts and getattr(model, "text_encoder", None) is not None:
        kwargs.update(_text_to_image_options(model, args))
    elif args.guidance_scale is not None or args.prompt is not None:
        option = "--prompt" if args.prompt is not None else "--guidance-scale"
        raise ValueError(f"{option} does not apply to {args.preset!r}, a {cls.__name__} "
                         "without a text encoder: it is for text-to-image models"
                         + (" and language models." if option == "--prompt" else "."))
    out = args.out or "samples.png"
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
    about = f" for {args.prompt!r}" if "prompts" in kwargs else ""
    print(f"Wrote {args.num} samples of shape {shape}{about} to {os.path.abspath(out)}")
    return 0


def _text_to_image_options(model, args):
    """`sample`'s keyword arguments for a text-conditioned diffusion model:
    the prompt for every image, and the guidance scale (the preset's
    recorded default when not given)."""
    if args.prompt is None:
        raise ValueError(f"{args.preset!r} is a text-to-image model: pass --prompt TEXT "
                         '(e.g. --prompt "a slanted seven").')
    from zoo.presets import preset_metadata

    scale = args.guidance_scale
    if scale is None:
        scale = preset_metadata(args.preset).get("sampling", {}).get("guidance_scale", 1.0)
    return {"prompts": [args.prompt] * args.num, "guidance_scale": scale}


def _check_sample_options(args, cls):
    """Options given to a model they do not apply to are errors, not silence."""
    from zoo.presets.format import family_of

    text = family_of(cls) == "transformer"
    wrong = ["--prompt", "--max-new-tokens", "--temperature"] if not text else ["--out"]
    if "prompts" in inspect.signature(cls.sample).parameters:
        # Text-to-image models (checked against the loaded model in `_sample`).
        wrong.remove("--prompt")
    if text:
        wrong.append("--guidance-scale")
    if "steps" not in inspect.signature(cls.sample).parameters:
        wrong.append("--steps")
    for option in wrong:
        if getattr(args, option[2:].replace("-", "_")) is not None:
            applies = {"--out": "image and point models (language models print text)",
                       "--steps": "diffusion models",
                       "--guidance-scale": "text-to-image models"}.get(option,
                                                                     "language models")
            raise ValueError(
                f"{option} does not apply to {args.preset!r}, a {cls.__name__}: "
                f"it is for {applies}."
            )


def _generate(model, args):
    import numpy as np

    tokenizer = getattr(model, "tokenizer", None)
    if args.prompt is not None:
        if tokenizer is None:
            raise ValueError(
                f"--prompt needs a model with a tokenizer; {args.preset!r} has none "
                "(leave --prompt out: each sample then starts from a random token)."
            )
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


def _check_sample(args):
    """What `sample` can check before loading anything."""
    if args.out is not None and not args.out.lower().endswith((".png", ".npy")):
        raise ValueError(
            f"--out must name a .png file (or .npy for raw arrays); received {args.out!r}."
        )


def _check_train(args):
    """What `train` can check before loading Keras: the options and `--out`."""
    if args.data == "markov" and args.model != "gpt":
        raise ValueError(f"--data markov is text: it trains only MODEL gpt, not {args.model}.")
    if args.model == "gpt" and args.data != "markov":
        raise ValueError("MODEL gpt trains on text: use --data markov.")
    if args.model == "nsf" and args.data == "digits":
        raise ValueError("MODEL nsf takes vectors: use a toy density, e.g. --data moons.")
    if args.data == "digits" and args.num_data is not None:
        raise ValueError(
            "--num-data does not apply to --data digits (a fixed set of 1,797 "
            "images); it sets the size of toy densities and markov text."
        )
    out = os.path.abspath(os.path.expanduser(args.out))
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise ValueError(f"--out {args.out!r} exists and is not a directory; "
                             "choose a new preset directory.")
        held = sorted(os.listdir(out))
        if held and not args.overwrite:
            raise ValueError(
                f"--out {args.out!r} exists; pass --overwrite to replace the preset "
                "there, or choose another directory."
            )
        if held and (set(held) - set(PRESET_FILES) or PRESET_FILES[0] not in held):
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            raise ValueError(
                f"--out {args.out!r} is not a keras-genzoo preset (it holds {shown}); "
                "--overwrite replaces only a preset: choose another directory."
            )
    # The closest existing folder must take the new one (and its temporary
    # sibling): found out now, not after training.
    parent = os.path.dirname(out)
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {args.out!r}: cannot write in {parent!r}.")


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
        "command": shlex.join(["python", "-m", "zoo", *args.argv]),
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
    num_data = args.num_data or 20_000
    if args.data == "markov":
        from zoo.transformer import GPT, CharTokenizer

        source = zdata.MarkovText(vocab_size=27, order=1, seed=0)
        tokens = source.sequences(num_data, 65, seed=seed)
        model = GPT(max_length=128, num_layers=2, num_heads=4, hidden_dim=64,
                    position_embedding="rotary", tokenizer=CharTokenizer(source.alphabet),
                    seed=seed)
        return model, tokens, "MarkovText(vocab_size=27, order=1, seed=0)"
    if args.data == "digits":
        x, _ = zdata.digits("train")
        dataset = "zoo.data.digits, train split"
    else:
        density = zdata.toy_density(args.data)
        x = density.sample(num_data, seed=seed)
        dataset = f"{density!r} from zoo.data, {num_data} points"
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
        model = NeuralSplineFlow(shape, num_bins=16, seed=seed)
    else:
        model = DDPM(shape, hidden_units=128, seed=seed)
    return model, x, dataset


def _load_keras(args):
    """Imports Keras and every zoo class; says once which backend runs."""
    if not args.verbose:
        # Read by TensorFlow's C++ runtime when it loads: set before Keras
        # imports TensorFlow. A value the user set is kept.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import zoo

    zoo.load_all()
    print(f"keras-genzoo {zoo.__version__}: Keras {keras.__version__}, backend "
          f"{keras.backend.backend()}", file=sys.stderr)
    if args.command in ("sample", "train"):
        from zoo.core.threads import limit_torch_threads

        limit_torch_threads()


COMMANDS = {"list": _list, "info": _info, "sample": _sample, "train": _train}
CHECKS = {"sample": _check_sample, "train": _check_train}


def main(argv=None):
    """Runs the command line on `argv` (default `sys.argv[1:]`); returns the
    exit status: 0, or 2 after a one-line error on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        if args.command in CHECKS:
            CHECKS[args.command](args)
        _load_keras(args)
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as error:  # PresetError included: one line, no traceback
        print(f"python -m zoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A preset is written only after training, atomically: nothing is half-written.
        print(f"python -m zoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
