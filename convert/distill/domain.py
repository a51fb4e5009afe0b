"""Domain corpora for targeted students: text tagged with a domain, and the built-in K-12 math
training corpus.

Why: a small model beats a big general one in its domain only if it is taught that domain. A
distillation corpus therefore carries a `domain` tag per document (JSONL: {"text": ...,
"domain": "k12-math"}; plain text files and untagged records are general text), and with
``--domain NAME`` the student is trained on the domain's documents with cross-entropy on their
gold text mixed with KD on the teacher (recipe [domain]), beside KD on the general text.

The built-in ``k12-math`` corpus is drawn from convert/distill/k12_train.toml: worked solutions
in English and Chinese, numbers drawn and answers computed exactly with the benchmark's own
generator code (bench/suites/k12_math.py), so every solution is correct by construction; its
templates are disjoint from the benchmark's (tests/convert/test_domain.py), in the benchmark's
question/answer layout, so what a student learns is the skill and the format, not the test.
"""

from __future__ import annotations

import functools
import json
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConvertError

K12_TRAIN = Path(__file__).with_name("k12_train.toml")
BUILTIN = ("k12-math",)
_EXPR = re.compile(r"\{=([^}]+)\}")
_VAR = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Document:
    text: str
    domain: str | None = None


def read_tagged(paths: list[str | Path]) -> list[Document]:
    """Documents with their domain: a .jsonl file's records ({"text": str, "domain": str?}),
    any other file whole and untagged."""
    from convert.distill.data import read_documents

    docs: list[Document] = []
    for p in paths:
        p = Path(p)
        if p.suffix.lower() != ".jsonl":
            docs += [Document(t) for t in read_documents([p])]
            continue
        texts = read_documents([p])  # checks the file and every record's "text"
        domains = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            dom = rec.get("domain")
            if dom is not None and not isinstance(dom, str):
                raise ConvertError(f'{p}:{n}: "domain" must be a string such as "k12-math"')
            if rec["text"].strip():
                domains.append(dom)
        docs += [Document(t, d) for t, d in zip(texts, domains)]
    return docs


@dataclass(frozen=True)
class TrainTemplate:
    id: str
    template: object  # bench.suites.k12_math.Template
    solution: dict[str, str]


@functools.cache
def k12_templates(path: Path = K12_TRAIN) -> tuple[list[TrainTemplate], dict, dict]:
    from bench.suites import k12_math as K

    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    out, seen = [], set()
    for i, raw in enumerate(data["template"], 1):
        tid = raw.get("id") or f"#{i}"
        if tid in seen:
            raise ConvertError(f"{path}: template id {tid} is used twice")
        seen.add(tid)
        t = K.Template(
            grade=int(raw["grade"]),
            kind=str(raw["kind"]),
            text={lang: str(raw[lang]) for lang in K.LANGUAGES},
            vars={k: str(v) for k, v in raw["vars"].items()},
            answer=str(raw["answer"]),
        )
        sol = {lang: str(raw[f"solution_{lang}"]) for lang in K.LANGUAGES}
        out.append(TrainTemplate(tid, t, sol))
    split = Path(K.__file__).with_name("k12_split.toml")  # the benchmark's template split
    if split.is_file():
        sp = tomllib.loads(split.read_text(encoding="utf-8"))
        allowed = set(sp.get("training", {}).get("templates", []))
        bench = set(sp.get("benchmark", {}).get("templates", []))
        for tt in out:
            if tt.id in bench or tt.id not in allowed:
                raise ConvertError(
                    f"{path}: template {tt.id} is not a training template of {split}; list it under [training] there"
                )
    return out, data["prompt"], data["names"]


def _fill(text: str, env: dict, values: dict) -> str:
    from bench.suites import answers
    from bench.suites import k12_math as K

    text = _EXPR.sub(lambda m: answers.show(K.evaluate(m.group(1), env)), text)
    return _VAR.sub(lambda m: values[m.group(1)], text)


def k12_problems(n: int, seed: int = 0, path: Path = K12_TRAIN) -> list[dict]:
    """``n`` worked problems (balanced over grades and EN/ZH), each {"id", "grade", "language",
    "question", "solution", "answer", "text"}; ``text`` is the benchmark's layout
    (question line, answer line). Deterministic for (n, seed)."""
    from bench.suites import answers
    from bench.suites import k12_math as K

    templates, prompts, names = k12_templates(path)
    combos = [(g, lang) for g in K.GRADES for lang in K.LANGUAGES]
    by_grade = {g: [t for t in templates if t.template.grade == g] for g in K.GRADES}
    out = []
    for i in range(n):
        grade, lang = combos[i % len(combos)]
        rng = random.Random(f"k12-train:{seed}:{i}")
        pool = by_grade[grade]
        tt = pool[K._uniform(rng, 0, len(pool) - 1)]
        env = K.draw(tt.template, rng)
        name = names[lang][K._uniform(rng, 0, len(names[lang]) - 1)]
        values = {k: answers.show(v) for k, v in env.items()} | {"name": name}
        question = _fill(tt.template.text[lang], env, values)
        solution = _fill(tt.solution[lang], env, values)
        answer = answers.show(K.evaluate(tt.template.answer, env))
        if not solution.rstrip("。.").endswith(answer) or answers.extract(solution) != K.evaluate(
            tt.template.answer, env
        ):
            raise ConvertError(
                f"{path}: template {tt.id}'s solution does not end with its answer ({solution!r} vs {answer})"
            )
        p = prompts[lang]
        sep = "" if lang == "zh" else " "
        text = f"{p['question']}{question}\n{p['answer']}{sep}{solution}"
        out.append(
            {
                "id": f"{tt.id}:{seed}:{i}",
                "template": tt.id,
                "grade": grade,
                "language": lang,
                "question": question,
                "solution": solution,
                "answer": answer,
                "text": text,
            }
        )
    return out


def builtin_documents(domain: str, n: int, seed: int) -> list[Document]:
    if domain != "k12-math":
        raise ConvertError(
            f'--domain {domain}: no built-in corpus; built in: {", ".join(BUILTIN)} (or tag your JSONL records with "domain")'
        )
    return [Document(p["text"], domain) for p in k12_problems(n, seed)]
