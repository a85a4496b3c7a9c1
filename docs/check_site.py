"""Open the built site in headless Chromium: screenshots, and what a reader must see.

``python docs/check_site.py [--html docs/_build/html] [--out docs/_build/screenshots]``
(``make docs-check`` runs it after ``make docs``). For the landing page, one API page and one
notebook page it saves a PNG screenshot and reads the rendered DOM (after the page's scripts
ran) to check that

* math is typeset by MathJax (``mjx-container`` elements in the DOM, no ``merror``),
* code is highlighted (Pygments ``<span class="...">`` tokens inside ``div.highlight``),
* the search page finds ``gated_scan`` (``search.html?q=gated_scan`` lists its API page).

Exits 1 with one line per failed check. Needs Debian's ``chromium`` (``apt-get install
chromium``); the site is read from ``file://``, nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-file-access-from-files",
)
# (name, page, window height): the pages a reader lands on first.
PAGES = (
    ("landing", "index.html", 1600),
    ("api_shapes", "api/shapes.html", 2400),
    ("notebook_03", "notebooks/03_gated_recurrence.html", 2400),
    ("search_gated_scan", "search.html?q=gated_scan", 1200),
)
BUDGET_MS = 15000  # virtual time for MathJax and the search index to finish


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(chromium: str, profile: Path, args: list[str], timeout: float) -> str:
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def render(chromium: str, url: str, png: Path, height: int, timeout: float = 120) -> str:
    """Screenshot ``url`` into ``png`` and return its DOM after the scripts ran (one launch)."""
    with tempfile.TemporaryDirectory(prefix="gated_jax_chromium_") as profile:
        args = [f"--virtual-time-budget={BUDGET_MS}", f"--window-size=1280,{height}"]
        args += [f"--screenshot={png}", "--dump-dom", url]
        return _run(chromium, Path(profile), args, timeout)


def check_math(dom: str) -> list[str]:
    problems = []
    if "mjx-container" not in dom:
        problems.append("no MathJax output (mjx-container) in the DOM")
    if "<mjx-merror" in dom or 'class="MathJax_Error"' in dom:
        problems.append("MathJax reported a TeX error (merror)")
    return problems


def check_code(dom: str) -> list[str]:
    blocks = re.findall(r'<div class="highlight"><pre[^>]*>(.*?)</pre>', dom, re.S)
    if not blocks:
        return ["no highlighted code block (div.highlight)"]
    tokens = {t for b in blocks for t in re.findall(r'<span class="([a-z0-9]+)">', b)}
    if not tokens & {"k", "kn", "nn", "nf", "mi", "mf", "s", "s1", "s2", "o", "c1", "gp"}:
        return [f"code blocks carry no Pygments keyword/number/string tokens ({sorted(tokens)})"]
    return []


def check_search(dom: str) -> list[str]:
    results = re.search(r'<ul[^>]*class="search[^"]*"[^>]*>(.*?)</ul>', dom, re.S)
    if not results or "gated_scan" not in results.group(1):
        return ["search for gated_scan listed no result naming it"]
    if "api/cell.html" not in results.group(1):
        return ["search for gated_scan did not list its API page (api/cell.html)"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=DOCS / "_build" / "html")
    parser.add_argument("--out", type=Path, default=DOCS / "_build" / "screenshots")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("check_site: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 1
    if not (args.html / "index.html").exists():
        print(f"check_site: no site at {args.html} (run make docs)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DBUS_SESSION_BUS_ADDRESS", "disabled:")
    checks = {
        "landing": (check_code,),
        "api_shapes": (check_math, check_code),
        "notebook_03": (check_math, check_code),
        "search_gated_scan": (check_search,),
    }
    failures = []
    for name, page, height in PAGES:
        url = (args.html.resolve() / page.split("?")[0]).as_uri()
        if "?" in page:
            url += "?" + page.split("?", 1)[1]
        png = args.out / f"{name}.png"
        dom = render(chromium, url, png, height)
        (args.out / f"{name}.html").write_text(dom)
        problems = [p for check in checks[name] for p in check(dom)]
        failures += [f"{page}: {p}" for p in problems]
        print(f"{name:18s} {page:40s} {'ok' if not problems else 'FAILED'}  -> {png}")
    for line in failures:
        print(f"check_site: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
