"""The templates scripts/make_texts.py fills in: how-to topics with their steps (and the answers'
opening and closing lines), and short code snippets with {placeholders} for names and numbers.

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
