"""k12-robust: does the model still solve a problem when its surface changes?

Models that score well on exams fail primary-school problems when the numbers, the names or the
order of the sentences change, or when one irrelevant sentence is added (GSM-Symbolic, arXiv
2410.05229). On the default model one sentence ("Mia is 8 years old and likes singing.") flipped
3 of 12 answers from right to wrong, and multiplication fell from 9/10 at 1x1 digits to 0/10 at
2x2. k12-math's accuracy on one draw of numbers cannot show either.

Every benchmark template of ``k12_math.toml`` (the ``benchmark`` list of ``k12_split.toml``) is
instantiated as a family of variants of one problem, each in English and Chinese from the same
numbers (the language gap is paired):

    base        instantiation set 0: numbers, a name and the template's first object
    names       set 0's numbers with another child's name and another object
    reorder     set 0's problem with its question put first (templates of two or more sentences)
    distractor  set 0's problem with one irrelevant sentence holding a number put before the
                question (the answer is computed from the template's variables alone, so it
                cannot change)
    numbers     instantiation sets 1..sets-1: other numbers in the same ranges, names, objects

plus a digit-length grid: a ∘ b for ∘ in + - × ÷ with 1 to 4 digits on each side (for ÷ the
quotient's and the divisor's digits, so every answer is whole), ``grid`` problems per cell.

Report: accuracy on the base; the accuracy of every instantiation set with their standard
deviation and range; the paired change under names, reorder and distractor (McNemar); the
accuracy-by-digits grid; the EN-ZH paired gap; and robustness = accuracy over all template
variants / accuracy on the base. The task's score (in capability) is the accuracy over every item;
its interval resamples problems (all variants of one instantiation are one unit: they share numbers).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import tomllib
from fractions import Fraction
from pathlib import Path

import numpy as np

from bench import stats
from bench.errors import BenchError
from bench.suites import k12_math as K

SPLIT = Path(__file__).with_name("k12_split.toml")
GENERATOR_VERSION = 1
OPS = {"+": ("+", "add"), "-": ("-", "subtract"), "×": ("*", "multiply"), "÷": ("/", "divide")}
DIGITS = (1, 2, 3, 4)
_SENTENCE = {"en": re.compile(r"(?<=[.!?])\s+"), "zh": re.compile(r"(?<=[。！？，])")}


@functools.cache
def split(path: Path = SPLIT) -> dict:
    """The template split: which template ids the benchmark uses, which training may use, and the
    distractor sentences; BenchError when the lists overlap or name unknown templates."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"cannot read the k12 template split {path}: {e}") from None
    bench_ids = list(data.get("benchmark", {}).get("templates", []))
    train_ids = list(data.get("training", {}).get("templates", []))
    both = sorted(set(bench_ids) & set(train_ids))
    if both:
        raise BenchError(
            f"{path}: template(s) {', '.join(both)} are both benchmark and training; "
            "the split must be disjoint"
        )
    known = {t.id for t in K.load()[0]}
    unknown = sorted(set(bench_ids) - known)
    if unknown:
        raise BenchError(
            f"{path}: benchmark template(s) {', '.join(unknown)} are not in {K.DATA.name}"
        )
    d = data.get("distractors", [])
    if not d or any(set(x) != {"en", "zh"} for x in d):
        raise BenchError(f"{path}: [[distractors]] need en and zh sentences")
    return {"benchmark": bench_ids, "training": train_ids, "distractors": d}


def fingerprint(**_) -> str:
    h = hashlib.sha256(SPLIT.read_bytes())
    h.update(K.DATA.read_bytes())
    h.update(f"generator {GENERATOR_VERSION}".encode())
    return h.hexdigest()


def _pick(rng: random.Random, seq):
    return seq[K._uniform(rng, 0, len(seq) - 1)]


def _other(rng: random.Random, seq, not_this):
    rest = [x for x in seq if x != not_this]
    return _pick(rng, rest) if rest else not_this


