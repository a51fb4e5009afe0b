"""k12-math: graded (grades 1-6) arithmetic and word problems in English and Chinese.

The templates are data (``k12_math.toml``); this module draws their numbers, deterministically
per seed, and computes each answer exactly (``fractions.Fraction``, never floats). Problems are
balanced over (grade, language) pairs, taken in turn; within a grade the template is drawn.

The model sees a few-shot prompt in the problem's language (``[prompt.en]``/``[prompt.zh]``) and
continues it greedily until a newline; ``answers.extract`` reads the number it gave, which must
equal the answer exactly. Determinism: every draw comes from ``random.Random(str).random()``,
whose seeding (SHA-512 of the string) and ``random()`` Python guarantees across versions.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import re
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from bench.errors import BenchError
from bench.suites import answers, gen

DATA = Path(__file__).with_name("k12_math.toml")
GENERATOR_VERSION = 1  # bump when the drawing procedure changes
LANGUAGES = ("en", "zh")
GRADES = (1, 2, 3, 4, 5, 6)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Problem:
    id: str
    grade: int
    language: str
    kind: str
    question: str
    answer: Fraction

    @property
    def answer_text(self) -> str:
        return answers.show(self.answer)


# --- exact expressions ---------------------------------------------------------------------------
_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: lambda a, b: a % b,
}


def evaluate(expr: str, env: dict[str, Fraction]) -> Fraction:
    """``expr`` (numbers, names, + - * / % and parentheses) computed exactly over ``env``."""

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return Fraction(str(node.value))
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ValueError(f"unknown variable {node.id!r}")
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError(f"unsupported expression {ast.unparse(node)!r}")

    try:
        return ev(ast.parse(expr.strip(), mode="eval"))
    except SyntaxError:
        raise ValueError(f"cannot parse {expr!r}") from None
    except ZeroDivisionError:
        raise ValueError(f"{expr!r} divides by zero") from None


# --- templates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    grade: int
    kind: str
    text: dict[str, str]
    vars: dict[str, str]
    answer: str
    id: str = ""
    objects: tuple[tuple[str, str, str], ...] = ()  # (English plural, Chinese noun, measure word)

    def render(self, lang: str, env: dict[str, Fraction], name: str, obj: int = 0) -> str:
        """The question in ``lang`` with ``env``'s numbers, ``name`` and object number ``obj``."""
        values = {k: answers.show(v) for k, v in env.items()} | {"name": name}
        if self.objects:
            en, zh, unit = self.objects[obj]
            values |= {"obj": en if lang == "en" else zh, "unit": unit}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text[lang])


