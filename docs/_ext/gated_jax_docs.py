"""Sphinx extension of the gated_jax site: generated API pages, notebook pages, strict checks.

At ``builder-inited`` it

* reads ``__all__`` of ``gated_jax``, ``gated_jax.nn``, ``gated_jax.nnx`` and
  ``gated_jax.experiments`` (and of every module a top-level name comes from), gives each public
  object ONE home (the page of the module that lists it) and writes the API pages under
  ``docs/api/`` (autodoc directives, regenerated on every build, git-ignored);
* copies the notebooks from ``notebooks/`` to ``docs/notebooks/`` (git-ignored);
* writes a kernel spec for this interpreter and puts it first on ``JUPYTER_PATH``, so executed
  notebooks run in the build's own environment whatever kernels the machine has.

Every other public path of an object (``gated_jax.gated_scan`` for ``gated_jax.cell.gated_scan``,
the module an object is defined in) resolves to its home in cross-references. At
``env-check-consistency`` every public name of those modules must be documented, or the build
warns (and ``-W`` makes that an error). The ``gj-summary`` directive lists a module's public
names with their one-line summaries, linked to their homes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import types
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

# The modules whose every public name must be in the reference.
REQUIRED = ("gated_jax", "gated_jax.nn", "gated_jax.nnx", "gated_jax.experiments")
# Order of the API pages in the navigation; modules found in no list come after, sorted.
ORDER = (
    "gated_jax",
    "gated_jax.shapes",
    "gated_jax.ports",
    "gated_jax.conv",
    "gated_jax.cell",
    "gated_jax.linalg",
    "gated_jax.testing",
    "gated_jax.nn",
    "gated_jax.nnx",
    "gated_jax.experiments",
    "gated_jax.diagrams",
    "gated_jax.model_summary",
)


@dataclasses.dataclass
class Entry:
    module: str  # the page's module
    name: str  # the public name in that module
    kind: str  # "function", "class", "data"
    obj: object

    @property
    def home(self) -> str:
        return f"{self.module}.{self.name}"


@dataclasses.dataclass
class ApiModel:
    pages: list[str]  # module names, one API page each
    submodules: dict[str, list[str]]  # page (or "other") -> public modules shown by docstring
    entries: dict[str, list[Entry]]  # page module -> the objects documented there
    homes: dict[str, str]  # any public path (and defining path) -> documented path
    required: dict[str, list[str]]  # module -> its __all__, for the completeness check


def _public_all(mod: types.ModuleType) -> list[str]:
    return list(getattr(mod, "__all__", []))


def _kind(obj: object) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):  # functions, and the callables jax wraps them in (custom_vjp, jit)
        return "function"
    return "data"


def _public_module_of(obj: object) -> str | None:
    """The public module defining an object (``gated_jax.cell._scan`` -> ``gated_jax.cell``)."""
    modname = getattr(obj, "__module__", None)
    if not isinstance(modname, str) or not modname.startswith("gated_jax"):
        return None
    parts = modname.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            parts = parts[:i]
            break
    return ".".join(parts)


def _slug(module: str) -> str:
    return (
        "gated_jax"
        if module == "gated_jax"
        else module.removeprefix("gated_jax.").replace(".", "_")
    )


@functools.cache  # one model per process: the package does not change during a build
def build_model() -> ApiModel:
    import gated_jax

    required = {m: _public_all(importlib.import_module(m)) for m in REQUIRED}
    pages: list[str] = [m for m in REQUIRED if m != "gated_jax"]
    top = gated_jax

    # A top-level name lives on the page of a required module listing it, else on the page of
    # the public module it is defined in, else on the top-level page.
    for name in required["gated_jax"]:
        obj = getattr(top, name)
        if isinstance(obj, types.ModuleType):
            if obj.__name__ not in pages and hasattr(obj, "__all__"):
                pages.append(obj.__name__)
            continue
        if any(
            name in required[m] and getattr(importlib.import_module(m), name) is obj
            for m in pages
            if m in required
        ):
            continue
        # The shallowest public module listing it: gated_jax.cell, not gated_jax.cell.scan.
        defined = (_public_module_of(obj) or "").split(".")
        for depth in range(2, len(defined) + 1):
            candidate = ".".join(defined[:depth])
            mod = importlib.import_module(candidate)
            if name in getattr(mod, "__all__", ()) and getattr(mod, name, None) is obj:
                if candidate not in pages:
                    pages.append(candidate)
                break

    # The core and Flax modules named in ORDER have a page whenever they exist.
    for modname in ORDER[1:]:
        if importlib.util.find_spec(modname) is not None:
            if hasattr(importlib.import_module(modname), "__all__") and modname not in pages:
                pages.append(modname)

    rank = {m: i for i, m in enumerate(ORDER)}
    pages = sorted(set(pages), key=lambda m: (rank.get(m, len(ORDER)), m))

    entries: dict[str, list[Entry]] = {"gated_jax": []}
    homes: dict[str, str] = {}
    by_id: dict[int, str] = {}

    def add(module: str, name: str, obj: object) -> None:
        kind = _kind(obj)
        key = id(obj) if kind in ("function", "class") else None
        if key is not None and key in by_id:
            home = by_id[key]
        else:
            entry = Entry(module, name, kind, obj)
            entries.setdefault(module, []).append(entry)
            home = entry.home
            if key is not None:
                by_id[key] = home
        homes.setdefault(f"{module}.{name}", home)
        defined = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if kind in ("function", "class") and all(isinstance(s, str) for s in defined):
            homes.setdefault(".".join(defined), home)

    for module in pages:
        mod = importlib.import_module(module)
        entries.setdefault(module, [])
        for name in _public_all(mod):
            obj = getattr(mod, name)
            if isinstance(obj, types.ModuleType):
                continue
            add(module, name, obj)
    for name in required["gated_jax"]:
        obj = getattr(top, name)
        if isinstance(obj, types.ModuleType):
            homes[f"gated_jax.{name}"] = obj.__name__
            continue
        add("gated_jax", name, obj)
    # Every other public module is shown by its docstring (its `:mod:` target): a package's
    # submodules on the package's page, the rest on the "other modules" page.
    pages = ["gated_jax", *pages]
    submodules: dict[str, list[str]] = {}
    for modname in _public_modules():
        if modname in pages:
            continue
        parents = [p for p in pages if p != "gated_jax" and modname.startswith(p + ".")]
        submodules.setdefault(max(parents, key=len) if parents else "other", []).append(modname)
    return ApiModel(pages, submodules, entries, homes, required)


def _public_modules() -> list[str]:
    """Every importable module of gated_jax with no ``_`` in its path (``__main__`` excluded)."""
    import pkgutil

    import gated_jax

    found = []
    for info in pkgutil.walk_packages(gated_jax.__path__, "gated_jax."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        importlib.import_module(info.name)
        found.append(info.name)
    return sorted(found)


# --------------------------------------------------------------------------------------------
# page generation


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _attr_doc(module: str, name: str, obj: object) -> list[str]:
    """The ``#:`` comment documenting a module constant, in the module or the one defining it."""
    from sphinx.pycode import ModuleAnalyzer

    mod = importlib.import_module(module)
    candidates = [module]
    if hasattr(mod, "__path__"):
        for sub in sorted(sys.modules):
            if sub.startswith(module + ".") and getattr(sys.modules[sub], name, None) is obj:
                candidates.append(sub)
    for cand in candidates:
        try:
            docs = ModuleAnalyzer.for_module(cand).find_attr_docs()
        except Exception:  # noqa: BLE001 (no source: nothing to show)
            continue
        if ("", name) in docs:
            return list(docs[("", name)])
    return []