def question_first(text: str, lang: str) -> str | None:
    """The problem with its last sentence (the question) moved to the front; None for one sentence."""
    parts = [p for p in _SENTENCE[lang].split(text.strip()) if p]
    if len(parts) < 2:
        return None
    q, rest = parts[-1], parts[:-1]
    if lang == "zh":
        body = "".join(rest)
        body = body[:-1] + "。" if body.endswith("，") else body
        return q + body
    return " ".join([q, *rest])


def with_distractor(text: str, lang: str, sentence: str) -> str:
    """``sentence`` put before the question (the last sentence), or first for one sentence."""
    parts = [p for p in _SENTENCE[lang].split(text.strip()) if p]
    if lang == "zh":
        if len(parts) < 2:
            return sentence + text
        body = "".join(parts[:-1])
        return (body[:-1] + "。" if body.endswith("，") else body) + sentence + parts[-1]
    return " ".join([*parts[:-1], sentence, parts[-1]])


def _problem(pid, t: K.Template, lang, question, answer, variant, cluster, extra=None):
    p = K.Problem(pid, t.grade if t else 0, lang, t.kind if t else "grid", question, answer)
    return p, {
        "variant": variant,
        "cluster": cluster,
        "template": t.id if t else None,
        **(extra or {}),
    }


def generate(
    seed: int = 0,
    sets: int = 3,
    grid: int = 1,
    languages: tuple[str, ...] = K.LANGUAGES,
    grid_languages: tuple[str, ...] | None = None,
) -> list[tuple[K.Problem, dict]]:
    """Every variant, as (problem, what it is); the same for the same arguments on any machine."""
    if sets < 1 or grid < 0:
        raise BenchError(f"k12-robust: sets must be >= 1 and grid >= 0 (got {sets}, {grid})")
    grid_languages = languages if grid_languages is None else grid_languages
    bad = [x for x in (*languages, *grid_languages) if x not in K.LANGUAGES]
    if bad or not languages:
        raise BenchError(f"k12-robust: languages must be among en, zh (got {bad or 'none'})")
    templates, _, names = K.load()
    sp = split()
    by_id = {t.id: t for t in templates}
    out: list[tuple[K.Problem, dict]] = []
    for tid in sp["benchmark"]:
        for s in range(sets):
            out += _variants(seed, by_id[tid], s, names, sp["distractors"], languages)
    out += _grid(seed, grid, grid_languages)
    return out


def _variants(seed: int, t: K.Template, s: int, names, distractors, languages):
    """Instantiation set ``s`` of template ``t`` in each language: set 0's base, names, reorder
    and distractor variants, another set's numbers."""
    tid = t.id
    rng = random.Random(f"k12-robust:{seed}:{tid}:{s}")
    env = K.draw(t, rng)
    ans = K.evaluate(t.answer, env)
    obj = 0 if s == 0 else (K._uniform(rng, 0, len(t.objects) - 1) if t.objects else 0)
    ni = K._uniform(rng, 0, len(names["en"]) - 1)  # the same child in both languages
    alt_ni = (ni + 1 + K._uniform(rng, 0, len(names["en"]) - 2)) % len(names["en"])
    alt_obj = (
        (obj + 1 + K._uniform(rng, 0, len(t.objects) - 2)) % len(t.objects)
        if len(t.objects) > 1
        else obj
    )
    dn = (ni + 1 + K._uniform(rng, 0, len(names["en"]) - 2)) % len(names["en"])
    dsent = _pick(rng, distractors)
    dnum = K._uniform(rng, 2, 12)
    cluster = f"{tid}/{s}"
    out: list[tuple[K.Problem, dict]] = []
    for lang in languages:
        base = t.render(lang, env, names[lang][ni], obj)
        pid = f"{seed}-{tid}-{s}-{lang}"
        kind = "base" if s == 0 else "numbers"
        out.append(_problem(f"{pid}-{kind}", t, lang, base, ans, kind, cluster, {"set": s}))
        if s != 0:
            continue
        if "{name}" in t.text[lang] or t.objects:
            q = t.render(lang, env, names[lang][alt_ni], alt_obj)
            out.append(_problem(f"{pid}-names", t, lang, q, ans, "names", cluster, {"set": s}))
        q = question_first(base, lang)
        if q is not None:
            out.append(_problem(f"{pid}-reorder", t, lang, q, ans, "reorder", cluster, {"set": s}))
        sent = dsent[lang].format(name=names[lang][dn], k=dnum)
        q = with_distractor(base, lang, sent)
        extra = {"set": s, "distractor": sent}
        out.append(_problem(f"{pid}-distractor", t, lang, q, ans, "distractor", cluster, extra))
    return out


