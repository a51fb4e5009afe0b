"""The boundaries ARCHITECTURE.md draws hold in the code (issue 31, "the boundary true").

(a) Only edge_llm/llama/ talks to llama.cpp: no other module of an installed package imports
    ``llama_cpp`` or touches a C symbol (``gguf_*``, ``ggml_*``, ``llama_*`` that no first-party
    Python defines: ``binding.C.llama_*``, ``binding.lib().ggml_*``...).
(b) No upward import inside edge_llm: the `layers` block of ARCHITECTURE.md orders edge_llm's
    modules and packages, and each imports only from its own layer or the ones below.
(c) The `imports` block of ARCHITECTURE.md, the edges between top-level packages, is exactly what
    the packages import.

Why: a boundary that is only written down drifts; one that a test reads from the same text as
the reader, and checks against the source, does not. Every import counts (at module level or
inside a function: a lazy import is still a dependency) and the judge is `ast` on the source.
Each judge first runs on a small tree with a violation planted, to show that it catches one.
Not judged: tests/ (independent judges call llama.cpp and import anything on purpose) and
scripts/ for (a) (not installed; runtime_overhead's raw llama.cpp loop is the baseline it
measures edge_llm against).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from pathlib import Path

from tests.fixtures.imports import imported_names

ROOT = Path(__file__).resolve().parents[2]
C_SYMBOL = re.compile(r"(gguf|ggml|llama)_\w+")


# --- reading the source ---------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def packages(root: Path) -> list[str]:
    """The top-level first-party packages; tests/ judges them all and is not one of them."""
    return sorted(
        p.name for p in root.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"
    )


def installed(root: Path) -> list[str]:
    """The packages pyproject.toml installs (setuptools' find patterns)."""
    conf = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p for p in packages(root) if any(fnmatch.fnmatch(p, pat) for pat in patterns)]


def modules(root: Path, pkgs: list[str]) -> dict[str, Path]:
    return {
        module_name(path, root): path for pkg in pkgs for path in sorted((root / pkg).rglob("*.py"))
    }


# --- (a) llama.cpp behind edge_llm/llama/ -----------------------------------------------------


def python_names(files: list[Path]) -> set[str]:
    """Names first-party Python defines (functions, classes, assigned names and attributes): an
    attribute named like a C symbol that is one of these is Python (``arch.gguf_name``)."""
    out = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out.add(node.name)
            elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
                out.add(node.id if isinstance(node, ast.Name) else node.attr)
    return out


def c_calls(path: Path, root: Path, python: set[str]) -> list[str]:
    """What in one file reaches llama.cpp directly: an import of llama_cpp, or an attribute
    named like a C symbol that no first-party Python defines."""
    where = path.relative_to(root).as_posix()
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        out += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] == "llama_cpp"]
        if (
            isinstance(node, ast.Attribute)
            and C_SYMBOL.fullmatch(node.attr)
            and node.attr not in python
        ):
            out.append((node.lineno, node.attr))
    return [f"{where}:{line}: {what}" for line, what in sorted(out)]


def c_calls_outside(root: Path, pkgs: list[str], inside: str) -> list[str]:
    """C calls in the packages ``pkgs`` outside the folder ``inside``."""
    files = [p for pkg in pkgs for p in sorted((root / pkg).rglob("*.py"))]
    python = python_names(files)
    return [
        hit
        for p in files
        if not p.is_relative_to(root / inside)
        for hit in c_calls(p, root, python)
    ]


def test_the_c_call_judge_catches_a_planted_call(tmp_path):
    (tmp_path / "pkg" / "llama").mkdir(parents=True)
    (tmp_path / "pkg" / "llama" / "binding.py").write_text("import llama_cpp\nlib.ggml_free(0)\n")
    (tmp_path / "pkg" / "arch.py").write_text("def gguf_name(x):\n    return x\n")
    (tmp_path / "pkg" / "ok.py").write_text("arch.gguf_name('a')\n")
    assert c_calls_outside(tmp_path, ["pkg"], "pkg/llama") == []
    (tmp_path / "pkg" / "bad.py").write_text(
        "from llama_cpp import Llama\n\ndef f(b):\n    b.C.llama_model_free(0)\n"
        "    return b.lib().gguf_get_n_kv\n"
    )
    assert c_calls_outside(tmp_path, ["pkg"], "pkg/llama") == [
        "pkg/bad.py:1: import llama_cpp",
        "pkg/bad.py:4: llama_model_free",
        "pkg/bad.py:5: gguf_get_n_kv",
    ]


def test_only_edge_llm_llama_talks_to_llama_cpp():
    pkgs = installed(ROOT)
    assert {"edge_llm", "convert", "bench"} <= set(pkgs)
    inside = c_calls_outside(ROOT, ["edge_llm"], "edge_llm/nothing")  # the judge sees them there
    assert any(h.startswith("edge_llm/llama/") for h in inside)
    assert c_calls_outside(ROOT, pkgs, "edge_llm/llama") == []


