"""The process that runs chalkbase's solver programs for `bench.suites.sandbox`, and nothing else.

Started by the sandbox as ``python -I -S sandbox_worker.py`` (no site-packages, no environment, no
import of edge-llm), with its address space capped; it reads one JSON request a line on stdin and
answers one JSON line on stdout. The code it runs has already passed the sandbox's AST whitelist;
here it runs with a fixed set of builtins, ``math``/``fractions``/``decimal`` as plain namespaces
of their public names, and decimal arithmetic at 50 digits (what chalkbase's own runner uses). A
program that loops forever is killed by the sandbox's timeout; one that exhausts memory gets a
MemoryError here (or dies, and the sandbox starts another worker).

Requests: ``{"op": "load", "id", "src"}`` defines a program's ``solve``; ``{"op": "call", "id",
"args"}`` calls it; ``{"op": "eval", "expr", "env"}`` evaluates an expression (a constraint, a
template's ``{a + b}``). Values travel tagged: ``["int", "12"]``, ``["dec", "1.5"]``,
``["frac", "1/2"]``, ``["float", "0.1"]``, ``["str", "x"]``, ``["bool", true]``, ``["none", null]``,
``["list", [...]]``; ``encode`` and ``decode`` here are the one writer and reader of them, the
sandbox's too (importing this module only defines things: the memory cap comes with ``main``).
"""

import builtins
import decimal
import json
import math
import os
import sys
import types
from decimal import Decimal
from fractions import Fraction

ROUNDING = {k: getattr(decimal, k) for k in dir(decimal) if k.startswith("ROUND_")}
MODULES = {
    "math": types.SimpleNamespace(
        **{k: getattr(math, k) for k in dir(math) if not k.startswith("_")}
    ),
    "fractions": types.SimpleNamespace(Fraction=Fraction),
    "decimal": types.SimpleNamespace(Decimal=Decimal, **ROUNDING),
}
BUILTINS = {
    n: getattr(builtins, n)
    for n in (
        "abs min max sum range len int str bool float round divmod sorted list tuple dict set "
        "enumerate zip all any map filter isinstance pow reversed ValueError ZeroDivisionError "
        "ArithmeticError TypeError Exception"
    ).split()
}


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name not in MODULES:
        raise ImportError(f"import of {name} is not allowed")
    return MODULES[name]


BUILTINS["__import__"] = _import
GLOBALS = {"Decimal": Decimal, "Fraction": Fraction, "math": MODULES["math"], **ROUNDING}
SOLVERS: dict = {}


def encode(x, items: int | None = None, chars: int | None = None):
    """A value as it travels (tagged, above); the sandbox sends its arguments with this too, and
    the worker caps what it answers at ``items`` list items and ``chars`` characters a string."""
    if x is None:
        return ["none", None]
    if isinstance(x, bool):
        return ["bool", x]
    if isinstance(x, int):
        return ["int", str(x)]
    if isinstance(x, Fraction):
        return ["frac", f"{x.numerator}/{x.denominator}"]
    if isinstance(x, Decimal):
        return ["dec", format(x, "f")]
    if isinstance(x, float):
        return ["float", repr(x)]
    if isinstance(x, (list, tuple)):
        return ["list", [encode(i, items, chars) for i in x[:items]]]
    return ["str", str(x)[:chars]]


SCALARS = {"int": int, "dec": Decimal, "frac": Fraction, "float": float, "str": str, "bool": bool}


def decode(t):
    """A tagged value as Python's (the sandbox's reader too: it turns what this raises on a
    malformed one into its own error)."""
    kind, v = t
    if kind == "list":
        return [decode(i) for i in v]
    if kind == "none":
        return None
    return SCALARS[kind](v)


def handle(req: dict):
    with decimal.localcontext() as c:
        c.prec = 50
        if req["op"] == "load":
            ns = {"__builtins__": BUILTINS, **GLOBALS}
            exec(compile(req["src"], "<solver>", "exec"), ns)
            if not callable(ns.get("solve")):
                raise ValueError("the program defines no solve()")
            SOLVERS[req["id"]] = ns["solve"]
            return None
        if req["op"] == "call":
            args = {k: decode(v) for k, v in req["args"].items()}
            return SOLVERS[req["id"]](**args)
        if req["op"] == "eval":
            env = {
                "__builtins__": BUILTINS,
                **GLOBALS,
                **{k: decode(v) for k, v in req["env"].items()},
            }
            return eval(compile(req["expr"], "<expr>", "eval"), env)
    raise ValueError(f"unknown request {req['op']!r}")


def _cap_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    _cap_memory()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = open(os.devnull, "w")
    for line in sys.stdin:
        try:
            reply = {"ok": True, "value": encode(handle(json.loads(line)), items=100, chars=1000)}
        except BaseException as e:  # noqa: BLE001 - every failure of the program is an answer
            if isinstance(e, KeyboardInterrupt):
                raise
            reply = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        out.write(json.dumps(reply, ensure_ascii=False) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