def _uniform(rng: random.Random, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] from ``rng.random()`` alone (stable across Python versions)."""
    return lo + min(hi - lo, int(rng.random() * (hi - lo + 1)))


def draw(t: Template, rng: random.Random) -> dict[str, Fraction]:
    env: dict[str, Fraction] = {}
    for name, spec in t.vars.items():
        if spec.startswith("="):
            env[name] = evaluate(spec[1:], env)
        elif "|" in spec:
            options = [Fraction(x.strip()) for x in spec.split("|")]
            env[name] = options[_uniform(rng, 0, len(options) - 1)]
        else:
            lo, _, hi = spec.partition("..")
            a, b = evaluate(lo, env), evaluate(hi, env)
            if a.denominator != 1 or b.denominator != 1 or a > b:
                raise ValueError(f"range {spec!r} of {name} is empty or not whole ({a}..{b})")
            env[name] = Fraction(_uniform(rng, int(a), int(b)))
    return env


@functools.cache
def load(path: Path = DATA) -> tuple[list[Template], dict, dict[str, list[str]]]:
    """Templates, per-language prompt blocks and names; BenchError naming the flaw if invalid."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"cannot read the k12-math templates {path}: {e}") from None
    names = data.get("names", {})
    prompts = data.get("prompt", {})
    templates = []
    for i, raw in enumerate(data.get("template", []), 1):
        where = f"{path}: template {i}"
        try:
            t = Template(
                grade=int(raw["grade"]),
                kind=str(raw["kind"]),
                text={lang: str(raw[lang]) for lang in LANGUAGES},
                vars={k: str(v) for k, v in raw["vars"].items()},
                answer=str(raw["answer"]),
                id=str(raw.get("id", f"template-{i}")),
                objects=tuple(tuple(str(x) for x in o) for o in raw.get("objects", [])),
            )
        except KeyError as e:
            raise BenchError(f"{where} lacks {e.args[0]!r}") from None
        if t.grade not in GRADES:
            raise BenchError(f"{where}: grade {t.grade} is not one of 1-6")
        if any(len(o) != 3 for o in t.objects):
            raise BenchError(
                f"{where}: each object is [English plural, Chinese noun, measure word]"
            )
        if t.id in {x.id for x in templates}:
            raise BenchError(f"{where}: id {t.id!r} is used twice")
        for lang, text in t.text.items():
            allowed = set(t.vars) | {"name"} | ({"obj", "unit"} if t.objects else set())
            unknown = set(_PLACEHOLDER.findall(text)) - allowed
            if unknown:
                raise BenchError(f"{where} ({lang}) uses undefined {', '.join(sorted(unknown))}")
        try:  # every template must draw and answer (seeded: the check itself is deterministic)
            env = draw(t, random.Random(f"check:{i}"))
            evaluate(t.answer, env)
        except ValueError as e:
            raise BenchError(f"{where}: {e}") from None
        templates.append(t)
    for lang in LANGUAGES:
        if lang not in prompts or not names.get(lang):
            raise BenchError(f"{path} needs [prompt.{lang}] and names.{lang}")
    missing = sorted(set(GRADES) - {t.grade for t in templates})
    if missing:
        raise BenchError(f"{path} has no template for grade(s) {missing}")
    return templates, prompts, names


def fingerprint(path: Path = DATA, **_) -> str:
    h = hashlib.sha256(Path(path).read_bytes())
    h.update(f"generator {GENERATOR_VERSION}".encode())
    return h.hexdigest()


def generate(
    n: int,
    seed: int = 0,
    grades: tuple[int, ...] = GRADES,
    languages: tuple[str, ...] = LANGUAGES,
    path: Path = DATA,
) -> list[Problem]:
    """``n`` problems, the same ones for the same arguments on any machine."""
    templates, _, names = load(path)
    bad = [g for g in grades if g not in GRADES] + [x for x in languages if x not in LANGUAGES]
    if bad or not grades or not languages:
        raise BenchError(
            f"k12-math: grades must be among 1-6 and languages among en, zh (got {bad or 'none'})"
        )
    combos = [(g, lang) for g in grades for lang in languages]
    by_grade = {g: [t for t in templates if t.grade == g] for g in grades}
    problems = []
    for i in range(n):
        grade, lang = combos[i % len(combos)]
        rng = random.Random(f"k12-math:{seed}:{i}")
        pool = by_grade[grade]
        t = pool[_uniform(rng, 0, len(pool) - 1)]
        env = draw(t, rng)
        name = names[lang][_uniform(rng, 0, len(names[lang]) - 1)]
        question = t.render(lang, env, name)
        problems.append(
            Problem(f"{seed}-{i}", grade, lang, t.kind, question, evaluate(t.answer, env))
        )
    return problems


def prompt(problem: Problem, shots: int, path: Path = DATA) -> str:
    """The few-shot prompt for ``problem`` (its language's examples, then the question)."""
    _, prompts, _ = load(path)
    p = prompts[problem.language]
    q, a = p["question"], p["answer"]
    sep = "" if problem.language == "zh" else " "
    head = "".join(f"{q}{sq}\n{a}{sep}{sa}\n\n" for sq, sa in p["shots"][:shots])
    return f"{head}{q}{problem.question}\n{a}"