# --- the map's machine-readable blocks --------------------------------------------------------


def block(text: str, name: str) -> list[str]:
    """The lines of the fenced block ```NAME of a markdown text (comments and blanks dropped)."""
    m = re.search(rf"^```{name}\n(.*?)^```", text, re.M | re.S)
    assert m, f"ARCHITECTURE.md has no ```{name} block"
    return [ln.split("#")[0].strip() for ln in m[1].splitlines() if ln.split("#")[0].strip()]


def layers(text: str) -> list[tuple[str, list[str]]]:
    """(layer name, its units) from the top layer down: ``name: unit unit ...``."""
    out = []
    for line in block(text, "layers"):
        name, _, units = line.partition(":")
        out.append((name.strip(), units.split()))
    return out


def drawn_edges(text: str) -> set[tuple[str, str]]:
    out = set()
    for line in block(text, "imports"):
        a, arrow, b = line.partition("->")
        assert arrow, f"not an edge: {line!r}"
        out |= {(a.strip(), t.strip()) for t in b.split(",")}
    return out


# --- (b) edge_llm's layers --------------------------------------------------------------------


def unit(mod: str, pkg: str) -> str | None:
    """The layer unit of a module of ``pkg``: its top-level module or subpackage under ``pkg``
    (``__init__`` for the package itself); None outside ``pkg``."""
    parts = mod.split(".")
    if parts[0] != pkg:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(root: Path, pkg: str, order: list[tuple[str, list[str]]]) -> list[str]:
    """Imports in ``pkg`` from a higher layer of ``order`` (top first); every unit of ``pkg``
    must be in exactly one layer."""
    mods = modules(root, [pkg])
    units = {unit(m, pkg) for m in mods}
    listed = [u for _, us in order for u in us]
    assert sorted(listed) == sorted(units), (
        f"the layers must list each unit of {pkg} once: missing "
        f"{sorted(units - set(listed))}, unknown or twice "
        f"{sorted({u for u in listed if u not in units or listed.count(u) > 1})}"
    )
    level = {u: len(order) - i for i, (_, us) in enumerate(order) for u in us}
    name = {u: layer for layer, us in order for u in us}
    out = []
    for mod, path in mods.items():
        here = unit(mod, pkg)
        for imp in imported_names(mod, path, set(mods)):
            there = unit(imp, pkg)
            if there is not None and level[there] > level[here]:
                out.append(f"{mod} ({name[here]}) imports {imp} ({name[there]})")
    return sorted(out)


def test_the_layer_judge_catches_an_upward_import(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "low").mkdir(parents=True)
    for f in ("__init__.py", "high.py", "low/__init__.py", "low/a.py"):
        (pkg / f).write_text("")
    (pkg / "high.py").write_text("from p.low import a\n")
    order = [("top", ["high"]), ("bottom", ["low", "__init__"])]
    assert upward_imports(tmp_path, "p", order) == []
    (pkg / "low" / "a.py").write_text("def f():\n    from p import high\n")
    assert upward_imports(tmp_path, "p", order) == ["p.low.a (bottom) imports p.high (top)"]


def test_no_upward_import_in_edge_llm():
    order = layers((ROOT / "ARCHITECTURE.md").read_text())
    assert len(order) > 3 and ["llama"] in [us for _, us in order], order
    assert upward_imports(ROOT, "edge_llm", order) == []


# --- (c) the map's package edges ----------------------------------------------------------------


def package_edges(root: Path) -> set[tuple[str, str]]:
    """(importer, imported) for each pair of top-level packages one imports from the other."""
    pkgs = packages(root)
    mods = modules(root, pkgs)
    out = set()
    for mod, path in mods.items():
        for imp in imported_names(mod, path, set(mods)):
            a, b = mod.split(".")[0], imp.split(".")[0]
            if b in pkgs and a != b:
                out.add((a, b))
    return out


def test_the_edge_judge_sees_a_new_package_edge(tmp_path):
    for f in ("tests/__init__.py", "a/__init__.py", "b/__init__.py", "b/m.py"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).write_text("")
    (tmp_path / "tests" / "t.py").write_text("import a\nimport b\n")
    assert package_edges(tmp_path) == set()
    (tmp_path / "b" / "m.py").write_text("def f():\n    from a import x\n")
    assert package_edges(tmp_path) == {("b", "a")}
    assert drawn_edges("```imports\nb -> a  # why\nc -> a, b\n```\n") == {
        ("b", "a"),
        ("c", "a"),
        ("c", "b"),
    }


def test_the_map_draws_exactly_the_package_imports():
    drawn = drawn_edges((ROOT / "ARCHITECTURE.md").read_text())
    real = package_edges(ROOT)
    assert {"edge_llm", "convert", "bench", "scripts"} <= set(packages(ROOT))
    assert ("convert", "edge_llm") in real  # the walk really sees imports
    assert sorted(real - drawn) == [], "imports ARCHITECTURE.md does not draw"
    assert sorted(drawn - real) == [], "edges ARCHITECTURE.md draws that nothing imports"
