"""An app embeds `edge_llm` alone: it must never import `convert` or `bench`."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import edge_llm

PKG = Path(edge_llm.__file__).parent


def test_importing_every_runtime_module_loads_neither_convert_nor_bench():
    code = (
        "import pkgutil, sys, edge_llm\n"
        "for m in pkgutil.walk_packages(edge_llm.__path__, 'edge_llm.'):\n"
        "    if m.name != 'edge_llm.__main__': __import__(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('convert', 'bench'))\n"
        "print(len(list(pkgutil.walk_packages(edge_llm.__path__))), bad)\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[0]) >= 10  # it did walk the package


def test_no_runtime_module_mentions_convert_or_bench_in_an_import():
    # The CLI may import a command's package inside that command; nothing else may at all.
    offenders = []
    for path in PKG.rglob("*.py"):
        if "cli" in path.relative_to(PKG).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("convert", "bench")
            ]
    assert offenders == []


def test_the_walk_sees_the_cli_modules():
    names = {m.name for m in pkgutil.walk_packages(edge_llm.__path__, "edge_llm.")}
    assert {
        "edge_llm.cli.run",
        "edge_llm.cli.chat",
        "edge_llm.model",
        "edge_llm.llama.backend",
    } <= names
