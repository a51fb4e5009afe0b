"""The templates scripts/make_texts.py fills in: how-to topics with their steps (and the answers'
opening and closing lines), short code snippets, stories' sentences and word problems, with
{placeholders} for names and numbers.

Why a module of its own: like scripts/text_pools.py these are data, not generation logic; keeping
them here leaves make_texts.py with the generators and the checks that keep calibration.txt and
eval.txt apart (each list is split in two there, one part per file).
"""

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

# The story and word-problem templates are shared by both files (only the names, places and items
# that fill them in are split). A story takes one sentence from each part, in order; a word problem
# is filled in with the numbers that make_texts.py rolls for its kind (MATH_DRAWS_EN /
# MATH_DRAWS_CN, same keys).
STORY_EN = [
    [
        "{name} lived in {place} and worked as a {job}.",
        "In the small town of {place} there was a {job} called {name}.",
        "Everyone in {place} knew {name}, the {job} who always arrived early.",
    ],
    [
        "Every morning {name} woke up at {hour} o'clock, made a pot of tea and read for a while.",
        "Each day began the same way: a short walk by the river, then breakfast at {hour} sharp.",
        "{name} liked the quiet hour before the town woke up and used it to plan the day.",
    ],
    [
        "One rainy afternoon {other} knocked on the door with a strange request.",
        "Then one spring a letter arrived from {other}, an old friend who had moved away years ago.",
        "But one winter the bridge into {place} was closed, and nothing went as planned.",
        "One day {other} asked for help with a problem nobody else had been able to solve.",
    ],
    [
        "At first {name} was not sure what to do. After thinking it over, {name} decided to "
        "ask the neighbours, and together they worked out a plan.",
        "{name} wrote down everything that was known, drew a small map, and set off before noon.",
        "It took three long days, two broken tools and a great deal of patience, but {name} did "
        "not give up.",
    ],
    [
        "In the end the problem was solved, and {other} said it was the best help anyone had ever given.",
        "By the end of the week the whole town was talking about it, and {name} simply smiled.",
        "Years later, {other} still told the story to anyone who would listen.",
    ],
]
STORY_CN = [
    [
        "星期天早上{hour}点，{a}和{b}约好一起去{place}。",
        "放学以后，{a}背着书包来到了{place}。",
        "今天天气很好，{a}的妈妈带着{a}去{place}玩。",
    ],
    [
        "路上，{a}看见一位老奶奶提着很重的东西，就主动上前帮忙。",
        "到了{place}，{a}发现那里的人特别多，大家都在排队。",
        "{b}说：“我们先把作业做完，再好好地玩吧！”",
    ],
    [
        "虽然有点累，但是大家都很开心。",
        "这件事让我明白了，帮助别人也是一种快乐。",
        "回家的路上，天边挂着一道美丽的彩虹。",
    ],
]
MATH_EN = {
    "bags": "Problem: {name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag. "
    "How many {item} does {name} have now?\n"
    "Solution: The bags hold {b} x {c} = {bagged} {item}. Together with the first "
    "{a}, that makes {a} + {bagged} = {total} {item}. The answer is {total}.",
    "train": "Problem: A train leaves {place} and travels at {speed} "
    "kilometres per hour for {hours} hours. How far does it go?\n"
    "Solution: {name} works it out: distance is speed times time, {speed} x {hours} = {distance} "
    "kilometres. The answer is {distance} km.",
    "discount": "Problem: A jacket costs ${price}. It is on sale for {pct}% off. What is the "
    "sale price?\nSolution: {name} notes that the discount is {pct}% of {price}, which is "
    "{price} x {pct} / 100 = {off:g}. The sale price is {price} - {off:g} = "
    "{sale:g} dollars.",
    "garden": "Problem: {name}'s garden is a rectangle {w} metres long and {h} metres wide. "
    "What are its area and its perimeter?\nSolution: For {name}'s garden, area = {w} x {h} = {area} "
    "square metres. Perimeter = 2 x ({w} + {h}) = {perimeter} metres.",
    "ages": "Problem: {name} is {age} years old and {name}'s mother is {diff} years older. "
    "How old will they be together in {years} years?\nSolution: {name}'s mother is "
    "{age} + {diff} = {mother} now. In {years} years they will be {child_later} "
    "and {mother_later}, which adds up to {together}.",
    "average": "Problem: {name} scored {firsts} and {last} on "
    "{count} tests. What is the average score?\nSolution: {name}'s total is "
    "{terms} = {total}. Dividing by {count} gives {mean:.2f}.",
    "pipes": "Problem: At {name}'s farm one pipe fills a tank in {a} hours and another fills it in "
    "{b} hours. How long do they take together?\nSolution: Together {name}'s pipes fill 1/{a} + 1/{b} = "
    "{a_plus_b}/{a_times_b} of the tank per hour, so the tank is full after {a_times_b}/{a_plus_b} "
    "= {hours:.2f} hours.",
    "sharing": "Problem: {name} shares {n} {item} equally among {k} friends. How many does each "
    "friend get, and how many are left over?\nSolution: For {name}, {n} divided by {k} is {q} with "
    "remainder {r}, because {k} x {q} = {shared} and {n} - {shared} = {r}. Each friend gets "
    "{q}, and {r} are left.",
}
MATH_CN = {
    "gifts": "题目：{name}有{a}个{item}，又买了{b}个，然后送给同学{c}个。{name}现在有多少个{item}？\n"
    "解答：{a}+{b}-{c}={left}（个）。答：{name}现在有{left}个{item}。",
    "price": "题目：每支{item}{p}元，{name}买了{n}支，一共要付多少元？\n"
    "解答：{p}×{n}={cost}（元）。答：{name}一共要付{cost}元。",
    "car": "题目：{name}家的汽车每小时行驶{speed}千米，{hours}小时能行驶多少千米？\n"
    "解答：路程=速度×时间，{speed}×{hours}={distance}（千米）。答：{name}家的汽车能行驶{distance}千米。",
    "field": "题目：{name}家有一块长方形菜地，长{w}米，宽{h}米，它的面积是多少平方米？周长是多少米？\n"
    "解答：{name}家菜地的面积={w}×{h}={area}（平方米），周长=({w}+{h})×2={perimeter}（米）。",
    "sharing": "题目：{name}把{n}个{item}平均分给{k}个小朋友，每人分到几个？还剩几个？\n"
    "解答：{n}÷{k}={q}……{r}。答：{name}的小朋友每人分到{q}个，还剩{r}个。",
}
