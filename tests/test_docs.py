"""The documentation site builds with warnings as errors, and shows what it must.

One Sphinx build per run (module fixture, in the test's process, into a temporary folder), with
the notebooks rendered as stored: ``tests/test_notebooks.py`` already executes every cell, so the
site does not pay for it twice (``make docs`` executes them at small size). The checks read the
built HTML and compare it with the package itself (``__all__``, the CLI parser, the README),
never with the generator.
When Chromium is installed the built site is also opened in headless Chromium
(``docs/check_site.py``): math typeset, code highlighted, search finding ``gated_scan``.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REQUIRED = ("gated_jax", "gated_jax.nn", "gated_jax.nnx", "gated_jax.experiments")

try:
    import sphinx  # noqa: F401
except ImportError:  # pragma: no cover
    if os.environ.get("CI"):
        raise  # CI installs the docs extra (make test): a missing Sphinx is a failure there
    pytest.skip(
        "the docs extra is not installed (pip install -e '.[docs]')", allow_module_level=True
    )


def _sphinx(srcdir: Path, outdir: Path, *extra: str) -> tuple[int, str]:
    """One build in this process: its exit code and all it printed (warnings, errors).

    In the test's own interpreter, JAX, Flax and gated_jax are imported already, so a build
    pays for Sphinx alone. Sphinx restores docutils' registries after a build; ``sys.path``
    and ``os.environ``, which the configuration and the extension extend, are put back here.
    Python warnings raised during the build are caught: the plugins' deprecation warnings are
    theirs, but one from ``docs/`` fails the test.
    """
    from sphinx.cmd.build import build_main

    args = ["-E", "-W", "--keep-going", "-q", "-b", "html", "-d", str(outdir / ".doctrees")]
    args += [*extra, str(srcdir), str(outdir)]
    printed, path, environ = io.StringIO(), list(sys.path), dict(os.environ)
    os.environ["GATED_JAX_DOCS_EXECUTE"] = "0"
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DeprecationWarning)
                code = build_main(args)
    finally:
        sys.path[:] = path
        os.environ.clear()
        os.environ.update(environ)
    # Sphinx's plugins still call APIs that Sphinx deprecates; the site's own code must not.
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if str(DOCS) in w.filename]
    assert not ours, "the docs' own code uses deprecated Sphinx APIs:\n" + "\n".join(ours)
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    code, printed = _sphinx(DOCS, out)
    assert code == 0, f"sphinx -W failed:\n{printed[-8000:]}"
    return out


def _text(page: Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    raw = page.read_text()
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))


def _anchors(site: Path) -> set[str]:
    ids = set()
    for page in (site / "api").glob("*.html"):
        ids |= set(re.findall(r'<dt class="sig[^"]*" id="(gated_jax[\w.]*)"', page.read_text()))
        ids |= set(re.findall(r'<span id="module-(gated_jax[\w.]*)"', page.read_text()))
        ids |= set(re.findall(r'id="module-(gated_jax[\w.]*)"', page.read_text()))
    return ids


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise LookupError(path)


def test_every_public_name_is_documented_in_the_api_reference(site):
    """Each name of the four modules' ``__all__`` has an entry whose path IS that object."""
    documented = {}
    for anchor in _anchors(site):
        try:
            documented.setdefault(id(_resolve(anchor)), []).append(anchor)
        except (LookupError, AttributeError):
            pass
    anchors = _anchors(site)
    missing = []
    count = 0
    for modname in REQUIRED:
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            count += 1
            obj = getattr(mod, name)
            anchor = f"{modname}.{name}"
            if anchor not in anchors and id(obj) not in documented:
                missing.append(anchor)
    assert count > 60
    assert not missing, f"public names missing from the API pages: {missing}"


def test_landing_page_has_the_front_door(site):
    text = _text(site / "index.html")
    readme = (ROOT / "README.md").read_text()
    for command in ("make demo", "make test"):
        assert command in text
    # The intro paragraph is the README's, included, not rewritten.
    intro = readme.split("<!-- site:intro -->")[1].split("<!-- /site:intro -->")[0]
    first = " ".join(intro.split()[:12])
    assert first in text
    # The homework is one worked-example page, linked from the landing page, not its content.
    assert "What the homework gets wrong" not in text
    assert 'href="guide/homework.html"' in (site / "index.html").read_text()
    page = _text(site / "guide" / "homework.html")
    # The homework table comes from the README: every question it lists is on that page.
    section = readme.split("<!-- site:homework -->")[1].split("<!-- /site:homework -->")[0]
    questions = re.findall(r"^\| (\d\.\d\([a-z]\)(?:\([ivx]+\))?) \|", section, re.M)
    assert len(questions) >= 6
    for q in questions:
        assert q in page, q