def _render_entry(entry: Entry) -> list[str]:
    target = entry.home
    if entry.kind == "class":
        lines = [f".. autoclass:: {target}", "   :members:", "   :show-inheritance:"]
        call = entry.obj.__dict__.get("__call__") if isinstance(entry.obj, type) else None
        if call is not None and getattr(call, "__doc__", None):
            lines.append("   :special-members: __call__")
        return [*lines, ""]
    if entry.kind == "function":
        return [f".. autofunction:: {target}", ""]
    # data: its type, a short value, and its `#:` documentation when it has one
    value = repr(entry.obj)
    lines = [f".. py:data:: {entry.name}", f"   :module: {entry.module}"]
    lines.append(f"   :type: {type(entry.obj).__name__}")
    if len(value) <= 60 and "\n" not in value:
        lines.append(f"   :value: {value}")
    lines.append("")
    lines += [
        f"   {line}" if line else "" for line in _attr_doc(entry.module, entry.name, entry.obj)
    ]
    return [*lines, ""]


def _title(text: str, ch: str = "=") -> list[str]:
    return [text, ch * len(text), ""]


_GENERATED = ".. This file is generated by docs/_ext/gated_jax_docs.py at build time; do not edit."


def _submodule_lines(modules: list[str], heading: bool = True) -> list[str]:
    if not modules:
        return []
    lines = _title("Submodules", "-") if heading else []
    for modname in modules:
        lines += [
            *_title(f"``{modname}``", "~" if heading else "-"),
            f".. automodule:: {modname}",
            "",
        ]
    return lines


