"""Sphinx configuration of the gated_jax documentation site.

Build with ``make docs`` (HTML into ``docs/_build/html``). The API pages, the notebook pages and
the kernel spec are generated at build time by ``docs/_ext/gated_jax_docs.py``; nothing under
``docs/api/`` or ``docs/notebooks/`` is written by hand.

Environment switches:

* ``GATED_JAX_DOCS_EXECUTE=1`` executes the notebooks at small size while building (what
  ``make docs`` does, so the pages carry their outputs); ``0`` renders them as stored, without
  outputs (what the test suite does: ``tests/test_notebooks.py`` already executes every cell).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import gated_jax  # noqa: E402

project = "gated_jax"
author = "the gated_jax authors"
copyright = "the gated_jax authors, Apache-2.0"
version = release = gated_jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "sphinx_copybutton",
    "gated_jax_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]
templates_path = []

# --- strictness: the build runs with -W, so every warning below fails it ----------------------
# Every reference to a gated_jax object must resolve. References to other projects (jax, flax,
# numpy, typing, builtins) are not checked: the build is offline, so there is no intersphinx.
nitpicky = True
# The README's sections are included under the site's own headings; a README section gaining a
# deeper sub-heading is not a reason to fail the build.
suppress_warnings = ["myst.header"]
nitpick_ignore_regex = [(r"py:.*", r"(?!gated_jax\b).*")]

# --- autodoc / napoleon: Google-style docstrings with reST math -------------------------------
autodoc_default_options = {"member-order": "bysource"}
# Types go to the argument descriptions, so signatures stay readable (Flax modules have many
# fields with long types).
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
# A method without its own docstring is not shown with its base class's (Flax's `setup`).
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # `Attributes:` as fields, not duplicate attribute entries
napoleon_use_rtype = False
napoleon_preprocess_types = False
add_module_names = True
python_display_short_literal_types = True

# --- MyST / MyST-NB ---------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
_execute = os.environ.get("GATED_JAX_DOCS_EXECUTE", "0") not in ("", "0")
nb_execution_mode = "force" if _execute else "off"
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_execution_show_tb = True
nb_merge_streams = True

# --- HTML -------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"gated_jax {release}"
html_static_path = ["_static"]
html_css_files = ["gated_jax.css"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
}
html_last_updated_fmt = None
html_show_sourcelink = False
# MathJax 3 is served from the site itself (the build and its readers may be offline); the
# files come from the `sphinx-mathjax-offline` package, copied by the gated_jax_docs extension.
mathjax_path = "mathjax/tex-chtml.js"
# `\_` and friends inside `\text{...}` (docstrings write `\text{batch\_group\_count}`).
mathjax3_config = {
    "loader": {"load": ["[tex]/textmacros"]},
    "tex": {"packages": {"[+]": ["textmacros"]}},
}
