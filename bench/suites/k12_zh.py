"""k12-zh: Chinese primary-school mathematics from real textbooks, with answers from programs.

The project's own k12 items come from templates it wrote. chalkbase (MIT; ``chalkbase==0.1.1``)
holds 2,068 item archetypes that a language model extracted from the Beijing Normal University
primary-school textbooks (grades 1-6), 1,313 of them with a Python ``solver_program``, slot ranges
and constraints. This task uses the ones a text-only model can answer and one number can grade:
``answer_form`` "number", a solver, and no figure in any of the textbook items they came from
(``parameter_constraints.observed.requires_figure_ratio`` 0): 118, of which 84 pass what follows.

Because a language model wrote them, nothing is trusted:

- each solver runs only in `bench.suites.sandbox` (a whitelisted AST, a separate process, a time
  limit), and must reproduce the answer of every one of its archetype's own ``rewritten_examples``
  from their parameters and return a number; an archetype that fails is excluded, with the reason,
  in the result's ``excluded``;
- an audit of generated items read by hand (docs/k12-zh-audit.md) found archetypes whose answer
  is wrong or whose question is ambiguous or unanswerable; they are excluded by
  ``k12_zh_exclude.toml``, each with its reason.

An item: an archetype's slots drawn with a seed (``int`` ranges with their step, ``decimal`` at
their places, ``fraction`` up to their largest denominator, ``choice``) until its constraints
hold, rendered into its template, answered by its solver. Asking: a Simplified-Chinese instruction
(step by step, the final number in ``\\boxed{}``) and the question as one user turn through the
model's chat template (`bench.suites.gen`), greedy; grading: the number in the last ``\\boxed{}``
(else the answer marker or the last number) exactly equal to the solver's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import sys
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np

from bench import datasets
from bench.errors import BenchError
from bench.suites import answers, gen
from bench.suites.gsm_symbolic import DONE, extract
from bench.suites.sandbox import Sandbox, SandboxError

SOURCE = "chalkbase"
MEMBER = "chalkbase/data/archetypes.json"
EXCLUDE = Path(__file__).with_name("k12_zh_exclude.toml")
GENERATOR_VERSION = 1
AUDIT_SEED = 20261207  # the seed of the audit's sample (docs/k12-zh-audit.md)
LIMIT_DIGITS = 30  # digits of the largest number a slot or an answer may have
TRIES = 1000  # draws of an archetype's slots until its constraints hold
INSTRUCTION = "请一步一步地解答下面的数学题，并把最终的数值答案（不带单位）写在 \\boxed{} 中，例如：\\boxed{42}。"
BLANK = "______"
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")
_BLANK_LIKE = re.compile(r"^(blank|ans|answer|result|quotient|remainder)(_?\w*)$")
_EXPR = re.compile(r"[\w\s+\-*/%().]+")


@dataclass(frozen=True)
class Archetype:
    id: str
    grade: int
    template: str
    slots: dict
    constraints: tuple[str, ...]
    solver: str


@functools.cache
def archetypes() -> list[dict]:
    raw = datasets.read(SOURCE, MEMBER)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"{MEMBER} in {datasets.wheel_path(SOURCE)} is not JSON ({e})") from None
    if not isinstance(data, list) or not all(isinstance(a, dict) and "id" in a for a in data):
        raise BenchError(f"{MEMBER} in {datasets.wheel_path(SOURCE)} is not a list of archetypes")
    return data


def eligible(a: dict) -> bool:
    """Answerable from text, graded by one number: a solver, answer_form number, no figure."""
    pc = a.get("parameter_constraints") or {}
    obs = pc.get("observed") or {} if isinstance(pc, dict) else {}
    return (
        a.get("answer_form") == "number"
        and isinstance(a.get("solver_program"), str)
        and obs.get("requires_figure_ratio") == 0
    )


@functools.cache
def excluded_by_audit(path: Path = EXCLUDE) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"cannot read the k12-zh exclusion table {path}: {e}") from None
    return {str(x["id"]): str(x["reason"]) for x in data.get("exclude", [])}


def _grade(a: dict) -> int:
    g = (a.get("difficulty_features") or {}).get("grade")
    if isinstance(g, int) and 1 <= g <= 6:
        return g
    obs = (a.get("parameter_constraints") or {}).get("observed") or {}
    gs = [x for x in obs.get("grades") or [] if isinstance(x, int)]
    return min(gs) if gs else 0


def typed(v, slot: dict):
    """A slot's value as the solver receives it: int, Decimal, Fraction, or the text of a choice."""
    t = slot.get("type")
    if t == "choice":
        return v
    text = str(v)
    try:
        if len(text) > 40 or "e" in text.lower():
            raise ValueError
        x = int(text) if t == "int" else Decimal(text) if t == "decimal" else Fraction(text)
    except (ValueError, InvalidOperation, ZeroDivisionError):
        raise SandboxError(f"{text[:40]!r} is not a {t} of a primary-school size") from None
    return _small(x)