@pytest.mark.parametrize("page", ["shapes", "conv", "cell", "modules", "flow", "scaling"])
def test_one_guide_page_per_capability_with_its_math(site, page):
    raw = (site / "guide" / f"{page}.html").read_text()
    assert "gated_jax" in raw
    if page != "scaling":  # the others show their module's math, typeset by MathJax
        assert 'class="math' in raw
        assert "mathjax/tex-chtml.js" in raw, "MathJax is served by the site itself"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_api_pages_render_math_and_examples(site):
    raw = (site / "api" / "shapes.html").read_text()
    assert 'class="math notranslate nohighlight">' in raw
    # The docstring examples, highlighted (Pygments' prompt token on every `>>>`).
    assert 'class="doctest highlight-' in raw and '<span class="gp">&gt;&gt;&gt; </span>' in raw
    cell = (site / "api" / "cell.html").read_text()
    assert 'id="gated_jax.cell.gated_scan"' in cell


def test_the_notebooks_are_pages(site):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.exists(), page
        text = _text(page)
        assert "import gated_jax" in text
        assert "GATED_JAX_NOTEBOOK_SMALL" in text


def test_cli_reference_is_generated_from_the_parser(site):
    from gated_jax.cli import build_parser

    text = _text(site / "cli.html")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) >= {"shape", "verify", "flow", "report", "bench"}
    for name, subparser in sub.choices.items():
        assert f"gated-jax {name}" in text, name
        for action in subparser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, f"{name} {option}"


def test_search_index_knows_gated_scan(site):
    index = (site / "searchindex.js").read_text()
    assert '"gated_jax.cell.gated_scan"' in index or "gated_scan" in index


def test_a_broken_reference_fails_the_build(tmp_path):
    """-W makes a reference to no gated_jax object an error (a small site, no API pages); a
    reference to an object that exists raises nothing."""
    src = tmp_path / "src"
    (src / "_static").mkdir(parents=True)
    (src / "_static" / "gated_jax.css").write_text("")
    conf = DOCS / "conf.py"
    (src / "conf.py").write_text(
        f"__file__ = {str(conf)!r}\nexec(open(__file__).read())\ngated_jax_api = False\n"
    )
    good, bad = "gated_jax.cell.gated_scan", "gated_jax.cell.no_such_function"
    (src / "index.md").write_text(f"# refs\n\n{{py:func}}`{good}`\n\n{{py:func}}`{bad}`\n")
    code, printed = _sphinx(src, tmp_path / "out")
    assert code != 0
    assert bad in printed
    assert good not in printed.replace(bad, "")


def test_a_public_name_missing_from_the_reference_fails_the_build(monkeypatch):
    """The build's completeness check warns (an error under -W) for an undocumented name."""
    import types

    monkeypatch.syspath_prepend(str(DOCS / "_ext"))
    ext = importlib.import_module("gated_jax_docs")
    model = ext.build_model()
    warnings = []
    monkeypatch.setattr(ext, "logger", types.SimpleNamespace(warning=lambda *a: warnings.append(a)))

    def check(documented: set[str]) -> list[str]:
        warnings.clear()
        domain = types.SimpleNamespace(objects=documented, modules=set(model.pages))
        env = types.SimpleNamespace(get_domain=lambda name: domain)
        app = types.SimpleNamespace(config=types.SimpleNamespace(gated_jax_api=True))
        ext.on_env_check_consistency(app, env)
        return [" ".join(map(str, w[1:])) for w in warnings]

    everything = set(model.homes.values())
    assert check(everything) == []
    home = model.homes["gated_jax.gated_scan"]
    assert home == "gated_jax.cell.gated_scan"
    missing = check(everything - {home})
    assert len(missing) == 1 and "gated_jax.gated_scan" in missing[0]


@pytest.mark.skipif(
    not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()),
    reason="headless check needs Debian's chromium",
)
def test_site_in_headless_chromium(site, tmp_path):
    out = tmp_path / "screenshots"
    proc = subprocess.run(
        [sys.executable, str(DOCS / "check_site.py"), "--html", str(site), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for name in ("landing", "api_shapes", "notebook_03", "search_gated_scan"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
