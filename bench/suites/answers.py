"""Exact numeric answers: read the number a model gave, compare it with the true one exactly.

``extract(text)`` finds the answer in a completion, in English or Chinese:

1. after the last answer marker ("The answer is", "answer:", "答案是", "答案为", "答案：", "答：",
   "所以", "=" at the end of a line of working), the first number that follows;
2. otherwise the last number in the text (lm-evaluation-harness's "flexible extract").

Numbers may be written "42", "-3", "42.0", "1,234" (commas between groups of three digits),
"1/2", "1 1/2" (a mixed number), "\\frac{1}{2}", "2分之1" (Chinese: 1/2), in full-width digits
("４２") or with a currency sign or unit around them ("$4.50", "12个", "25%": 25). They become
``fractions.Fraction`` values, so "0.5", "1/2" and "2/4" are the same answer and "42.0" equals 42.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

# A number: digits with optional thousands groups, an optional decimal part.
_INT = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_DEC = rf"(?:{_INT})(?:\.\d+)?"
_NUMBER = re.compile(
    r"(?P<sign>(?<![\dA-Za-z)\]])-(?=[\d\\]))?"  # "-3", not the minus of "5-3"
    r"(?:\\d?frac\{(?P<fn>\d+)\}\{(?P<fd>\d+)\}"  # \frac{1}{2}
    rf"|(?P<cd>\d+)\s*分之\s*(?P<cn>\d+)"  # 2分之1 = 1/2
    rf"|(?P<mw>\d+)\s+(?P<mn>\d+)\s*/\s*(?P<md>\d+)(?!\d|\.\d)"  # 1 1/2
    rf"|(?P<num>{_DEC})(?:\s*/\s*(?P<den>{_DEC}))?)"
)
_MARKERS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*[:：]|答案\s*(?:是|为|[:：])|答\s*[:：]|所以)",
    re.IGNORECASE,
)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)  # full-width digits, colons and commas
    return text.replace("\u2212", "-").replace("\u2013", "-")  # minus signs


def _value(m: re.Match) -> Fraction | None:
    g = m.groupdict()
    try:
        if g["fn"] is not None:
            v = Fraction(int(g["fn"]), int(g["fd"]))
        elif g["cd"] is not None:
            v = Fraction(int(g["cn"]), int(g["cd"]))
        elif g["mw"] is not None:
            n, d = int(g["mn"]), int(g["md"])
            if not 0 < n < d:
                return None
            v = int(g["mw"]) + Fraction(n, d)
        else:
            v = Fraction(g["num"].replace(",", ""))
            if g["den"] is not None:
                v = v / Fraction(g["den"].replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    return -v if g["sign"] else v


def _numbers(text: str) -> list[Fraction]:
    return [v for m in _NUMBER.finditer(text) if (v := _value(m)) is not None]


def extract(text: str) -> Fraction | None:
    """The answer in ``text`` as an exact number, or None when it names none."""
    text = _normalise(text)
    markers = list(_MARKERS.finditer(text))
    if markers:
        nums = _numbers(text[markers[-1].end() :])
        if nums:
            return nums[0]
    nums = _numbers(text)
    return nums[-1] if nums else None


def parse(answer: str | int | float) -> Fraction:
    """A reference answer ("42", "1/2", "3.5", 7) as an exact number; ValueError if it is not one."""
    if isinstance(answer, bool):
        raise ValueError(f"{answer!r} is not a number")
    if isinstance(answer, int | float):
        return Fraction(str(answer))
    text = _normalise(str(answer)).strip()
    m = _NUMBER.fullmatch(text)
    v = _value(m) if m else None
    if v is None:
        raise ValueError(f"{answer!r} is not a number")
    return v


def is_correct(completion: str, answer: str | int | float | Fraction) -> bool:
    want = answer if isinstance(answer, Fraction) else parse(answer)
    got = extract(completion)
    return got is not None and got == want


def show(value: Fraction) -> str:
    """How an exact answer is written: 7, 3.25, or 2/3 (when no finite decimal exists)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        s = f"{float(value):.10f}".rstrip("0").rstrip(".")
        if Fraction(s) == value:
            return s
    return f"{value.numerator}/{value.denominator}"
