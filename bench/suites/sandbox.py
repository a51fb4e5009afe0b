"""A sandbox for the solver programs of chalkbase's archetypes: checked, then run elsewhere.

k12-zh takes its answers from Python programs that a language model wrote into a data file
(``def solve(a, b): return a * b``). They are data, so they are treated as hostile:

1. **Checked here.** The program is parsed and every node must belong to a whitelisted subset of
   Python (functions, assignments, if/for/while, arithmetic, comparisons, comprehensions, calls,
   lists and dicts); no name or attribute may start with ``_``; attributes come from a short list
   (``numerator``, ``quantize``, ``append``...: no ``format``, whose fields reach attributes); only
   ``math``, ``fractions`` and ``decimal`` may be imported, and only their public names; ``eval``,
   ``exec``, ``open``, ``getattr``, ``globals`` and their like are refused by name.
2. **Run elsewhere.** A checked program runs in a worker process (``sandbox_worker.py``:
   ``python -I -S``, a fixed set of builtins, 1 GiB of address space) with a time limit per call;
   a program that loops forever is killed with its worker, and the next call starts a fresh one.

Every refusal and failure is a :class:`SandboxError` whose message is one line.
"""

from __future__ import annotations

import ast
import json
import os
import re
import select
import subprocess
import sys
import time
from decimal import InvalidOperation
from pathlib import Path

from bench.suites.sandbox_worker import decode as decode_value
from bench.suites.sandbox_worker import encode

WORKER = Path(__file__).with_name("sandbox_worker.py")
TIMEOUT = 2.0  # seconds a call may run
MAX_SOURCE = 20_000
MODULES = {"math", "fractions", "decimal"}
DENY = {
    "eval", "exec", "open", "compile", "globals", "locals", "vars", "getattr", "setattr",
    "delattr", "input", "breakpoint", "type", "object", "super", "help", "dir", "memoryview",
    "bytearray", "bytes", "classmethod", "staticmethod", "property", "exit", "quit", "print",
    "id", "hash", "iter", "next", "callable", "issubclass", "format", "repr", "ascii", "chr",
    "ord", "slice", "frozenset", "hasattr",
}  # fmt: skip
ATTRS = {
    # numbers
    "numerator", "denominator", "limit_denominator", "as_integer_ratio", "is_integer",
    "quantize", "normalize", "to_integral_value", "to_integral", "sqrt", "real", "imag",
    # text
    "split", "strip", "lstrip", "rstrip", "join", "replace", "startswith", "endswith", "isdigit",
    "lower", "upper", "count", "find", "index",
    # containers
    "append", "extend", "insert", "pop", "remove", "sort", "reverse", "add", "update", "get",
    "items", "keys", "values", "copy",
}  # fmt: skip
MODULE_NAMES = {
    "math": {
        "ceil", "floor", "sqrt", "isqrt", "gcd", "lcm", "pi", "e", "fabs", "trunc", "prod",
        "comb", "perm", "factorial", "log", "log10", "log2", "exp", "pow", "isclose", "fsum",
        "sin", "cos", "tan", "radians", "degrees", "inf", "hypot", "modf", "copysign",
    },
    "fractions": {"Fraction"},
    "decimal": {"Decimal", "ROUND_HALF_UP", "ROUND_HALF_EVEN", "ROUND_HALF_DOWN", "ROUND_DOWN",
                "ROUND_UP", "ROUND_FLOOR", "ROUND_CEILING", "ROUND_05UP"},
}  # fmt: skip
ATTRS |= MODULE_NAMES["math"]
_NODES = (
    ast.Module, ast.Expression, ast.FunctionDef, ast.Lambda, ast.arguments, ast.arg,
    ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.If, ast.For, ast.While,
    ast.Break, ast.Continue, ast.Pass, ast.Expr, ast.Raise, ast.Assert,
    ast.Import, ast.ImportFrom, ast.alias,
    ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.Starred,
    ast.List, ast.Tuple, ast.Dict, ast.Set,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword,
    ast.JoinedStr, ast.FormattedValue,
    ast.Load, ast.Store, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip


class SandboxError(Exception):
    """A program refused or failed; the message says why, in one line."""


def check(src: str, mode: str = "exec") -> ast.AST:
    """``src`` parsed, if every part of it is allowed; SandboxError naming the first that is not."""
    if not isinstance(src, str) or len(src) > MAX_SOURCE:
        raise SandboxError("the program is not a text of reasonable length")
    try:
        tree = ast.parse(src, mode=mode)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise SandboxError(f"the program does not parse ({type(e).__name__})") from None
    for node in ast.walk(tree):
        _node(node)
    return tree


def _node(node: ast.AST) -> None:
    where = f" (line {getattr(node, 'lineno', '?')})"
    if not isinstance(node, _NODES):
        raise SandboxError(f"{type(node).__name__} is not allowed in a solver{where}")
    if isinstance(node, ast.Name) and (node.id.startswith("_") or node.id in DENY):
        raise SandboxError(f"the name {node.id} is not allowed in a solver{where}")
    if isinstance(node, (ast.FunctionDef, ast.arg)):
        name = node.name if isinstance(node, ast.FunctionDef) else node.arg
        if name.startswith("_") or (isinstance(node, ast.FunctionDef) and node.decorator_list):
            raise SandboxError(f"function {name} is not allowed in a solver{where}")
    if isinstance(node, ast.Attribute):
        if node.attr not in ATTRS or not isinstance(node.ctx, ast.Load):
            raise SandboxError(f"the attribute .{node.attr} is not allowed in a solver{where}")
    if isinstance(node, ast.Import):
        bad = [a.name for a in node.names if a.name not in MODULES or a.asname]
        if bad:
            raise SandboxError(f"import {', '.join(bad)} is not allowed in a solver{where}")
    if isinstance(node, ast.ImportFrom):
        allowed = MODULE_NAMES.get(node.module or "", set())
        bad = [a.name for a in node.names if a.name not in allowed or a.asname]
        if node.level or not allowed or bad:
            raise SandboxError(
                f"from {node.module} import {', '.join(bad) or '...'} is not allowed in a solver{where}"
            )
    if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
        spec = node.format_spec  # e.g. ".2f"; a width in the millions would be a memory bomb
        parts = spec.values if isinstance(spec, ast.JoinedStr) else []
        text = parts[0].value if len(parts) == 1 and isinstance(parts[0], ast.Constant) else None
        if (
            not isinstance(text, str)
            or len(text) > 8
            or any(int(d) > 100 for d in re.findall(r"\d+", text))
        ):
            raise SandboxError(f"this f-string format is not allowed in a solver{where}")
    if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, complex)):
        raise SandboxError(
            f"{type(node.value).__name__} constants are not allowed in a solver{where}"
        )