def _small(x):
    """``x`` if its size is a primary-school number's (a crafted 1E+999999999 would take the
    host's memory once written out); SandboxError otherwise."""
    if isinstance(x, Decimal):
        if not x.is_finite() or abs(x.adjusted()) > LIMIT_DIGITS:
            raise SandboxError(f"the number {x:.3e} is out of range")
    elif isinstance(x, (int, Fraction)) and not isinstance(x, bool):
        f = Fraction(x)
        if max(f.numerator.bit_length(), f.denominator.bit_length()) > 4 * LIMIT_DIGITS:
            raise SandboxError("a number is out of range")
    return x


def _check_slots(slots) -> None:
    if not isinstance(slots, dict) or len(slots) > 50:
        raise SandboxError("its slots are not a table")
    for name, s in slots.items():
        if not isinstance(s, dict) or s.get("type") not in ("int", "decimal", "fraction", "choice"):
            raise SandboxError(f"slot {name} is not int, decimal, fraction or choice")
        if s["type"] == "choice":
            if not isinstance(s.get("options"), list) or not 0 < len(s["options"]) <= 1000:
                raise SandboxError(f"choice slot {name} has no options")
            continue
        for k in ("min", "max"):
            typed(s.get(k, 0 if s["type"] != "fraction" else "1"), {"type": "fraction"})
        for k, top in (("step", 10**6), ("places", 6), ("max_denominator", 1000)):
            v = s.get(k)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top
            ):
                raise SandboxError(f"slot {name} has {k} {v!r}")


def number(v) -> Fraction:
    """A solver's or an example's answer as an exact number; SandboxError if it is not one."""
    if isinstance(v, bool) or v is None or isinstance(v, (list, dict)):
        raise SandboxError(f"the answer is {type(v).__name__} {str(v)[:30]}, not a number")
    if isinstance(v, (int, Fraction)):
        return Fraction(_small(v))
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise SandboxError(f"the answer is {v}")
        return Fraction(_small(v))
    if isinstance(v, float):  # a float whose shortest decimal is short is taken as that decimal
        r = repr(v)
        if not re.fullmatch(r"-?\d+(\.\d{1,6})?", r):
            raise SandboxError(f"the answer is the float {r} (inexact)")
        return Fraction(r)
    try:
        return _small(answers.parse(str(v)))
    except ValueError:
        raise SandboxError(f"the answer is the text {str(v)[:30]!r}, not a number") from None


def vet(sb: Sandbox, a: dict) -> Archetype:
    """The archetype, if its solver runs and reproduces every example; SandboxError (why) if not."""
    pc = a.get("parameter_constraints") or {}
    slots = pc.get("slots") or {}
    _check_slots(slots)
    cons = tuple(str(c) for c in pc.get("constraints") or [])
    sb.load(a["id"], a["solver_program"])
    examples = a.get("rewritten_examples") or []
    if not examples:
        raise SandboxError("it has no examples to check the solver against")
    for k, ex in enumerate(examples):
        params = ex.get("params") or {}
        if set(params) != set(slots):
            raise SandboxError(
                f"example {k} has parameters {sorted(params)}, not the slots {sorted(slots)}"
            )
        want = number(ex.get("answer_value"))
        got = number(sb.call(a["id"], **{p: typed(v, slots[p]) for p, v in params.items()}))
        if got != want:
            raise SandboxError(
                f"the solver gives {answers.show(got)} for example {k}, which says {answers.show(want)}"
            )
    return Archetype(
        a["id"], _grade(a), str(a.get("template", "")), slots, cons, a["solver_program"]
    )


