"""`--markdown PATH`: a benchmark's tables as a page of the documentation.

Each benchmark prints its tables; with `--markdown docs/performance/x.md` it
also writes them there, under the exact command that produced them, the
hardware and the library versions. A page holds one section per command
(one per backend, say): a run replaces the section of its own command and
keeps the others, so the runs of several backends build one page, and any
text written by hand after the last section. The file
is replaced in one step (a temporary file, then `os.replace`), so a failed
run never leaves half a page.
"""

import datetime
import importlib
import os
import platform
import re
import shlex
import sys
import tempfile

# Environment variables that change what a benchmark measures, shown in the
# command when they are set.
_ENVIRONMENT = (
    "KERAS_BACKEND", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    "XLA_FLAGS", "TORCHINDUCTOR_CACHE_DIR", "CUDA_VISIBLE_DEVICES",
)
_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
_SECTION = re.compile(r"<!-- section: (.*?) -->\n(.*?)<!-- end of section -->\n", re.S)


def add_argument(parser):
    """Adds `--markdown PATH` to a benchmark's argument parser."""
    parser.add_argument(
        "--markdown", metavar="PATH", default=None,
        help="also write the tables to this Markdown page (e.g. docs/performance/NAME.md) "
        "with the command, hardware and versions; a rerun of the same command "
        "replaces its own section and keeps the others",
    )


def command(argv=None):
    """The command line that ran this benchmark, without `--markdown`, with
    the environment variables that matter in front."""
    argv = list(sys.argv if argv is None else argv)
    script = os.path.relpath(argv[0]) if os.path.exists(argv[0]) else argv[0]
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--markdown":
            skip = True
        elif not arg.startswith("--markdown="):
            args.append(arg)
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in _ENVIRONMENT if name in os.environ]
    return " ".join([*env, "python", shlex.quote(script), *map(shlex.quote, args)])


def cpu_name():
    """The CPU's model name, e.g. "AMD EPYC 7B13"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _accelerators():
    """The backend's non-CPU devices, e.g. "1 x NVIDIA H100"; "" for none."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            names = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
        elif backend == "torch":
            import torch

            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            import tensorflow as tf

            names = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # a broken driver must not lose the benchmark's table
        return ""
    if not names:
        return ""
    return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))


def environment():
    """One line: hardware, operating system and the versions that matter."""
    import keras
    import numpy

    backend = keras.backend.backend()
    module = importlib.import_module(_BACKEND_MODULES.get(backend, backend))
    accelerators = _accelerators() or "no GPU"
    return (
        f"{cpu_name()} ({os.cpu_count()} CPUs), {accelerators}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"Keras {keras.__version__}, {backend} {getattr(module, '__version__', '?')}, "
        f"NumPy {numpy.__version__}"
    )


def write(path, title, tables, notes=""):
    """Writes `tables` (Markdown text) into the page at `path`, in the
    section of this run's command, which replaces an earlier one."""
    if not path:
        return
    run = command()
    body = (
        f"```bash\n{run}\n```\n\n"
        f"{environment()}; {datetime.date.today().isoformat()}.\n\n"
        f"{tables.strip()}\n"
        + (f"\n{notes.strip()}\n" if notes.strip() else "")
    )
    sections, tail = {}, ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        sections = dict(_SECTION.findall(text))
        ends = [m.end() for m in _SECTION.finditer(text)]
        # Hand-written text after the last section (a conclusion drawn
        # from the tables) stays.
        tail = text[ends[-1]:] if ends else ""
    sections[run] = body
    script = os.path.basename(sys.argv[0])
    page = (
        f"# {title}\n\n"
        f"Written by `benchmarks/{script} --markdown`: each section is one run's "
        f"output, under the command that produced it.\n\n"
        + "".join(f"<!-- section: {key} -->\n{text}<!-- end of section -->\n"
                  for key, text in sections.items())
        + tail
    )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".md.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {os.path.abspath(path)}", flush=True)


class _Tee:
    """A stdout that keeps the Markdown table rows (lines starting with "|")
    it passes through, a blank line between tables."""

    def __init__(self, stream):
        self.stream, self.lines, self._partial = stream, [], ""

    def write(self, text):
        self.stream.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            if line.lstrip().startswith("|"):
                self.lines.append(line.strip())
            elif self.lines and self.lines[-1]:
                self.lines.append("")  # the end of a table
        return len(text)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


class capture:
    """`with capture(path, title):` runs a benchmark that prints its tables
    and, if it finishes, writes them to the page at `path` (`write`).
    Nothing is written without a path or when the run fails."""

    def __init__(self, path, title, notes=""):
        self.path, self.title, self.notes = path, title, notes

    def __enter__(self):
        self._stdout = sys.stdout
        if self.path:
            sys.stdout = self._tee = _Tee(sys.stdout)
        return self

    def __exit__(self, kind, value, traceback):
        sys.stdout = self._stdout
        if self.path and kind is None:
            tables = "\n".join(self._tee.lines).strip()
            if not tables:
                raise RuntimeError(f"--markdown: the run printed no table for {self.path}")
            write(self.path, self.title, tables, self.notes)
        return False


def capture_argv(title, notes="", argv=None):
    """`capture` for the path given as `--markdown PATH` (or
    `--markdown=PATH`) in `argv`, for benchmarks whose `main` parses its own
    arguments: `with capture_argv(title): main()`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = None
    for i, arg in enumerate(argv):
        if arg == "--markdown" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--markdown="):
            path = arg.partition("=")[2]
    return capture(path, title, notes)