def write_api_pages(model: ApiModel, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, str] = {}
    toc = [f"   {_slug(m)}" for m in model.pages]
    for module in model.pages:
        lines = [
            _GENERATED,
            "",
            *_title(f"``{module}``"),
            f".. automodule:: {module}",
            "",
            *_title("Summary", "-"),
            f".. gj-summary:: {module}",
            "",
        ]
        documented = model.entries.get(module, [])
        if documented:
            lines += _title("Reference", "-")
            lines += [f".. currentmodule:: {module}", ""]
            for entry in documented:
                lines += _render_entry(entry)
        lines += _submodule_lines(model.submodules.get(module, []))
        wanted[f"{_slug(module)}.rst"] = "\n".join(lines) + "\n"
    if model.submodules.get("other"):
        lines = [
            _GENERATED,
            "",
            *_title("Other modules"),
            "The application layer (verification, reports, benchmarks, the command line) and the",
            "other public modules, each by its docstring. The command line has its own",
            ":doc:`reference page <../cli>`.",
            "",
            *_submodule_lines(model.submodules["other"], heading=False),
        ]
        wanted["other.rst"] = "\n".join(lines) + "\n"
        toc.append("   other")
    wanted["index.rst"] = "\n".join(
        [
            _GENERATED,
            "",
            *_title("API reference"),
            "Every public name of the modules below, listed from their ``__all__`` and documented",
            "from their docstrings at build time. Each object is documented once, on the page of",
            "the module that lists it; its other public paths (``gated_jax.gated_scan`` for",
            "``gated_jax.cell.gated_scan``) link there.",
            "",
            ".. toctree::",
            "   :maxdepth: 1",
            "",
            *toc,
            "",
        ]
    )
    for name, text in wanted.items():
        path = outdir / name
        if not path.exists() or path.read_text() != text:  # keep mtimes: incremental builds
            path.write_text(text)
    for stale in outdir.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()


def copy_notebooks(root: Path, docs: Path) -> None:
    src, dst = root / "notebooks", docs / "notebooks"
    dst.mkdir(exist_ok=True)
    names = set()
    for nb in sorted(src.glob("*.ipynb")):
        names.add(nb.name)
        target = dst / nb.name
        if not target.exists() or target.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, target)
    for stale in dst.glob("*.ipynb"):
        if stale.name not in names:
            stale.unlink()


def write_kernel_spec(build_dir: Path) -> None:
    """A ``python3`` kernel running this interpreter, first on ``JUPYTER_PATH``."""
    kdir = build_dir / "jupyter" / "kernels" / "python3"
    kdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gated_jax docs)",
        "language": "python",
    }
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1))
    paths = [
        str(build_dir / "jupyter"),
        *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep)),
    ]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))


# --------------------------------------------------------------------------------------------
# Sphinx hooks


def on_builder_inited(app) -> None:
    docs = Path(app.srcdir)
    root = docs.parent
    if not app.config.gated_jax_api:
        return
    model = build_model()
    write_api_pages(model, docs / "api")
    copy_notebooks(root, docs)
    write_kernel_spec(Path(app.outdir).parent / ".kernel")
    # Executed notebooks run small and import this checkout's gated_jax.
    os.environ.setdefault("GATED_JAX_NOTEBOOK_SMALL", "1")
    pythonpath = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pythonpath))


