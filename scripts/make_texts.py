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
from scripts.text_templates import CLOSINGS, CODE_TEMPLATES, HOWTO, INTROS

HERE = Path(__file__).resolve().parent.parent / "bench" / "data"  # the bench package's texts
CALIBRATION_BYTES = 300_000
EVAL_BYTES = 40_000

# --- generators ------------------------------------------------------------------------------


def pick(rng, xs):
    return xs[rng.randrange(len(xs))]


def story_en(rng, pool) -> str:
    name, other = rng.sample(pool["names"], 2)
    place, job = pick(rng, pool["places"]), pick(rng, pool["jobs"])
    hour = rng.randint(5, 8)
    opening = pick(
        rng,
        [
            f"{name} lived in {place} and worked as a {job}.",
            f"In the small town of {place} there was a {job} called {name}.",
            f"Everyone in {place} knew {name}, the {job} who always arrived early.",
        ],
    )
    morning = pick(
        rng,
        [
            f"Every morning {name} woke up at {hour} o'clock, made a pot of tea and read for a while.",
            f"Each day began the same way: a short walk by the river, then breakfast at {hour} sharp.",
            f"{name} liked the quiet hour before the town woke up and used it to plan the day.",
        ],
    )
    event = pick(
        rng,
        [
            f"One rainy afternoon {other} knocked on the door with a strange request.",
            f"Then one spring a letter arrived from {other}, an old friend who had moved away years ago.",
            f"But one winter the bridge into {place} was closed, and nothing went as planned.",
            f"One day {other} asked for help with a problem nobody else had been able to solve.",
        ],
    )
    middle = pick(
        rng,
        [
            f"At first {name} was not sure what to do. After thinking it over, {name} decided to "
            f"ask the neighbours, and together they worked out a plan.",
            f"{name} wrote down everything that was known, drew a small map, and set off before noon.",
            f"It took three long days, two broken tools and a great deal of patience, but {name} did "
            f"not give up.",
        ],
    )
    ending = pick(
        rng,
        [
            f"In the end the problem was solved, and {other} said it was the best help anyone had ever given.",
            f"By the end of the week the whole town was talking about it, and {name} simply smiled.",
            f"Years later, {other} still told the story to anyone who would listen.",
        ],
    )
    return " ".join([opening, morning, event, middle, ending])


def howto_en(rng, pool) -> str:
    topic, steps = pick(rng, pool["howto"])
    name = pick(rng, pool["names"])
    n = rng.randint(3, len(steps))
    chosen = steps[:n]
    lines = [f"Question from {name}: How do I {topic}?", f"Answer: {pick(rng, pool['intros'])}"]
    lines += [f"{i + 1}. {s[0].upper() + s[1:]}." for i, s in enumerate(chosen)]
    lines.append(pick(rng, pool["closings"]))
    return "\n".join(lines)


def math_en(rng, pool) -> str:
    name = pick(rng, pool["names"])
    item = pick(rng, pool["items"])
    kind = rng.randrange(8)
    if kind == 0:
        a, b, c = rng.randint(12, 90), rng.randint(2, 9), rng.randint(3, 15)
        return (
            f"Problem: {name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag. "
            f"How many {item} does {name} have now?\n"
            f"Solution: The bags hold {b} x {c} = {b * c} {item}. Together with the first "
            f"{a}, that makes {a} + {b * c} = {a + b * c} {item}. The answer is {a + b * c}."
        )
    if kind == 1:
        speed, hours = rng.randint(30, 110), rng.randint(2, 7)
        return (
            f"Problem: A train leaves {pick(rng, pool['places'])} and travels at {speed} "
            f"kilometres per hour for {hours} hours. How far does it go?\n"
            f"Solution: {name} works it out: distance is speed times time, {speed} x {hours} = {speed * hours} "
            f"kilometres. The answer is {speed * hours} km."
        )
    if kind == 2:
        price, pct = rng.randint(20, 400), pick(rng, [10, 15, 20, 25, 30, 40])
        off = price * pct / 100
        return (
            f"Problem: A jacket costs ${price}. It is on sale for {pct}% off. What is the "
            f"sale price?\nSolution: {name} notes that the discount is {pct}% of {price}, which is "
            f"{price} x {pct} / 100 = {off:g}. The sale price is {price} - {off:g} = "
            f"{price - off:g} dollars."
        )
    if kind == 3:
        w, h = rng.randint(3, 25), rng.randint(3, 25)
        return (
            f"Problem: {name}'s garden is a rectangle {w} metres long and {h} metres wide. "
            f"What are its area and its perimeter?\nSolution: For {name}'s garden, area = {w} x {h} = {w * h} "
            f"square metres. Perimeter = 2 x ({w} + {h}) = {2 * (w + h)} metres."
        )
    if kind == 4:
        age, diff, years = rng.randint(6, 15), rng.randint(20, 35), rng.randint(2, 12)
        return (
            f"Problem: {name} is {age} years old and {name}'s mother is {diff} years older. "
            f"How old will they be together in {years} years?\nSolution: {name}'s mother is "
            f"{age} + {diff} = {age + diff} now. In {years} years they will be {age + years} "
            f"and {age + diff + years}, which adds up to {2 * age + diff + 2 * years}."
        )
    if kind == 5:
        xs = [rng.randint(55, 100) for _ in range(rng.randint(3, 6))]
        s = sum(xs)
        return (
            f"Problem: {name} scored {', '.join(map(str, xs[:-1]))} and {xs[-1]} on "
            f"{len(xs)} tests. What is the average score?\nSolution: {name}'s total is "
            f"{' + '.join(map(str, xs))} = {s}. Dividing by {len(xs)} gives {s / len(xs):.2f}."
        )
    if kind == 6:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        t = a * b / (a + b)
        return (
            f"Problem: At {name}'s farm one pipe fills a tank in {a} hours and another fills it in "
            f"{b} hours. How long do they take together?\nSolution: Together {name}'s pipes fill 1/{a} + 1/{b} = "
            f"{a + b}/{a * b} of the tank per hour, so the tank is full after {a * b}/{a + b} "
            f"= {t:.2f} hours."
        )
    n, k = rng.randint(20, 60), rng.randint(3, 9)
    q, r = divmod(n, k)
    return (
        f"Problem: {name} shares {n} {item} equally among {k} friends. How many does each "
        f"friend get, and how many are left over?\nSolution: For {name}, {n} divided by {k} is {q} with "
        f"remainder {r}, because {k} x {q} = {k * q} and {n} - {k * q} = {r}. Each friend gets "
        f"{q}, and {r} are left."
    )


