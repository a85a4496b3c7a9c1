"""Static checks that keep the package's layout true (issue 26), by reading the source's AST.

Nothing here imports ``gated_jax`` or JAX: every check parses the files, so the whole module
runs in well under a second. Each test names the offending file, line and rule in its message.

* function size: no function of the core over :data:`MAX_FUNCTION_LINES` lines of code
  (docstring, comment-only and blank lines aside), nor of the report layer ``gated_jax/lab/``;
* module size: no core module over :data:`MAX_MODULE_LINES` lines;
* imports: no cycle among ``gated_jax``'s modules (module-level and function-level imports
  alike), and no function-local import of a ``gated_jax`` module inside ``gated_jax/cell/``;
* wording: no homework / seed-question references outside the report;
* validation: one home for argument validators;
* the public API: every name in ``gated_jax.__all__`` resolves to a definition.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "gated_jax"

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 900

# The library core: pure functions and the Flax modules. Each entry is a module file or a
# package directory, relative to the repository; a concept may be either while it moves
# (``shapes.py`` -> ``shapes/``), so both spellings are listed and whichever exists is checked.
CORE = (
    "gated_jax/shapes.py",
    "gated_jax/shapes",
    "gated_jax/ports.py",
    "gated_jax/ports",
    "gated_jax/receptive.py",
    "gated_jax/conv.py",
    "gated_jax/cell",
    "gated_jax/linalg.py",
    "gated_jax/nn.py",
    "gated_jax/nnx.py",
    "gated_jax/_rnn_common.py",
    "gated_jax/_validate.py",
    "gated_jax/diagrams.py",
    "gated_jax/model_summary.py",
    "gated_jax/testing.py",
)
REPORT = ("gated_jax/lab",)

# Where coursework references may appear: the report and the CLI command that writes it.
COURSEWORK_ALLOWED = ("gated_jax/lab", "gated_jax/cli/report_cmd.py")
COURSEWORK = re.compile(r"homework|coursework|\bseed \d\.\d|\bquestion \d", re.IGNORECASE)

# The homes of argument validation: the validation module, and the conv configuration module
# for convolution arguments.
VALIDATION_HOMES = ("gated_jax/_validate.py", "gated_jax/shapes/_config.py")


# --------------------------------------------------------------------------------------------
# reading the tree
# --------------------------------------------------------------------------------------------


def _files(entries: tuple[str, ...]) -> list[Path]:
    """The ``.py`` files of ``entries`` (files or directories) that exist, sorted."""
    out: set[Path] = set()
    for entry in entries:
        path = ROOT / entry
        if path.is_dir():
            out.update(path.rglob("*.py"))
        elif path.is_file():
            out.add(path)
    return sorted(out)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _under(path: Path, entries: tuple[str, ...]) -> bool:
    rel = _rel(path)
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in entries)


@functools.cache
def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(_source(path), filename=str(path))


def _package_files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


# --------------------------------------------------------------------------------------------
# (a) function size, (b) module size
# --------------------------------------------------------------------------------------------


def _docstring_lines(node: ast.AST) -> set[int]:
    body = getattr(node, "body", [])
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return set(range(body[0].lineno, body[0].end_lineno + 1))
    return set()


def _code_line_flags(source: str, tree: ast.AST) -> list[int]:
    """``flags[i]`` is 1 when line ``i`` (1-based) is code: not blank, not a comment-only line,
    not inside any docstring (of the module, a class or a function)."""
    doc: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc |= _docstring_lines(node)
    flags = [0]
    for lineno, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        flags.append(int(bool(text) and not text.startswith("#") and lineno not in doc))
    return flags


@functools.cache
def _code_line_prefix(path: Path) -> list[int]:
    """Prefix sums of :func:`_code_line_flags` for ``path``."""
    prefix = [0]
    for flag in _code_line_flags(_source(path), _tree(path))[1:]:
        prefix.append(prefix[-1] + flag)
    return prefix


def code_lines(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of code of ``node``: its ``def`` line to its last line, without docstrings (its
    own and those of nested functions and classes), comment-only lines and blank lines.
    Decorators are not counted."""
    flags = _code_line_flags(source, node)
    return sum(flags[node.lineno : node.end_lineno + 1])


