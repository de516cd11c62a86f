"""The documentation site builds without a warning and renders in a browser.

`mkdocs build --strict` (mkdocs.yml) fails on a broken link, a page missing
from the navigation, or an API reference (`::: zoo.gan`) that does not
resolve. The built site is then served from 127.0.0.1 and opened in headless
Chromium: the home page and an API page must render their content, run the
theme's JavaScript, and produce no console error, no uncaught exception and
no failed request.

The site does not depend on the Keras backend, so it is checked in the
TensorFlow pass of `python tests/all_backends.py` only. It needs the `docs`
extra (`pip install -e ".[docs]"`) and Chromium (`apt-get install chromium`);
.ci/run installs both, and the test says so when it skips here.
"""

import functools
import http.server
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading

import keras
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS_BACKEND = "tensorflow"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != DOCS_BACKEND,
    reason=f"the site does not depend on the backend: checked in the {DOCS_BACKEND} pass only",
)

# Put before every page's own scripts: records console errors and warnings,
# uncaught exceptions, rejected promises and resources that fail to load,
# and writes them into the page, where --dump-dom shows them.
RECORDER = """<script>
(function () {
  var seen = [];
  function keep(kind, args) {
    seen.push(kind + ": " + Array.prototype.map.call(args, String).join(" "));
  }
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () { keep("console." + level, arguments); original.apply(console, arguments); };
  });
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    keep("error", [event.message || ("failed to load " + (target.src || target.href))]);
  }, true);
  window.addEventListener("unhandledrejection", function (event) { keep("unhandled rejection", [event.reason]); });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var out = document.createElement("pre");
      out.id = "recorded-console";
      out.textContent = JSON.stringify(seen);
      document.body.appendChild(out);
    }, 500);
  });
})();
</script>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason='needs the docs extra: pip install -e ".[docs]"')
    pytest.importorskip("mkdocstrings", reason='needs the docs extra: pip install -e ".[docs]"')
    pytest.importorskip("material", reason='needs the docs extra: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(REPO_ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return out


def test_site_builds_strictly_with_every_page(site):
    assert (site / "index.html").is_file()
    for package in ("zoo", "core", "gan", "vae", "flow", "diffusion", "transformer",
                    "layers", "data", "metrics", "presets", "callbacks"):
        assert (site / "api" / package / "index.html").is_file(), package
    gan = (site / "api" / "gan" / "index.html").read_text()
    # The API reference follows `zoo.gan.__all__`: the classes and their arguments.
    for anchor in ("zoo.gan.GAN", "zoo.gan.WGANGP", "zoo.gan.ConditionalGAN", "zoo.gan.GAN.sample"):
        assert f'id="{anchor}"' in gan, anchor
    assert "r1_weight" in gan


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site, puts the recorder into every HTML page and keeps
    every request that failed."""

    failures = None  # a list, set per server

    def log_message(self, *args):
        pass

    def send_error(self, code, *args, **kwargs):
        if not self.path.endswith("/favicon.ico"):  # the browser asks for it unprompted
            self.failures.append(f"{code} {self.path}")
        super().send_error(code, *args, **kwargs)

    def send_head(self):
        path = pathlib.Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        html = path.read_text(encoding="utf-8")
        html = re.sub(r"(<head[^>]*>)", lambda m: m.group(1) + RECORDER, html, count=1)
        body = html.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


@pytest.fixture(scope="module")
def server(site):
    failures = []
    handler = type("Handler", (_Handler,), {"failures": failures})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", failures
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium found (apt-get install chromium; .ci/run installs it)")


def render(browser, url, profile):
    """The DOM of `url` after its scripts ran, and the browser's log."""
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"{browser} failed on {url}:\n{result.stderr[-3000:]}"
    return result.stdout, result.stderr


@pytest.mark.parametrize(
    "page,expected",
    [
        ("", ["keras-genzoo", "Quickstart"]),
        ("api/gan/", ['id="zoo.gan.GAN"', "data_shape"]),
    ],
    ids=["home", "api-gan"],
)
def test_page_renders_in_a_browser_without_errors(browser, server, tmp_path, page, expected):
    base, failures = server
    failures.clear()
    dom, log = render(browser, f"{base}/{page}", tmp_path / "profile")
    for text in expected:
        assert text in dom, f"{text!r} not rendered on /{page}"
    recorded = re.search(r'<pre id="recorded-console">(.*?)</pre>', dom, re.S)
    assert recorded, f"the page's scripts did not run to the load event on /{page}"
    assert recorded.group(1) == "[]", f"console errors on /{page}: {recorded.group(1)}"
    # Material's bundle ran: its focus-visible polyfill marks the root element.
    assert "js-focus-visible" in dom, f"the theme's JavaScript did not run on /{page}"
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "Uncaught" in line or "ERROR:CONSOLE" in line], console
    assert not failures, f"requests that failed while rendering /{page}: {failures}"
