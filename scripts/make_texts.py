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


HOWTO = [
    (
        "keep a small vegetable garden",
        [
            "choose a sunny spot",
            "loosen the soil and mix in compost",
            "plant seeds at the depth shown on the packet",
            "water in the morning rather than at night",
            "pull weeds while they are still small",
        ],
    ),
    (
        "prepare for a long bike ride",
        [
            "check the tyre pressure",
            "pack water and a snack",
            "bring a spare tube and a small pump",
            "tell someone your route",
            "start slowly and keep a steady pace",
        ],
    ),
    (
        "write a clear email",
        [
            "put the request in the first sentence",
            "keep paragraphs short",
            "say exactly what you need and by when",
            "read it once aloud before sending",
        ],
    ),
    (
        "learn new vocabulary",
        [
            "write each word in a sentence of your own",
            "review the list after one day, then after a week",
            "group words by topic",
            "use the new words in conversation",
        ],
    ),
    (
        "save money on groceries",
        [
            "plan meals for the week",
            "write a list and stick to it",
            "compare prices per kilogram",
            "cook larger batches and freeze portions",
        ],
    ),
    (
        "give a short presentation",
        [
            "know your first and last sentence by heart",
            "use few words on each slide",
            "practise with a timer",
            "look at the audience, not at the screen",
        ],
    ),
    (
        "fix a slow computer",
        [
            "close programs you are not using",
            "free some disk space",
            "check which apps start automatically",
            "install pending updates",
            "restart it once in a while",
        ],
    ),
    (
        "make a simple tomato soup",
        [
            "soften an onion in a little oil",
            "add chopped tomatoes and a pinch of salt",
            "simmer for twenty minutes",
            "blend until smooth and taste before serving",
        ],
    ),
    (
        "take care of a houseplant",
        [
            "find out how much light it likes",
            "water only when the top of the soil is dry",
            "turn the pot every few weeks",
            "repot it when the roots fill the pot",
        ],
    ),
    (
        "study for a math test",
        [
            "redo the homework problems without looking at the answers",
            "write down every formula on one page",
            "time yourself on a practice test",
            "sleep well the night before",
        ],
    ),
    (
        "back up your photos",
        [
            "copy them to an external drive",
            "keep a second copy in another place",
            "check once a month that the copies open",
            "name folders by year and month",
        ],
    ),
    (
        "train for a five kilometre run",
        [
            "alternate running and walking at first",
            "add a few minutes of running each week",
            "rest at least one day between runs",
            "stretch after each run",
        ],
    ),
]


def howto_en(rng, pool) -> str:
    topic, steps = pick(rng, pool["howto"])
    name = pick(rng, pool["names"])
    n = rng.randint(3, len(steps))
    chosen = steps[:n]
    lines = [f"Question from {name}: How do I {topic}?", f"Answer: {pick(rng, pool['intros'])}"]
    lines += [f"{i + 1}. {s[0].upper() + s[1:]}." for i, s in enumerate(chosen)]
    lines.append(pick(rng, pool["closings"]))
    return "\n".join(lines)


INTROS = [
    "Here is a simple way to do it.",
    "It is easier than it looks.",
    "A few steps are enough.",
    "This is what works for most people.",
    "Try it in this order.",
    "Good question; here is how.",
]
CLOSINGS = [
    "That is all there is to it; the rest comes with practice.",
    "Start small, and adjust as you learn what works for you.",
    "If something goes wrong, go back to the first step and try again.",
    "Give it a week and you will notice the difference.",
    "Most mistakes come from skipping a step, so take your time.",
    "After a few tries it becomes a habit.",
]


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


CODE_TEMPLATES = [
    '''def {fn}({xs}):
    """Return the largest value in {xs}, or None when it is empty."""
    if not {xs}:
        return None
    best = {xs}[0]
    for {x} in {xs}[1:]:
        if {x} > best:
            best = {x}
    return best
''',
    '''def {fn}({xs}, target):
    """Binary search: the index of target in the sorted list {xs}, or -1."""
    lo, hi = 0, len({xs}) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if {xs}[mid] == target:
            return mid
        if {xs}[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
''',
    '''def {fn}(n):
    """The first n Fibonacci numbers."""
    out = [0, 1]
    while len(out) < n:
        out.append(out[-1] + out[-2])
    return out[:n]
''',
    '''def {fn}(a, b):
    """Greatest common divisor by Euclid's algorithm."""
    while b:
        a, b = b, a % b
    return abs(a)
''',
    '''def {fn}(text):
    """Count how often each word occurs, ignoring case."""
    counts = {{}}
    for word in text.lower().split():
        word = word.strip(".,;:!?")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return counts
''',
    '''def {fn}({xs}):
    """Sort {xs} in place with insertion sort and return it."""
    for i in range(1, len({xs})):
        {x} = {xs}[i]
        j = i - 1
        while j >= 0 and {xs}[j] > {x}:
            {xs}[j + 1] = {xs}[j]
            j -= 1
        {xs}[j + 1] = {x}
    return {xs}
''',
    '''class {cls}:
    """A fixed-size queue that drops the oldest entry when full."""

    def __init__(self, capacity={k}):
        self.capacity = capacity
        self.{xs} = []

    def push(self, {x}):
        self.{xs}.append({x})
        if len(self.{xs}) > self.capacity:
            self.{xs}.pop(0)

    def mean(self):
        return sum(self.{xs}) / len(self.{xs}) if self.{xs} else 0.0
''',
    '''def {fn}(path):
    """Read a CSV file of name,value lines and return the total of the values."""
    total = 0.0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            name, _, value = line.strip().partition(",")
            try:
                total += float(value)
            except ValueError:
                print(f"line {{line_no}}: cannot read {{value!r}} for {{name}}")
    return total
''',
    """function {fn}({xs}) {{
  // Return a new array with every value scaled to the range 0..1.
  const lo = Math.min(...{xs});
  const hi = Math.max(...{xs});
  if (hi === lo) return {xs}.map(() => 0);
  return {xs}.map(({x}) => ({x} - lo) / (hi - lo));
}}
""",
    """SELECT {col}, COUNT(*) AS n, AVG(score) AS mean_score
FROM {table}
WHERE created_at >= '2024-0{k}-01'
GROUP BY {col}
HAVING COUNT(*) > {k}
ORDER BY mean_score DESC
LIMIT 10;
""",
    """#!/bin/sh
# Compress every log file older than {k} days in the given folder.
set -eu
dir="${{1:-/var/log/{table}}}"
find "$dir" -name '*.log' -mtime +{k} -print | while read -r f; do
    gzip -9 "$f"
done
""",
    '''def {fn}(matrix_a, matrix_b):
    """Multiply two matrices given as lists of rows."""
    rows, inner, cols = len(matrix_a), len(matrix_b), len(matrix_b[0])
    out = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        for k in range(inner):
            a = matrix_a[i][k]
            for j in range(cols):
                out[i][j] += a * matrix_b[k][j]
    return out
''',
    '''def {fn}(s):
    """True if s reads the same forwards and backwards, ignoring spaces and case."""
    cleaned = [c.lower() for c in s if c.isalnum()]
    return cleaned == cleaned[::-1]
''',
    """{{
  "name": "{table}",
  "version": "1.{k}.0",
  "threads": {k},
  "context": {ctx},
  "model": "{fn}.gguf",
  "stop": ["</s>", "\\n\\n"]
}}
""",
]


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