def _model(config) -> ApiModel:
    """The build's API model (cached), or an empty one for a site without API pages."""
    return build_model() if config.gated_jax_api else ApiModel([], {}, {}, {}, {})


def on_missing_reference(app, env, node, contnode):
    """Resolve any public path of a documented object (and of its members) to its home."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    homes = _model(app.config).homes
    candidates = [target]
    modname = node.get("py:module")
    if modname and not target.startswith("gated_jax"):
        candidates.append(f"{modname}.{target}")
    domain = env.get_domain("py")
    for cand in candidates:
        head, rest = cand, ""
        while head:
            if head in homes and homes[head] + rest != cand:
                new = homes[head] + rest
                for typ in dict.fromkeys([node.get("reftype", "obj"), "obj"]):
                    found = domain.resolve_xref(
                        env, node["refdoc"], app.builder, typ, new, node, contnode
                    )
                    if found is not None:
                        return found
                return None
            head, _, tail = head.rpartition(".")
            rest = f".{tail}{rest}"
    # A gated_jax object that exists but is not public (no page) is shown unlinked; a target
    # that names nothing stays a broken reference, and -W fails the build on it.
    for cand in candidates:
        if cand.startswith("gated_jax.") and _exists(cand):
            return contnode
    return None


def _exists(path: str) -> bool:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def on_env_check_consistency(app, env) -> None:
    """Every public name of the required modules is documented (its home is a Python object)."""
    if not app.config.gated_jax_api:
        return
    model = _model(app.config)
    domain = env.get_domain("py")
    objects, modules = domain.objects, domain.modules
    for module, names in model.required.items():
        if module not in modules:
            logger.warning("API reference: module %s is not documented", module)
        for name in names:
            path = f"{module}.{name}"
            home = model.homes.get(path)
            if home is None or (home not in objects and home not in modules):
                logger.warning(
                    "API reference: public name %s (in %s.__all__) is missing from the site",
                    path,
                    module,
                )


_ARG_SECTIONS = ("Args:", "Arguments:", "Parameters:", "Attributes:", "Keyword Args:")


def on_process_docstring(app, what, name, obj, options, lines) -> None:
    """Join a list of argument names wrapped over two lines (``a, b,`` / ``  c: text``).

    Google style documents several arguments at once as ``a, b, c: text``; napoleon reads one
    line per entry, so a name list that wraps must be put back on one line before it parses.
    """
    in_section, indent = False, None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped in _ARG_SECTIONS:
            in_section, indent = True, None
        elif in_section and stripped and not line.startswith(" "):
            in_section = False
        elif in_section and stripped:
            cur = len(line) - len(line.lstrip())
            indent = cur if indent is None else indent
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            nxt_indent = len(nxt) - len(nxt.lstrip())
            if (
                cur == indent
                and stripped.endswith(",")
                and ":" not in stripped
                and nxt.strip()
                and nxt_indent > cur
                and ":" in nxt
            ):
                lines[i] = f"{line.rstrip()} {nxt.strip()}"
                del lines[i + 1]
                continue
        i += 1


def on_process_signature(app, what, name, obj, options, signature, return_annotation):
    """Readable signatures for dataclass-style classes (Flax linen modules, NamedTuples).

    Their ``__init__`` is generated, so there is no source to take defaults from: a default whose
    repr is an object address (``<function ...>``) is shown as ``...`` (the docstring names it),
    and linen's ``parent`` and ``name`` (every module has them) are left out.
    """
    if what != "class" or not signature:
        return None
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    linen = sys.modules.get("flax.linen")
    is_linen = linen is not None and isinstance(obj, type) and issubclass(obj, linen.Module)
    params = []
    for p in sig.parameters.values():
        if is_linen and p.name in ("parent", "name"):
            continue
        if p.default is not inspect.Parameter.empty and repr(p.default).startswith("<"):
            p = p.replace(default=Ellipsis)
        params.append(p.replace(annotation=inspect.Parameter.empty))
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return text.replace("=Ellipsis", "=..."), None


def on_skip_member(app, what, name, obj, skip, options):
    """A class's members are the ones its own source defines.

    NamedTuple fields are documented by the class's ``Attributes:`` section. Flax copies its
    ``Module`` methods (``setup``, ...) into every subclass and a linen field's default (an
    initializer such as ``jax.nn.initializers.zeros``) is a class attribute: neither is this
    library's member, and both would bring other projects' docstrings into the page.
    """
    doc = getattr(obj, "__doc__", None) or ""
    if not isinstance(obj, property) and doc.startswith("Alias for field number"):
        return True
    if what != "class":
        return None
    target = obj.fget if isinstance(obj, property) else obj
    if isinstance(obj, property) or callable(target):
        mod = getattr(target, "__module__", None)
        qualname = getattr(target, "__qualname__", "") or ""
        if not (isinstance(mod, str) and mod.startswith("gated_jax") and "." in qualname):
            return True
    return None


def on_doctree_read(app, doctree) -> None:
    """The argparse usage lines are plain text, not Python to highlight."""
    for block in doctree.findall(nodes.literal_block):
        if "language" not in block and block.astext().lstrip().startswith(("usage:", "gated-jax")):
            block["language"] = "text"


class SummaryDirective(SphinxDirective):
    """``.. gj-summary:: MODULE``: the module's public names, one line each, linked.

    The summaries are docstrings' first lines, so the directive must be parsed as reST (in a
    MyST page: inside an ``{eval-rst}`` block).
    """

    required_arguments = 1
    has_content = False

    def run(self):
        module = self.arguments[0]
        model = _model(self.config)
        mod = importlib.import_module(module)
        table = nodes.bullet_list()
        for name in _public_all(mod):
            obj = getattr(mod, name)
            path = f"{module}.{name}"
            home = model.homes.get(path, path)
            is_mod = isinstance(obj, types.ModuleType)
            ref = addnodes.pending_xref(
                "",
                refdomain="py",
                reftype="mod" if is_mod else "obj",
                reftarget=home,
                refexplicit=True,
                refwarn=True,
            )
            ref += nodes.literal(name, name, classes=["xref", "py"])
            para = nodes.paragraph()
            para += ref
            if is_mod:
                summary = f"the ``{obj.__name__}`` module"
            elif _kind(obj) == "data":
                summary = f"a ``{type(obj).__name__}`` constant"
            else:
                summary = _first_line(obj)
            if summary:
                para += nodes.Text(": ")
                para += self.parse_inline(summary)[0]
            item = nodes.list_item()
            item += para
            table += item
        return [table]

    def parse_inline(self, text: str):
        """reST inline markup, relative names read in the summarised module (as autodoc does)."""
        context = self.env.ref_context
        saved = context.get("py:module")
        context["py:module"] = self.arguments[0]
        try:
            return self.state.inline_text(text, self.lineno)
        finally:
            if saved is None:
                context.pop("py:module", None)
            else:
                context["py:module"] = saved


def setup(app):
    # False: a site without the generated API and notebook pages (the strictness test's).
    app.add_config_value("gated_jax_api", True, "env")
    app.connect("builder-inited", on_builder_inited)
    app.connect("missing-reference", on_missing_reference)
    app.connect("env-check-consistency", on_env_check_consistency)
    app.connect("autodoc-skip-member", on_skip_member)
    app.connect("autodoc-process-signature", on_process_signature)
    app.connect("doctree-read", on_doctree_read)
    app.connect("autodoc-process-docstring", on_process_docstring, priority=100)
    app.add_directive("gj-summary", SummaryDirective)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def copy_mathjax(app, exc) -> None:
    """Serve MathJax 3 from the site (the files of the `sphinx-mathjax-offline` package)."""
    if exc is not None or app.builder.format != "html":
        return
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        logger.warning("MathJax: install the docs extra (pip install -e '.[docs]')")
        return
    src = Path(spec.origin).parent / "static" / "mathjax"
    dst = Path(app.outdir) / "_static" / "mathjax"
    for s in src.rglob("*"):
        d = dst / s.relative_to(src)
        if s.is_file() and (not d.exists() or d.stat().st_size != s.stat().st_size):
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, d)