def _grid(seed: int, grid: int, languages) -> list[tuple[K.Problem, dict]]:
    """The digit-length grid: ``grid`` problems a cell (operation, digits of each side)."""
    out: list[tuple[K.Problem, dict]] = []
    for sym, (py, _) in OPS.items():
        for d1 in DIGITS:
            for d2 in DIGITS:
                for j in range(grid):
                    rng = random.Random(f"k12-robust:{seed}:grid:{sym}:{d1}:{d2}:{j}")
                    x = K._uniform(rng, 10 ** (d1 - 1), 10**d1 - 1)
                    y = K._uniform(rng, 10 ** (d2 - 1), 10**d2 - 1)
                    if sym == "÷":  # x is the quotient: the dividend is x * y
                        a, b, ans = x * y, y, Fraction(x)
                    else:
                        a, b = x, y
                        ans = K.evaluate(f"a {py} b", {"a": Fraction(a), "b": Fraction(b)})
                    cell = f"{sym} {d1}x{d2}"
                    for lang in languages:
                        q = (
                            f"What is {a} {sym} {b}?"
                            if lang == "en"
                            else f"{a} {sym} {b} 等于多少？"
                        )
                        p = K.Problem(
                            f"{seed}-grid-{sym}{d1}x{d2}-{j}-{lang}", 0, lang, "grid", q, ans
                        )
                        meta = {
                            "variant": "grid",
                            "cluster": f"grid/{cell}/{j}",
                            "template": None,
                            "cell": cell,
                        }
                        out.append((p, meta))
    return out


def _acc(xs) -> float | None:
    xs = list(xs)
    return float(np.mean(xs)) if xs else None


def _matched(items: list[dict], key, is_first, is_second) -> list[tuple]:
    """(first, second) correctness pairs: each ``is_second`` item's, after that of the
    ``is_first`` item with the same ``key`` (the last one); items without such a partner are
    left out."""
    first = {key(x): x["correct"] for x in items if is_first(x)}
    return [(first[key(x)], x["correct"]) for x in items if is_second(x) and key(x) in first]


def _test_record(r: dict, a, b, names: tuple[str, str, str]) -> dict:
    """A paired test ``r`` of the correctness lists ``a`` and ``b`` as reported: its n, the two
    accuracies and the difference (named by ``names``), its ci95 and p."""
    first, second, difference = names
    return {
        "n": r["n"],
        first: float(np.mean(a)),
        second: float(np.mean(b)),
        difference: r["difference"],
        "ci95": r["ci95"],
        "p": r["p"],
    }


def _paired(items: list[dict], variant: str) -> dict | None:
    """``variant`` against the base of the same problem and language."""
    pairs = _matched(
        items,
        lambda x: (x["cluster"], x["language"]),
        lambda x: x["variant"] == "base",
        lambda x: x["variant"] == variant,
    )
    if not pairs:
        return None
    a, b = zip(*pairs)
    r = stats.paired_proportion(a, b)
    return {
        **_test_record(r, a, b, ("base", "variant", "change")),
        "right_to_wrong": r["only_a"],
        "wrong_to_right": r["only_b"],
        "verdict": r["verdict"],
    }