def decode(t):
    """A value the worker sent back (SandboxError when it is not one)."""
    try:
        return decode_value(t)
    except (TypeError, ValueError, KeyError, InvalidOperation, ZeroDivisionError):
        raise SandboxError("the worker sent back something that is not a value") from None


class Sandbox:
    """A worker process that runs checked programs; use as a context manager."""

    def __init__(self, timeout: float = TIMEOUT):
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.programs: dict[str, str] = {}
        self.loaded: set[str] = set()
        self._buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
            self.proc = None
        self.loaded.clear()
        self._buf = b""

    def load(self, pid: str, src: str) -> None:
        """Check ``src`` and define its ``solve`` as program ``pid``; SandboxError if refused."""
        tree = check(src)
        if not any(isinstance(n, ast.FunctionDef) and n.name == "solve" for n in tree.body):
            raise SandboxError("the program defines no solve()")
        self.programs[pid] = src
        self.loaded.discard(pid)
        self._ensure(pid)

    def call(self, pid: str, **args):
        """``solve(**args)`` of program ``pid``."""
        self._ensure(pid)
        return decode(
            self._ask({"op": "call", "id": pid, "args": {k: encode(v) for k, v in args.items()}})
        )

    def eval(self, expr: str, env: dict):
        """An expression (checked as a program is) over ``env``."""
        check(expr, mode="eval")
        return decode(
            self._ask({"op": "eval", "expr": expr, "env": {k: encode(v) for k, v in env.items()}})
        )

    def _ensure(self, pid: str) -> None:
        if pid not in self.loaded:
            self._ask({"op": "load", "id": pid, "src": self.programs[pid]})
            self.loaded.add(pid)

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.loaded.clear()
        self._buf = b""

    def _ask(self, req: dict):
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()
            if req["op"] == "call" and req["id"] not in self.loaded:
                self._ensure(req["id"])
        try:
            self.proc.stdin.write(json.dumps(req, ensure_ascii=False).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            raise SandboxError("the sandbox worker died") from None
        reply = self._line()
        if not reply.get("ok"):
            raise SandboxError(str(reply.get("error", "failed"))[:200].replace("\n", " "))
        return reply.get("value", ["none", None])

    def _line(self) -> dict:
        deadline = time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.close()
                raise SandboxError(f"the program ran past {self.timeout:g} s and was stopped")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.close()
                raise SandboxError("the program ended its worker (memory or a crash)")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "the worker sent back an unreadable line"}