def messages(problem: Problem, shots: int, path: Path = DATA) -> list[dict[str, str]]:
    """The few-shot prompt as chat turns: each example a user turn and the assistant's answer."""
    _, prompts, _ = load(path)
    p = prompts[problem.language]
    out: list[dict[str, str]] = []
    for sq, sa in p["shots"][:shots]:
        out += [{"role": "user", "content": sq}, {"role": "assistant", "content": sa}]
    return out + [{"role": "user", "content": problem.question}]


# The first answer given: a marker, a number, then the end of the sentence. Generation stops there
# (the examples answer in one line, so raw prompts also stop at the newline).
_DONE = re.compile(
    r"(?:answer\s+is|答案\s*(?:是|为|[:：]))[^\n。]*?\d[^\n。]*?(?:。|\n|\.(?=\s))", re.IGNORECASE
)


def solve(
    ctx,
    problems: list[Problem],
    *,
    shots: int,
    max_tokens: int,
    task: str,
    prompt_mode: str = "raw",
    batch: int = 1,
) -> list[dict]:
    """Greedy answers from ``ctx.model`` (an edge_llm Model) to ``problems``, one item each.

    ``prompt_mode`` "chat": the model's chat template with the examples as turns (as an app asks
    it); "raw": the examples and question as plain text. Generation stops at the first answer.
    ``batch`` > 1: that many problems decoded together (`edge_llm.llama.batched`, the runtime's
    KV cache; the same stop rules, so the same answers up to the kernels' rounding); 1: one at a
    time through the runtime's ``Model.stream``.
    """
    if batch < 1:
        raise BenchError(f"{task}: batch must be at least 1 (got {batch})")
    # One language at a time: consecutive prompts share the few-shot prefix in the KV cache.
    order = sorted(range(len(problems)), key=lambda i: (problems[i].language, i))
    items: list[dict] = [{} for _ in problems]
    model = ctx.model()
    stop = [] if prompt_mode == "chat" else ["\n"]
    if prompt_mode == "chat":
        prompts = [model.chat_tokens(messages(problems[i], shots)) for i in order]
    else:
        prompts = [prompt(problems[i], shots) for i in order]
    texts = gen.greedy(
        ctx, prompts, max_tokens=max_tokens, stop=stop, batch=batch, task=task, done=_DONE
    )
    for i, text in zip(order, texts):
        p = problems[i]
        got = answers.extract(text)
        items[i] = {
            "id": p.id,
            "grade": p.grade,
            "language": p.language,
            "kind": p.kind,
            "answer": p.answer_text,
            "output": text,
            "extracted": None if got is None else answers.show(got),
            "correct": got == p.answer,
        }
    return items


def prompt_mode(ctx, asked: str) -> str:
    """ "chat" for a model with a chat template unless "raw" was asked; "raw" otherwise."""
    if asked not in ("auto", "chat", "raw"):
        raise BenchError(f"prompt must be auto, chat or raw (got {asked!r})")
    if asked == "auto":
        return "chat" if ctx.model().has_chat_template else "raw"
    return asked


def run(
    ctx,
    n: int = 48,
    seed: int = 0,
    shots: int = 3,
    max_tokens: int = 32,
    grades: list[int] | None = None,
    languages: list[str] | None = None,
    batch: int = 1,
) -> dict:
    """Greedy answers from ``ctx.model`` (an edge_llm Model); accuracy overall and by group."""
    problems = generate(n, seed, tuple(grades or GRADES), tuple(languages or LANGUAGES))
    mode = prompt_mode(ctx, getattr(ctx, "prompt", "auto"))
    items = solve(
        ctx,
        problems,
        shots=shots,
        max_tokens=max_tokens,
        task="k12-math",
        prompt_mode=mode,
        batch=batch,
    )
    return {
        "score": _mean(x["correct"] for x in items),
        "chance": 0.0,
        "prompt": mode,
        "n": len(items),
        "by_grade": {
            str(g): _mean(x["correct"] for x in items if x["grade"] == g)
            for g in sorted({x["grade"] for x in items})
        },
        "by_language": {
            lang: _mean(x["correct"] for x in items if x["language"] == lang)
            for lang in sorted({x["language"] for x in items})
        },
        "items": items,
    }


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0