def summarise(items: list[dict]) -> dict:
    tmpl = [x for x in items if x["variant"] != "grid"]
    base = [x["correct"] for x in tmpl if x["variant"] == "base"]
    sets = sorted({x["set"] for x in tmpl if x["variant"] in ("base", "numbers")})
    per_set = [
        _acc(x["correct"] for x in tmpl if x["variant"] in ("base", "numbers") and x["set"] == s)
        for s in sets
    ]
    base_acc = _acc(base)
    all_acc = _acc(x["correct"] for x in tmpl)
    grid: dict[str, float] = {}
    for x in items:
        if x["variant"] == "grid":
            grid.setdefault(x["cell"], []).append(x["correct"])  # type: ignore[arg-type]
    gap_pairs = _matched(
        items,
        lambda x: (x["cluster"], x["variant"]),
        lambda x: x["language"] == "en",
        lambda x: x["language"] == "zh",
    )
    gap = None
    if gap_pairs:
        a, b = zip(*gap_pairs)
        r = stats.paired_proportion(b, a)  # en minus zh
        gap = _test_record(r, a, b, ("en", "zh", "en_minus_zh"))
    return {
        "base": base_acc,
        "base_ci95": list(stats.wilson(int(sum(base)), len(base))) if base else None,
        "base_n": len(base),
        "sets": per_set,
        "sets_sd": float(np.std(per_set, ddof=1)) if len(per_set) > 1 else None,
        "sets_range": [min(per_set), max(per_set)] if per_set else None,
        "all_variants": all_acc,
        "robustness": all_acc / base_acc if base_acc else None,
        "names": _paired(items, "names"),
        "reorder": _paired(items, "reorder"),
        "distractor": _paired(items, "distractor"),
        "grid": {cell: float(np.mean(v)) for cell, v in grid.items()},
        "en_zh": gap,
    }


def run(
    ctx,
    seed: int = 0,
    sets: int = 3,
    grid: int = 1,
    shots: int = 3,
    max_tokens: int = 32,
    languages: list[str] | None = None,
    grid_languages: list[str] | None = None,
    batch: int = 1,
) -> dict:
    langs = tuple(languages or K.LANGUAGES)
    pairs = generate(seed, sets, grid, langs, tuple(grid_languages) if grid_languages else None)
    mode = K.prompt_mode(ctx, getattr(ctx, "prompt", "auto"))
    items = K.solve(
        ctx,
        [p for p, _ in pairs],
        shots=shots,
        max_tokens=max_tokens,
        task="k12-robust",
        prompt_mode=mode,
        batch=batch,
    )
    for it, (_, meta) in zip(items, pairs):
        it.update(meta)
    s = summarise(items)
    return {
        "score": _acc(x["correct"] for x in items),
        "chance": 0.0,
        "prompt": mode,
        "n": len(items),
        **s,
        "items": items,
    }


def table(r: dict) -> str:
    """The robustness report of one run as text."""
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"base {f(r['base'])} (95% {r['base_ci95'][0]:.3f} to {r['base_ci95'][1]:.3f}, {r['base_n']} items); "
        f"all variants {f(r['all_variants'])}; robustness {f(r['robustness'])}"
    ]
    if r["sets"]:
        lines.append(
            f"instantiation sets: {' '.join(f(x) for x in r['sets'])}; sd {f(r['sets_sd'])}, "
            f"range {f(r['sets_range'][0])}-{f(r['sets_range'][1])}"
        )
    for v in ("names", "reorder", "distractor"):
        p = r.get(v)
        if p:
            lines.append(
                f"{v:<10} {f(p['base'])} -> {f(p['variant'])} (paired change {p['change']:+.3f}, "
                f"95% {p['ci95'][0]:+.3f} to {p['ci95'][1]:+.3f}; right->wrong {p['right_to_wrong']}, "
                f"wrong->right {p['wrong_to_right']}, p {p['p']:.3g}: {p['verdict']})"
            )
    g = r.get("en_zh")
    if g:
        lines.append(
            f"EN-ZH gap  {g['en_minus_zh']:+.3f} (en {f(g['en'])}, zh {f(g['zh'])}, 95% "
            f"{g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}, p {g['p']:.3g}, {g['n']} pairs)"
        )
    if r["grid"]:
        lines.append("digits (a x b)  " + "  ".join(f"{a}x{b}" for a in DIGITS for b in DIGITS))
        for sym in OPS:
            cells = [r["grid"].get(f"{sym} {a}x{b}") for a in DIGITS for b in DIGITS]
            lines.append(
                f"  {sym:<13} " + "  ".join(" — " if c is None else f"{c:.1f}" for c in cells)
            )
    return "\n".join(lines)