def math_cn(rng, pool) -> str:
    name = pick(rng, pool["cn_names"])
    item = pick(rng, pool["cn_items"])
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(10, 60), rng.randint(2, 9)
        c = rng.randint(1, a // 2)
        return (
            f"题目：{name}有{a}个{item}，又买了{b}个，然后送给同学{c}个。{name}现在有多少个{item}？\n"
            f"解答：{a}+{b}-{c}={a + b - c}（个）。答：{name}现在有{a + b - c}个{item}。"
        )
    if kind == 1:
        p, n = rng.randint(2, 15), rng.randint(3, 12)
        return (
            f"题目：每支{item}{p}元，{name}买了{n}支，一共要付多少元？\n"
            f"解答：{p}×{n}={p * n}（元）。答：{name}一共要付{p * n}元。"
        )
    if kind == 2:
        v, t = rng.randint(40, 90), rng.randint(2, 6)
        return (
            f"题目：{name}家的汽车每小时行驶{v}千米，{t}小时能行驶多少千米？\n"
            f"解答：路程=速度×时间，{v}×{t}={v * t}（千米）。答：{name}家的汽车能行驶{v * t}千米。"
        )
    if kind == 3:
        a, b = rng.randint(3, 20), rng.randint(3, 20)
        return (
            f"题目：{name}家有一块长方形菜地，长{a}米，宽{b}米，它的面积是多少平方米？周长是多少米？\n"
            f"解答：{name}家菜地的面积={a}×{b}={a * b}（平方米），周长=({a}+{b})×2={2 * (a + b)}（米）。"
        )
    n, k = rng.randint(20, 80), rng.randint(3, 8)
    q, r = divmod(n, k)
    return (
        f"题目：{name}把{n}个{item}平均分给{k}个小朋友，每人分到几个？还剩几个？\n"
        f"解答：{n}÷{k}={q}……{r}。答：{name}的小朋友每人分到{q}个，还剩{r}个。"
    )


def story_cn(rng, pool) -> str:
    a, b = rng.sample(pool["cn_names"], 2)
    place = pick(rng, pool["cn_places"])
    hour = rng.randint(6, 9)
    parts = [
        pick(
            rng,
            [
                f"星期天早上{hour}点，{a}和{b}约好一起去{place}。",
                f"放学以后，{a}背着书包来到了{place}。",
                f"今天天气很好，{a}的妈妈带着{a}去{place}玩。",
            ],
        ),
        pick(
            rng,
            [
                f"路上，{a}看见一位老奶奶提着很重的东西，就主动上前帮忙。",
                f"到了{place}，{a}发现那里的人特别多，大家都在排队。",
                f"{b}说：“我们先把作业做完，再好好地玩吧！”",
            ],
        ),
        pick(
            rng,
            [
                "虽然有点累，但是大家都很开心。",
                "这件事让我明白了，帮助别人也是一种快乐。",
                "回家的路上，天边挂着一道美丽的彩虹。",
            ],
        ),
    ]
    return "".join(parts)


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
