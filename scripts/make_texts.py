"""Write bench/data/calibration.txt and bench/data/eval.txt: edge-llm's own texts.

Everything here was written for edge-llm (Apache-2.0, like the project): hand-written paragraphs
plus generators for stories, how-to answers, math word problems with worked solutions, and code,
in English and Chinese. The output is deterministic (fixed seeds; run it again and the files are
byte-identical).

The two files are held apart:
- every pool the generators draw from (names, places, items, hand-written paragraphs, code
  identifiers, topics) is split in two, one part per file, so no filled-in sentence can appear in
  both;
- the script refuses to write if any line of 24+ characters of eval.txt also occurs in
  calibration.txt (tests/convert/test_quant_tools.py checks it again).

calibration.txt feeds importance matrices and the size-budget sensitivity probes;
eval.txt is only for measuring (scripts/quant_quality.py, `edge-llm compare`).

    python -m scripts.make_texts            # rewrite both files
    python -m scripts.make_texts --check    # exit 1 if the files differ from what it writes
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from scripts.text_pools import (
    CN_ITEMS,
    CN_NAMES,
    CN_PLACES,
    IDENTIFIERS,
    ITEMS,
    JOBS,
    NAMES,
    PARAGRAPHS_CN,
    PARAGRAPHS_EN,
    PLACES,
)
from scripts.text_templates import (
    CLOSINGS,
    CODE_TEMPLATES,
    HOWTO,
    INTROS,
    MATH_CN,
    MATH_EN,
    STORY_CN,
    STORY_EN,
)

HERE = Path(__file__).resolve().parent.parent / "bench" / "data"  # the bench package's texts
CALIBRATION_BYTES = 300_000
EVAL_BYTES = 40_000

# --- generators ------------------------------------------------------------------------------


def pick(rng, xs):
    return xs[rng.randrange(len(xs))]


def sentences(rng, parts: list[list[str]], **names) -> list[str]:
    """One sentence from each of ``parts``, in order, filled in with ``names``."""
    return [pick(rng, part).format(**names) for part in parts]


def story_en(rng, pool) -> str:
    name, other = rng.sample(pool["names"], 2)
    place, job = pick(rng, pool["places"]), pick(rng, pool["jobs"])
    hour = rng.randint(5, 8)
    return " ".join(
        sentences(rng, STORY_EN, name=name, other=other, place=place, job=job, hour=hour)
    )


def howto_en(rng, pool) -> str:
    topic, steps = pick(rng, pool["howto"])
    name = pick(rng, pool["names"])
    n = rng.randint(3, len(steps))
    chosen = steps[:n]
    lines = [f"Question from {name}: How do I {topic}?", f"Answer: {pick(rng, pool['intros'])}"]
    lines += [f"{i + 1}. {s[0].upper() + s[1:]}." for i, s in enumerate(chosen)]
    lines.append(pick(rng, pool["closings"]))
    return "\n".join(lines)


# Word problems: each kind rolls its numbers (and works out the answers) here; its text is the
# template of the same key in MATH_EN / MATH_CN.


def bags(rng, pool) -> dict:
    a, b, c = rng.randint(12, 90), rng.randint(2, 9), rng.randint(3, 15)
    return {"a": a, "b": b, "c": c, "bagged": b * c, "total": a + b * c}


def discount(rng, pool) -> dict:
    price, pct = rng.randint(20, 400), pick(rng, [10, 15, 20, 25, 30, 40])
    off = price * pct / 100
    return {"price": price, "pct": pct, "off": off, "sale": price - off}


def ages(rng, pool) -> dict:
    age, diff, years = rng.randint(6, 15), rng.randint(20, 35), rng.randint(2, 12)
    now = {"age": age, "diff": diff, "years": years, "mother": age + diff}
    later = {"child_later": age + years, "mother_later": age + diff + years}
    return {**now, **later, "together": 2 * age + diff + 2 * years}


def average(rng, pool) -> dict:
    xs = [rng.randint(55, 100) for _ in range(rng.randint(3, 6))]
    listed = {
        "firsts": ", ".join(map(str, xs[:-1])),
        "last": xs[-1],
        "terms": " + ".join(map(str, xs)),
    }
    return {**listed, "count": len(xs), "total": sum(xs), "mean": sum(xs) / len(xs)}


def pipes(rng, pool) -> dict:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return {"a": a, "b": b, "a_plus_b": a + b, "a_times_b": a * b, "hours": a * b / (a + b)}


def gifts(rng, pool) -> dict:
    a, b = rng.randint(10, 60), rng.randint(2, 9)
    c = rng.randint(1, a // 2)
    return {"a": a, "b": b, "c": c, "left": a + b - c}


def price(rng, pool) -> dict:
    p, n = rng.randint(2, 15), rng.randint(3, 12)
    return {"p": p, "n": n, "cost": p * n}


def trip(rng, speeds: tuple[int, int], hours: tuple[int, int]) -> dict:
    speed, time = rng.randint(*speeds), rng.randint(*hours)
    return {"speed": speed, "hours": time, "distance": speed * time}


def rectangle(rng, longest: int) -> dict:
    w, h = rng.randint(3, longest), rng.randint(3, longest)
    return {"w": w, "h": h, "area": w * h, "perimeter": 2 * (w + h)}


def share_out(rng, most: int, friends: int) -> dict:
    n, k = rng.randint(20, most), rng.randint(3, friends)
    q, r = divmod(n, k)
    return {"n": n, "k": k, "q": q, "r": r, "shared": k * q}


MATH_DRAWS_EN = {
    "bags": bags,
    "train": lambda rng, pool: {**trip(rng, (30, 110), (2, 7)), "place": pick(rng, pool["places"])},
    "discount": discount,
    "garden": lambda rng, pool: rectangle(rng, 25),
    "ages": ages,
    "average": average,
    "pipes": pipes,
    "sharing": lambda rng, pool: share_out(rng, 60, 9),
}
MATH_DRAWS_CN = {
    "gifts": gifts,
    "price": price,
    "car": lambda rng, pool: trip(rng, (40, 90), (2, 6)),
    "field": lambda rng, pool: rectangle(rng, 20),
    "sharing": lambda rng, pool: share_out(rng, 80, 8),
}


def word_problem(rng, pool, templates: dict, draws: dict, names: str, items: str) -> str:
    """A problem of a random kind about a name and an item from ``pool``: its template from
    ``templates`` filled in with what its entry in ``draws`` rolls."""
    name, item = pick(rng, pool[names]), pick(rng, pool[items])
    kind = list(templates)[rng.randrange(len(templates))]
    return templates[kind].format(name=name, item=item, **draws[kind](rng, pool))


def math_en(rng, pool) -> str:
    return word_problem(rng, pool, MATH_EN, MATH_DRAWS_EN, "names", "items")


def math_cn(rng, pool) -> str:
    return word_problem(rng, pool, MATH_CN, MATH_DRAWS_CN, "cn_names", "cn_items")


def story_cn(rng, pool) -> str:
    a, b = rng.sample(pool["cn_names"], 2)
    place = pick(rng, pool["cn_places"])
    hour = rng.randint(6, 9)
    return "".join(sentences(rng, STORY_CN, a=a, b=b, place=place, hour=hour))


def code(rng, pool) -> str:
    tpl = pick(rng, pool["code"])
    ids = pool["identifiers"]
    xs = pick(rng, ids)
    verb = pick(rng, ["find", "compute", "get", "make", "load", "build", "check", "count"])
    fn = f"{verb}_{pick(rng, ids)}" if "function" not in tpl else f"{verb}{pick(rng, ids).title()}"
    return tpl.format(
        fn=fn,
        xs=xs,
        x=xs[:-1] if xs.endswith("s") else "v",
        cls=xs.title().rstrip("s") + "Window",
        k=rng.randint(2, 9),
        col=pick(rng, ["city", "grade", "category", "author"]),
        table=pick(rng, ids),
        ctx=pick(rng, [512, 1024, 2048, 4096]),
    )


GENERATORS = [
    (story_en, 3),
    (howto_en, 2),
    (math_en, 3),
    (math_cn, 2),
    (story_cn, 2),
    (code, 3),
    ("para_en", 2),
    ("para_cn", 1),
]


def split_pool(xs: list, part: int) -> list:
    """Even positions for calibration (part 0), odd ones for evaluation (part 1)."""
    return xs[part::2]


def pools(part: int) -> dict:
    return {
        "names": split_pool(NAMES, part),
        "places": split_pool(PLACES, part),
        "items": split_pool(ITEMS, part),
        "jobs": split_pool(JOBS, part),
        "cn_names": split_pool(CN_NAMES, part),
        "cn_places": split_pool(CN_PLACES, part),
        "cn_items": split_pool(CN_ITEMS, part),
        "identifiers": split_pool(IDENTIFIERS, part),
        "howto": split_pool(HOWTO, part),
        "code": split_pool(CODE_TEMPLATES, part),
        "intros": split_pool(INTROS, part),
        "closings": split_pool(CLOSINGS, part),
        "para_en": split_pool(PARAGRAPHS_EN, part),
        "para_cn": split_pool(PARAGRAPHS_CN, part),
    }


def generate(part: int, size: int, seed: int) -> str:
    rng = random.Random(seed)
    pool = pools(part)
    weighted = [g for g, w in GENERATORS for _ in range(w)]
    docs, seen, total = [], set(), 0
    para_order = {k: rng.sample(pool[k], len(pool[k])) for k in ("para_en", "para_cn")}
    misses = 0
    while total < size and misses < 10_000:
        g = pick(rng, weighted)
        if isinstance(g, str):
            if not para_order[g]:
                continue
            doc = para_order[g].pop()
        else:
            doc = g(rng, pool).strip()
        if doc in seen:
            misses += 1
            continue
        seen.add(doc)
        docs.append(doc)
        total += len(doc.encode()) + 2
    return "\n\n".join(docs) + "\n"


def more_calibration(size: int, calibration: str, evaluation: str, seed: int = 1) -> str:
    """Up to ``size`` bytes of further training text from the calibration side's pools (part 0),
    for runs that would otherwise repeat calibration.txt (QAT beyond one pass): generated
    documents only (the hand-written paragraphs are all in calibration.txt already), none equal
    to one of calibration.txt's, over seeds ``seed``, ``seed + 1``, ... until ``size`` is reached
    or a seed brings nothing new; refuses text that shares a line with the evaluation text."""
    have = set(calibration.split("\n\n"))
    paragraphs = set(PARAGRAPHS_EN) | set(PARAGRAPHS_CN)
    docs, total = [], 0
    while total < size:
        new = [
            d
            for d in generate(0, size, seed).split("\n\n")
            if d.strip() and d.strip() not in paragraphs and d not in have
        ]
        if not new:
            break
        for d in new:
            if total >= size:
                break
            have.add(d)
            docs.append(d)
            total += len(d.encode()) + 2
        seed += 1
    text = "\n\n".join(docs) + "\n"
    shared = overlap(text, evaluation)
    if shared:
        raise SystemExit(f"further text shares {len(shared)} lines with eval.txt: {shared[0]!r}")
    return text


def overlap(cal: str, ev: str, min_len: int = 24) -> list[str]:
    """Lines of the evaluation text (24+ characters) that also occur in the calibration text."""
    cal_lines = {ln.strip() for ln in cal.splitlines()}
    return [ln for ln in ev.splitlines() if len(ln.strip()) >= min_len and ln.strip() in cal_lines]


def build() -> tuple[str, str]:
    cal = generate(0, CALIBRATION_BYTES, seed=20241123)
    ev = generate(1, EVAL_BYTES, seed=77)
    shared = overlap(cal, ev)
    if shared:
        raise SystemExit(
            f"evaluation text shares {len(shared)} lines with calibration: {shared[0]!r}"
        )
    return cal, ev


def main(argv: list[str]) -> int:
    cal, ev = build()
    targets = {HERE / "calibration.txt": cal, HERE / "eval.txt": ev}
    if "--check" in argv:
        bad = [p.name for p, t in targets.items() if not p.exists() or p.read_text("utf-8") != t]
        if bad:
            print(f"out of date: {', '.join(bad)}; run python -m scripts.make_texts")
            return 1
        return 0
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({len(text.encode()) / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