def _long_functions(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        prefix = _code_line_prefix(path)
        for fn in _functions(_tree(path)):
            n = prefix[fn.end_lineno] - prefix[fn.lineno - 1]
            if n > MAX_FUNCTION_LINES:
                out.append(f"{_rel(path)}:{fn.lineno} {fn.name}: {n} lines of code")
    return out


def test_code_lines_counts_code_only():
    src = 'def f(x):\n    """Doc.\n\n    More.\n    """\n    # note\n\n    y = x\n    return y\n'
    assert code_lines(src, _tree_of(src).body[0]) == 3


def _tree_of(src: str) -> ast.Module:
    return ast.parse(src)


def test_no_long_function_in_core():
    long = _long_functions(_files(CORE))
    assert not long, (
        f"functions of the core over {MAX_FUNCTION_LINES} lines of code (docstrings and "
        "comments aside); split them into named helpers:\n  " + "\n  ".join(long)
    )


def test_no_long_function_in_report():
    long = _long_functions(_files(REPORT))
    assert not long, (
        f"functions of gated_jax/lab over {MAX_FUNCTION_LINES} lines of code; a report section "
        "is data (rows, figures) plus a template:\n  " + "\n  ".join(long)
    )


def test_no_long_core_module():
    big = [
        f"{_rel(p)}: {n} lines"
        for p in _files(CORE)
        if (n := len(_source(p).splitlines())) > MAX_MODULE_LINES
    ]
    assert not big, (
        f"core modules over {MAX_MODULE_LINES} lines; split them by concept:\n  " + "\n  ".join(big)
    )


# --------------------------------------------------------------------------------------------
# (c) imports: no cycle; no function-local import inside gated_jax/cell
# --------------------------------------------------------------------------------------------


def _imports(path: Path) -> Iterator[tuple[ast.stmt, str, bool]]:
    """``(node, module, local)`` for every import in ``path`` of a ``gated_jax`` module.

    ``import a.b.c`` and ``from a.b import c`` (``c`` a module) import ``a.b.c``; ``from a.b
    import name`` (``name`` not a module) imports ``a.b``. Relative imports are resolved.
    ``local`` says the import runs inside a function. Imports under ``if TYPE_CHECKING:`` are
    skipped.
    """
    modules = _module_names()
    for node, local in sorted(_import_nodes(_tree(path)), key=lambda n: n[0].lineno):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield node, alias.name, local
            continue
        base = _from_module(path, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in modules:
                yield node, sub, local
            elif base in modules:
                yield node, base, local


def _from_module(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <module> import ...`` written in ``path``."""
    if not node.level:
        return node.module or ""
    me = _module_name(path)
    anchor = (me if path.name == "__init__.py" else me.rpartition(".")[0]).split(".")
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _import_nodes(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``tree``, and whether it sits inside a function; the bodies
    of ``if TYPE_CHECKING:`` are skipped (never executed, so never a cycle)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, local = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, local
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += [(n, local) for n in node.orelse]
            continue
        local = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        # imports are statements: only the statement lists of a node can hold one
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack += [(child, local) for child in getattr(node, field, ())]


@functools.cache
def _module_names() -> frozenset[str]:
    return frozenset(_module_name(p) for p in _package_files())


@functools.cache
def _import_graph() -> dict[str, dict[str, str]]:
    """``graph[a][b]``: where module ``a`` imports module ``b`` (``file:line``)."""
    graph: dict[str, dict[str, str]] = {m: {} for m in _module_names()}
    for path in _package_files():
        me = _module_name(path)
        for node, target, _ in _imports(path):
            if target != me:
                graph[me].setdefault(target, f"{_rel(path)}:{node.lineno}")
    return graph


def _strongly_connected(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _a_cycle(graph: dict[str, dict[str, str]], component: list[str]) -> list[str]:
    """One cycle through ``component``'s first module, by breadth-first search back to it."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # unreachable for a strongly connected component


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": "a:1"}, "b": {"c": "b:1"}, "c": {"a": "c:1"}, "d": {"a": "d:1"}}
    (comp,) = _strongly_connected(graph)
    assert comp == ["a", "b", "c"]
    assert _a_cycle(graph, comp) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    graph = _import_graph()
    report = []
    for comp in _strongly_connected(graph):
        cycle = _a_cycle(graph, comp)
        steps = [f"{a} -> {b}  ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
        report.append(f"cycle among {', '.join(comp)}:\n    " + "\n    ".join(steps))
    assert not report, (
        "import cycles among gated_jax's modules (module- and function-level imports):\n  "
        + "\n  ".join(report)
    )


def test_no_function_local_import_in_cell():
    local = [
        f"{_rel(p)}:{node.lineno} imports {target} inside a function"
        for p in _files(("gated_jax/cell",))
        for node, target, is_local in _imports(p)
        if is_local
    ]
    assert not local, (
        "gated_jax/cell imports gated_jax modules at module level only (a local import "
        "hides a cycle or a layering problem):\n  " + "\n  ".join(local)
    )


# --------------------------------------------------------------------------------------------
# (d) wording
# --------------------------------------------------------------------------------------------


def test_no_coursework_references_outside_the_report():
    hits = []
    for path in _package_files():
        if _under(path, COURSEWORK_ALLOWED):
            continue
        for lineno, line in enumerate(_source(path).splitlines(), 1):
            if m := COURSEWORK.search(line):
                hits.append(f"{_rel(path)}:{lineno}: {m.group(0)!r} in {line.strip()[:90]!r}")
    assert not hits, (
        "coursework references outside gated_jax/lab and gated_jax/cli/report_cmd.py (cite "
        "papers and specs; docs/guide/homework.md maps questions to functions):\n  "
        + "\n  ".join(hits)
    )


# --------------------------------------------------------------------------------------------
# (e) one home for validators
# --------------------------------------------------------------------------------------------

# A function named as a check of one scalar kind: the private helpers that each module used to
# grow (`_is_int`, `_int`, `_flag`, `size`, ...). Their one definition is in a validation home.
SCALAR_CHECK_NAME = re.compile(
    r"^_*(is_|check_|as_|validate_)?(int|integer|bool|boolean|flag|size|positive(_int)?|"
    r"nonneg(ative)?(_int)?|float|finite(_float)?|real|number)$"
)


def _isinstance_of(node: ast.AST) -> tuple[str, set[str]] | None:
    """``(subject, type names)`` if ``node`` is ``isinstance(subject, T or (T1, T2, ...))``."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "isinstance"
        and len(node.args) == 2
    ):
        return None
    types = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
    names = {ast.unparse(t).rpartition(".")[2] for t in types}
    return ast.unparse(node.args[0]), names


NUMBER_TYPES = {
    "int",
    "integer",
    "signedinteger",
    "float",
    "floating",
    "Integral",
    "Real",
    "Number",
}


def _numeric_not_bool(expr: ast.BoolOp) -> bool:
    """Whether ``expr`` tests one subject both for ``bool`` and for numbers only (``int``,
    ``float``, NumPy's scalars): the hand-written "a number but not a bool" check that
    :mod:`gated_jax._validate` owns. A test against other types too (``(list, tuple, int)``) is
    a dispatch on the argument's form, not this check."""
    checks = [c for v in expr.values for n in ast.walk(v) if (c := _isinstance_of(n))]
    bools = {s for s, names in checks if names & {"bool", "bool_"}}
    numbers = {s for s, names in checks if names and names <= NUMBER_TYPES}
    return bool(bools & numbers)


def _checks_that_validate(nodes: list[ast.AST]) -> Iterator[ast.BoolOp]:
    """The number-not-bool tests that validate: in the test of an ``if`` whose body raises, or
    returned (a predicate such as ``_is_int``). Elsewhere the same test only picks a branch."""
    for node in nodes:
        if isinstance(node, ast.If) and any(isinstance(b, ast.Raise) for b in node.body):
            where: ast.AST | None = node.test
        elif isinstance(node, ast.Return):
            where = node.value
        else:
            continue
        for inner in ast.walk(where) if where is not None else ():
            if isinstance(inner, ast.BoolOp) and _numeric_not_bool(inner):
                yield inner
                break


def _validator_findings(path: Path) -> Iterator[str]:
    return _validator_findings_in(_tree(path), _rel(path))


def _validator_findings_in(tree: ast.Module, rel: str) -> Iterator[str]:
    nodes = list(ast.walk(tree))
    for fn in (n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        args = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if SCALAR_CHECK_NAME.match(fn.name) and args[:1] not in (["self"], ["cls"]):
            yield f"{rel}:{fn.lineno} defines the scalar check {fn.name}()"
        elif args[:2] == ["name", "value"] and any(isinstance(n, ast.Raise) for n in ast.walk(fn)):
            yield f"{rel}:{fn.lineno} defines the validator {fn.name}(name, value, ...)"
    for check in _checks_that_validate(nodes):
        yield f"{rel}:{check.lineno} writes the number-not-bool check {ast.unparse(check)[:80]}"


def test_validator_rules_catch_their_targets():
    src = (
        "def _is_int(v):\n    return isinstance(v, int) and not isinstance(v, bool)\n"
        "def size(name, value):\n    raise fail(name, value, 'x')\n"
        "def steps(n):\n"
        "    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):\n"
        "        raise fail('n', n, 'an int')\n"
        "def form(v):\n"  # a dispatch on the argument's form: not a validator
        "    if isinstance(v, (list, tuple, int)) and not isinstance(v, bool):\n"
        "        raise ValueError\n"
        "    if isinstance(v, int) and not isinstance(v, bool):\n"
        "        v = (v,)\n"
        "    return v\n"
        "class A:\n    def size(self):\n        return 1\n"
    )
    found = [f.split(" ", 1)[1] for f in _validator_findings_in(ast.parse(src), "example.py")]
    assert found == [
        "defines the scalar check _is_int()",
        "defines the scalar check size()",
        "writes the number-not-bool check isinstance(v, int) and (not isinstance(v, bool))",
        "writes the number-not-bool check "
        "isinstance(n, bool) or not isinstance(n, (int, np.integer))",
    ]
    assert not SCALAR_CHECK_NAME.match("check_norm") and not SCALAR_CHECK_NAME.match("sizes")


def test_validators_live_in_the_validation_module():
    """Argument validators are defined once, in ``gated_jax/_validate.py`` (generic checks) or
    ``gated_jax/shapes/_config.py`` (convolution arguments). Elsewhere, a module calls them (or
    raises ``_validate.fail`` for a rule of its own); it does not define a function with the
    validator signature ``(name, value, ...)`` that raises, a scalar check named like
    ``_is_int`` / ``_int`` / ``flag`` / ``size``, or the inline "number but not bool" test.
    """
    found = [
        finding
        for path in _package_files()
        if not _under(path, VALIDATION_HOMES)
        for finding in _validator_findings(path)
    ]
    stray = [p for p in _package_files() if p.stem in ("_checks", "_validators", "validators")]
    found += [f"{_rel(p)}: a second validation module" for p in stray]
    assert not found, (
        "validators outside gated_jax/_validate.py and gated_jax/shapes/_config.py:\n  "
        + "\n  ".join(found)
    )


# --------------------------------------------------------------------------------------------
# (f) the public API resolves
# --------------------------------------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _top_level_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Names bound at module level (also inside top-level ``if``/``try``), to their statement."""
    out: dict[str, ast.stmt] = {}
    body = list(tree.body)
    while body:
        node = body.pop(0)
        if isinstance(node, (ast.If, ast.Try)):
            body[:0] = [*node.body, *getattr(node, "orelse", [])]
            for handler in getattr(node, "handlers", []):
                body[:0] = handler.body
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
    return out


def _resolves(module: str, name: str, depth: int = 0) -> bool:
    """Whether ``from module import name`` finds a definition, following re-exports."""
    if depth > 10:
        return False
    if _module_file(f"{module}.{name}") is not None:
        return True
    path = _module_file(module)
    if path is None:
        return False
    node = _top_level_names(_tree(path)).get(name)
    if isinstance(node, ast.ImportFrom):
        source = _from_module(path, node)
        if source.split(".")[0] == "gated_jax":
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            return _resolves(source, original, depth + 1)
    return node is not None


def _literal(tree: ast.Module, name: str) -> ast.expr:
    node = _top_level_names(tree)[name]
    assert isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
    return node.value


def _public_names() -> tuple[list[str], dict[str, str]]:
    """``gated_jax.__all__`` (with ``*_LAZY`` expanded) and the lazy ``name -> module`` map."""
    tree = _tree(PKG / "__init__.py")
    lazy = ast.literal_eval(_literal(tree, "_LAZY"))
    names: list[str] = []
    for elt in _literal(tree, "__all__").elts:  # type: ignore[attr-defined]
        if isinstance(elt, ast.Starred):
            names += list(lazy)
        else:
            names.append(ast.literal_eval(elt))
    return names, lazy


def test_public_names_resolve():
    names, lazy = _public_names()
    tree = _tree(PKG / "__init__.py")
    bound = _top_level_names(tree)
    problems = [
        f"{n!r} is listed twice in __all__" for n in sorted(set(names)) if names.count(n) > 1
    ]
    for name in names:
        if name in lazy:
            module = lazy[name]
            ok = module == f"gated_jax.{name}" and _module_file(module) or _resolves(module, name)
            where = f"lazily from {module}"
        elif isinstance(node := bound.get(name), ast.ImportFrom):
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            ok, where = _resolves(node.module or "", original), f"from {node.module}"
        else:
            ok, where = name in bound, "in gated_jax/__init__.py"
        if not ok:
            problems.append(f"gated_jax.{name} (imported {where}) does not resolve")
    assert not problems, "gated_jax.__all__:\n  " + "\n  ".join(problems)


def test_resolution_follows_re_exports_and_can_fail():
    assert _resolves("gated_jax", "gated_scan")  # gated_jax -> gated_jax.cell -> its module
    assert _resolves("gated_jax.conv", "conv1d")
    assert not _resolves("gated_jax.conv", "no_such_name")
    assert not _resolves("gated_jax.no_such_module", "conv1d")