def catalogue(sb: Sandbox, audit: bool = True) -> tuple[list[Archetype], dict[str, str]]:
    """The eligible archetypes that pass, and the excluded ones with why (audit first; with
    ``audit`` False the audit's exclusions are kept in, as the audit itself drew them)."""
    audit = excluded_by_audit() if audit else {}
    good, bad = [], {}
    for a in archetypes():
        if not eligible(a):
            continue
        if a["id"] in audit:
            bad[a["id"]] = f"audit: {audit[a['id']]}"
            continue
        try:
            good.append(vet(sb, a))
        except SandboxError as e:
            bad[a["id"]] = str(e)
    return good, bad


def draw(slot: dict, rng: random.Random):
    """One slot value (the text the template shows): chalkbase's slot semantics, this code."""
    t = slot["type"]
    if t == "choice":
        opts = slot.get("options") or []
        if not isinstance(opts, list) or not opts:
            raise SandboxError("a choice slot without options")
        return opts[rng.randrange(len(opts))]
    if t == "int":
        lo, hi, step = int(slot["min"]), int(slot["max"]), int(slot.get("step") or 1)
        if hi < lo or step < 1:
            raise SandboxError(f"an int slot from {lo} to {hi} by {step}")
        return str(lo + step * rng.randrange((hi - lo) // step + 1))
    if t == "decimal":
        places = int(slot.get("places", 1))
        scale = 10**places
        lo, hi = int(Decimal(str(slot["min"])) * scale), int(Decimal(str(slot["max"])) * scale)
        if hi < lo or not 0 <= places <= 6:
            raise SandboxError("a decimal slot with an empty range")
        return format(Decimal(rng.randint(lo, hi)) / scale, "f")
    lo, hi = Fraction(str(slot.get("min", "0"))), Fraction(str(slot.get("max", "1")))
    md = max(2, int(slot.get("max_denominator", 10)))
    for _ in range(200):
        d = rng.randint(2, md)
        f = Fraction(rng.randint(int(lo * d), int(hi * d)), d)
        if lo <= f <= hi:
            return f"{f.numerator}/{f.denominator}"
    raise SandboxError("a fraction slot whose range holds no fraction")


def render(sb: Sandbox, template: str, params: dict, values: dict) -> str:
    """``{slot}`` replaced by its text, ``{a + b}`` computed, answer blanks drawn as a line;
    SandboxError when a placeholder names nothing."""

    def sub(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        name = m.group(1).strip()
        if name.isdigit() or re.search(r"\\[a-zA-Z]+$", m.string[: m.start()]):
            return m.group(0)  # LaTeX's {2}, \text{...}
        if name in params:
            return str(params[name])
        if _BLANK_LIKE.match(name):
            return BLANK
        if _EXPR.fullmatch(name) and re.search(r"[+\-*/%]", name):
            v = sb.eval(name, values)
            return answers.show(number(v)) if not isinstance(v, str) else v
        raise SandboxError(f"the template's placeholder {{{name}}} names no slot")

    text = template
    for _ in range(3):  # a choice may hold another slot's placeholder
        new = _PLACEHOLDER.sub(sub, text)
        if new == text:
            break
        text = new
    return text


def instantiate(sb: Sandbox, a: Archetype, key: str) -> dict:
    """One item of ``a`` drawn with ``key``: question, answer, parameters."""
    rng = random.Random(key)
    last = "no draw met the constraints"
    for _ in range(TRIES):
        params = {k: draw(s, rng) for k, s in a.slots.items()}
        values = {k: typed(v, a.slots[k]) for k, v in params.items()}
        try:
            if not all(sb.eval(c, values) for c in a.constraints):
                continue
            answer = number(sb.call(a.id, **values))
            question = render(sb, a.template, params, values)
        except SandboxError as e:
            last = str(e)
            continue
        return {"question": question, "answer": answer, "params": params}
    raise SandboxError(f"{a.id}: gave up after {TRIES} draws ({last})")


def generate(
    sb: Sandbox, n: int, seed: int, audit: bool = True
) -> tuple[list[dict], dict[str, str]]:
    """``n`` items (0: one per archetype), archetypes in the order of SHA-256(seed:id), taken in
    turn; and the archetypes excluded, with why."""
    good, bad = catalogue(sb, audit)
    if n < 0:
        raise BenchError(f"k12-zh: n must be 0 (one per archetype) or more (got {n})")
    order = sorted(good, key=lambda a: hashlib.sha256(f"{seed}:{a.id}".encode()).digest())
    problems: list[dict] = []
    k = 0
    while order and len(problems) < (n or len(order)) and k < 50 * max(n, len(order)):
        a, j = order[k % len(order)], k // len(order)
        k += 1
        if a.id in bad:
            continue
        try:
            item = instantiate(sb, a, f"k12-zh:{seed}:{a.id}:{j}")
        except SandboxError as e:
            bad[a.id] = str(e)
            continue
        problems.append(
            {"id": f"{a.id}#{j}", "archetype": a.id, "grade": a.grade, "cluster": a.id, **item}
        )
    return problems, bad


def fingerprint(**_) -> str:
    h = hashlib.sha256(json.dumps(datasets.source(SOURCE), sort_keys=True).encode())
    h.update(EXCLUDE.read_bytes())
    h.update(f"generator {GENERATOR_VERSION} {INSTRUCTION}".encode())
    return h.hexdigest()


def run(ctx, n: int = 120, seed: int = 0, max_tokens: int = 384, batch: int = 8) -> dict:
    """``n`` items answered greedily; accuracy overall and by grade."""
    try:
        with Sandbox() as sb:
            problems, bad = generate(sb, n, seed)
    except datasets.Unavailable as e:
        return {"skipped": str(e)}
    convs = [[{"role": "user", "content": f"{INSTRUCTION}\n\n{p['question']}"}] for p in problems]
    texts = gen.answer(ctx, convs, max_tokens=max_tokens, batch=batch, task="k12-zh", done=DONE)
    items = []
    for p, text in zip(problems, texts):
        got = extract(text)
        items.append(
            {
                **p,
                "answer": answers.show(p["answer"]),
                "language": "zh",
                "output": text,
                "extracted": None if got is None else answers.show(got),
                "correct": got is not None and got == p["answer"],
            }
        )
    grades = sorted({x["grade"] for x in items})
    return {
        "score": float(np.mean([x["correct"] for x in items])) if items else 0.0,
        "chance": 0.0,
        "n": len(items),
        "archetypes": len({x["archetype"] for x in items}),
        "by_grade": {
            str(g): float(np.mean([x["correct"] for x in items if x["grade"] == g])) for g in grades
        },
        "excluded": bad,
        "license": datasets.source(SOURCE)["license"],
        "items": items,
    }


def main(argv: list[str]) -> int:
    """``python -m bench.suites.k12_zh sample [N] [SEED]``: the audit's sample as JSON lines
    (drawn as the audit drew it: with the archetypes the audit excluded)."""
    if argv[:1] != ["sample"]:
        print("usage: python -m bench.suites.k12_zh sample [N] [SEED]", file=sys.stderr)
        return 2
    n, seed = (
        (int(argv[1]) if len(argv) > 1 else 60),
        (int(argv[2]) if len(argv) > 2 else AUDIT_SEED),
    )
    try:
        with Sandbox() as sb:
            problems, _ = generate(sb, n, seed, audit=False)
    except (BenchError, datasets.Unavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        row = {
            "id": p["id"],
            "grade": p["grade"],
            "question": p["question"],
            "answer": answers.show(p["answer"]),
        }
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
