"""Quantization-aware distillation against llama.cpp's quantizer at the same size.

Why: llama.cpp rounds a float model once; `edge-llm distill --quant` trains the weights on the
grid they land on (convert/distill/qat.py). This benchmark asks whether that makes a better file
of the same size, on the held-out text, against the same F32 reference. Methods (``--methods``):

at Q4_0's size (91.7 MB for SmolLM2):
- ``q4_0``: llama.cpp's Q4_0; ``imatrix``: Q4_0 with an importance matrix (``imatrix auto``:
  calibration text); ``budget``: edge-llm's size budget at Q4_0's size (the slow one);
- ``qat``: the teacher's matrices trained on the Q4_0 grid by top-k KD on the calibration text
  for ``--minutes`` of training (``distill --quant Q4_0 --minutes M``), the GGUF packed from the
  trained grid (the same tensor types as llama.cpp's Q4_0, so the same size);

under ``--small-size`` (79.5 MB: the goal's "file under 80 MB"):
- ``q4_0-all``: llama.cpp with every matrix at Q4_0, the tied embedding too, with imatrix (76 MB;
  llama.cpp's own Q4_0 keeps the embedding at Q8_0, its rows of 576 fit no K-quant);
- ``budget-small``: edge-llm's size budget at that size;
- ``mix-small``: llama.cpp's mix ``--small-type`` (say Q4_K_M, with ``--small-size`` its size)
  with imatrix, the llama.cpp row at another mix's size;
- ``qat-small``: ``distill --target-size`` at that size (the budget's mix over the trainable
  types, then trained for ``--minutes``).

Each file is compared with the reference on bench/data/eval.txt (`bench.fidelity`: chunks of 512,
second half scored): mean KLD, top-1 and PPL ratio, each with a 95% interval (bootstrap over
blocks of 16 neighbouring tokens), and the QAT files against the best other file at their size
(within 5%), paired on the same tokens (`bench.fidelity.paired`: the ratio of mean
KLDs with its interval). The CPU time each method used is recorded; rows of methods not made now
are kept from the results file, and ``--remeasure`` measures existing files again without
remaking them.

The reference is SmolLM2-135M-Instruct's shipped GGUF (Q4_1, Q8_0 embedding) exported to F32:
its matrices lie on the Q4_1 grid, which favours no Q4_0 method over another, but does favour any
mix that puts matrices at Q4_1 (re-quantizing them is nearly lossless): the budget and qat-small
rows, whose goal verdicts therefore need an off-grid reference before they are evidence.

    python -m scripts.qat_quality --minutes 15 --chunks 8           # reduced run, ~45 min on 2 CPUs
    python -m scripts.qat_quality --minutes 20 --methods q4_0-all,budget-small,qat-small
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench import fidelity
from convert import convert
from convert.quant.options import calibration_path
from edge_llm import gguf_info
from edge_llm.fsutil import atomic_path, cache_dir

CALIBRATION = calibration_path()

ROOT = Path(__file__).resolve().parent.parent

MODEL = "smollm2-135m-instruct"
RESULTS = ROOT / "bench" / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def teacher(work: Path, degrid: bool = False) -> tuple[Path, Path]:
    """The F32 Hugging Face export and its F32 GGUF (the reference), made once; ``degrid``:
    `scripts.quant_quality`'s off-grid export (half a grid step of fixed-seed noise on every
    matrix of the shipped Q4_1 file) and its reference, shared with that benchmark."""
    if degrid:
        from scripts.quant_quality import prepare

        return prepare(MODEL, cache_dir() / "bench-quant" / MODEL, True)
    hf, ref = work / "hf", work / "reference-f32.gguf"
    if not (hf / "config.json").is_file():
        from convert.export_hf import export_hf
        from edge_llm.registry import resolve

        log("exporting SmolLM2 to an F32 Hugging Face folder (once)")
        export_hf(resolve(MODEL), hf, dtype="f32")
    if not ref.is_file():
        convert(hf, ref, type="F32")
    return hf, ref


ALL_Q4_0 = 'name = "Q4_0-all"\ndefault = "Q4_0"\nfile_type = "Q4_0"\n'
AT_Q4_0 = ("q4_0", "imatrix", "budget")  # the files QAT at Q4_0's size is paired against


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="QAT training budget")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="QAT optimizer steps instead of --minutes (the same training whatever the load)",
    )
    ap.add_argument(
        "--degrid",
        action="store_true",
        help="teacher and reference off the shipped file's Q4_1 grid (scripts.quant_quality "
        "--degrid's export); files and results apart (qat_quality-degrid.json)",
    )
    ap.add_argument("--chunks", type=int, default=8, help="eval chunks of 512 (None: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=5e-5, help="QAT learning rate")
    ap.add_argument(
        "--generate",
        action="store_true",
        help="QAT reads each calibration sequence once and fills the rest of its budget with the "
        "teacher's sampled continuations (recipe data.generate) instead of repeating the text",
    )
    ap.add_argument(
        "--more-text",
        type=int,
        default=0,
        metavar="BYTES",
        help="QAT also trains on this many bytes of further calibration-side text "
        "(scripts.make_texts.more_calibration: the calibration pools, other seeds, no document "
        "of calibration.txt, no line of eval.txt), so that longer runs see fresh text",
    )
    ap.add_argument(
        "--sampled-text",
        type=int,
        default=0,
        metavar="TOKENS",
        help="QAT also trains on about this many tokens of the teacher's own continuations of "
        "calibration prefixes, sampled at temperature 1 through llama.cpp (the reference GGUF, "
        "many sequences per batch: `sampled_text`), so it learns the teacher beyond the "
        "calibration text's documents",
    )
    ap.add_argument("--small-size", default="79.5MB", help="size of the small files")
    ap.add_argument(
        "--small-type",
        default="Q4_K_M",
        help="llama.cpp's mix for the mix-small row (give --small-size its file's size)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default bench/results/qat_quality[-degrid].json); give two runs at "
        "once different files, each rewrites its file whole",
    )
    ap.add_argument(
        "--methods",
        default="q4_0,imatrix,qat",
        help="which rows to make now, of q4_0, imatrix, budget, qat, q4_0-all, budget-small, mix-small, "
        "qat-small (others are kept from an earlier run's results file)",
    )
    ap.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the methods' existing files again instead of remaking them",
    )
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    out_json = args.out or RESULTS / f"qat_quality{'-degrid' if args.degrid else ''}.json"
    work = cache_dir() / "bench-qat" / (MODEL + ("-degrid" if args.degrid else ""))
    work.mkdir(parents=True, exist_ok=True)
    hf, ref = teacher(work, args.degrid)
    text = (ROOT / "bench" / "data" / "eval.txt").read_text(encoding="utf-8")
    tag = run_tag(args)
    texts, budget = qat_texts(args, work, ref, text)
    keys = row_keys(args, set(args.methods.split(",")), tag)
    s = Session(args, out_json, keys, hf, ref, text, texts)
    with fidelity.cached_references():
        make_all(s, work, tag, budget)
    print(table(s.rows))
    verdicts = goal_verdicts(s.rows)
    s.save(verdicts=verdicts, scored_tokens=(s.rows[0]["tokens"] if s.rows else None))
    return 0


def run_tag(args) -> str:
    """The QAT files' and rows' tag: their training budget and data."""
    return (
        (f"{args.steps}steps" if args.steps else f"{args.minutes:g}min")
        + ("-gen" if args.generate else "")
        + (f"-more{args.more_text}" if args.more_text else "")
        + (f"-sampled{args.sampled_text}" if args.sampled_text else "")
    )


def qat_texts(args, work: Path, ref: Path, text: str) -> tuple[list[Path] | None, str]:
    """(QAT's training texts, None: the default corpus; its budget in words for the rows)."""
    budget = f"--steps {args.steps}" if args.steps else f"--minutes {args.minutes:g}"
    texts = None
    if args.more_text:
        texts = [CALIBRATION, more_text(work, args.more_text, text)]
        budget += f" (+ {args.more_text / 1e3:.0f} kB further text)"
    if args.sampled_text:
        texts = (texts or [CALIBRATION]) + [
            sampled_text(work, ref, args.sampled_text, threads=args.threads)
        ]
        budget += f" (+ {args.sampled_text / 1e3:.0f}k tokens sampled from the teacher)"
    return texts, budget


def row_keys(args, methods: set[str], tag: str) -> dict[str, str]:
    """Each method's row key: QAT rows carry their tag, the small rows their size."""
    keys = {m: (f"{m}-{tag}" if m.startswith("qat") else m) for m in methods}
    return {m: (f"{k}@{args.small_size}" if "small" in m else k) for m, k in keys.items()}


class Session:
    """One invocation: the rows so far (the results file rewritten after each), the rows of an
    earlier run that this one remakes (``old``), and what every method is measured against."""

    def __init__(self, args, out_json: Path, keys: dict, hf: Path, ref: Path, text: str, texts):
        self.args, self.out_json, self.keys = args, out_json, keys
        self.hf, self.ref, self.text, self.texts = hf, ref, text, texts
        self.rows, self.old = [], {}
        if out_json.is_file():  # rows of methods not made now come from the earlier run
            for x in json.loads(out_json.read_text())["rows"]:
                if x.get("key") in keys.values():
                    self.old[x["key"]] = x
                else:
                    self.rows.append(x)

    def save(self, **extra) -> None:
        self.out_json.parent.mkdir(parents=True, exist_ok=True)
        self.out_json.write_text(
            json.dumps(
                {"model": MODEL, "args": vars(self.args), "rows": self.rows, **extra},
                indent=1,
                default=str,
            )
        )

    def measure(
        self, key: str, label: str, method: str, path: Path, cpu: float, wall: float, **extra
    ):
        r = fidelity.compare(
            self.ref,
            path,
            self.text,
            n_ctx=512,
            threads=self.args.threads,
            max_chunks=self.args.chunks,
            per_token=True,
        )
        np.savez_compressed(tokens_file(path), **r.pop("per_token"))
        info = gguf_info.read(path)
        row = {
            "key": key,
            "file": label,
            "path": str(path),
            "method": method,
            "bytes": info.file_size,
            "bpw": info.bits_per_weight,
            "cpu_s": round(cpu, 1),
            "wall_s": round(wall, 1),
            **r,
            **extra,
        }
        self.rows.append(row)
        self.save()
        k = row["mean_kld_ci95"]
        log(
            f"{label}: {row['bytes'] / 1e6:.1f} MB KLD {row['mean_kld']:.5f} ({k[0]:.5f}-{k[1]:.5f}) "
            f"top-1 {100 * row['top1']:.2f}% PPL ratio {row['ppl_ratio']:.4f} ({cpu:.0f} CPU s)"
        )

    def made(self, method: str, label: str, how: str, path: Path, fn, **extra):
        if method not in self.keys:
            return
        key = self.keys[method]
        if self.args.remeasure:
            if key not in self.old or not path.is_file():
                log(f"{label}: no earlier row or no file at {path} to measure again; skipped")
                return
            o = self.old[key]
            extra = {k: o[k] for k in ("qat", "recipe") if k in o} | extra
            self.measure(key, o["file"], o["method"], path, o["cpu_s"], o["wall_s"], **extra)
            return
        c0, t0 = cpu_seconds(), time.perf_counter()
        fn()
        self.measure(key, label, how, path, cpu_seconds() - c0, time.perf_counter() - t0, **extra)

    def qat(self, path: Path, info: dict, **kw):
        from convert.distill import distill
        from convert.distill.recipe import recipe_from_dict

        args = self.args
        r = recipe_from_dict(
            {
                "kd": {
                    "seq_len": 256,
                    "batch_size": 4,
                    "top_k": 64,
                    "lr": args.lr,
                    "warmup": 0.05,
                    "checkpoint_every": 25,
                },
                "data": {"generate": args.generate},
            }
        )
        res = distill(
            self.hf,
            path.with_suffix(""),
            recipe=r,
            minutes=None if args.steps else args.minutes,
            steps=args.steps,
            device=args.device,
            gguf=path,
            texts=self.texts,
            threads=args.threads,
            force=True,
            **kw,
        )
        info.update(
            steps=res.steps,
            tokens=res.tokens,
            step_seconds=res.step_seconds,
            loss_first=res.loss_first,
            loss_last=res.loss_last,
            lr=args.lr,
            generated_sequences=res.generated_sequences,
            types=dict(sorted(Counter(res.tensor_types.values()).items())),
        )


def make_all(s: Session, work: Path, tag: str, budget: str) -> None:
    """Each method's file made (or measured again) and measured, in turn."""
    hf, small = s.hf, s.args.small_size
    q4 = work / "q4_0.gguf"
    s.made("q4_0", "Q4_0", "llama.cpp", q4, lambda: convert(hf, q4, type="Q4_0", force=True))
    im = work / "q4_0-im.gguf"
    s.made(
        "imatrix",
        "Q4_0+imatrix",
        "llama.cpp + imatrix",
        im,
        lambda: convert(hf, im, type="Q4_0", imatrix="auto", force=True),
    )
    bud = work / "budget.gguf"
    s.made(
        "budget",
        "budget@Q4_0",
        "edge-llm budget",
        bud,
        lambda: convert(hf, bud, target_size=q4.stat().st_size, force=True),
    )
    info: dict = {}
    path = work / f"qat-q4_0-{tag}.gguf"
    s.made(
        "qat",
        f"QAT Q4_0 ({tag})",
        f"edge-llm distill --quant Q4_0 {budget}" + (" (data.generate)" if s.args.generate else ""),
        path,
        lambda: s.qat(path, info, quant="Q4_0"),
        qat=info,
    )
    allq = work / "q4_0-all-im.gguf"
    rec = work / "q4_0-all.toml"
    rec.write_text(ALL_Q4_0)
    s.made(
        "q4_0-all",
        "all Q4_0+imatrix",
        "llama.cpp, every matrix Q4_0, + imatrix",
        allq,
        lambda: convert(hf, allq, recipe=str(rec), imatrix="auto", force=True),
    )
    bs = work / f"budget-{small}.gguf"
    s.made(
        "budget-small",
        f"budget@{small}",
        "edge-llm budget",
        bs,
        lambda: convert(hf, bs, target_size=small, force=True),
    )
    ms = work / f"{s.args.small_type.lower()}-im.gguf"
    s.made(
        "mix-small",
        f"{s.args.small_type}+imatrix",
        "llama.cpp + imatrix",
        ms,
        lambda: convert(hf, ms, type=s.args.small_type, imatrix="auto", force=True),
    )
    info_s: dict = {}
    path_s = work / f"qat-{small}-{tag}.gguf"
    s.made(
        "qat-small",
        f"QAT budget@{small} ({tag})",
        f"edge-llm distill --target-size {small} {budget}",
        path_s,
        lambda: s.qat(path_s, info_s, target_size=small),
        qat=info_s,
    )


def table(rows: list[dict]) -> str:
    """The rows as markdown, largest file first."""
    lines = [
        "| file | method | MB | bpw | mean KLD (95%) | p99 KLD | top-1 % (95%) | PPL ratio (95%) | CPU s |",
        "|" + "---|" * 9,
    ]
    for x in sorted(rows, key=lambda x: -x["bytes"]):
        k, t, q = x.get("mean_kld_ci95"), x.get("top1_ci95"), x.get("ppl_ratio_ci95")
        kc = f" ({k[0]:.4f}-{k[1]:.4f})" if k else ""
        tc = f" ({100 * t[0]:.1f}-{100 * t[1]:.1f})" if t else ""
        qc = f" ({q[0]:.3f}-{q[1]:.3f})" if q else ""
        lines.append(
            f"| {x['file']} | {x['method']} | {x['bytes'] / 1e6:.2f} | {x['bpw']:.2f} | "
            f"{x['mean_kld']:.4f}{kc} | {x['kld_percentiles']['p99']:.3f} | {100 * x['top1']:.2f}{tc} | "
            f"{x['ppl_ratio']:.4f}{qc} | {x['cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def goal_verdicts(rows: list[dict]) -> list[dict]:
    """Each QAT row against the best other file of its size, and the goals; each printed."""
    verdicts = []
    by_key = {x.get("key"): x for x in rows}
    at_q4 = [by_key[k] for k in AT_Q4_0 if k in by_key]
    for x in rows:
        if not str(x.get("key", "")).startswith("qat"):
            continue
        # against the best non-QAT file of its size (within 5%: the files made for the same
        # budget), paired on the same tokens
        others = [
            o
            for o in rows
            if not str(o.get("key", "")).startswith("qat")
            and 0.95 * x["bytes"] <= o["bytes"] <= 1.05 * x["bytes"]
        ]
        v = {"file": x["file"], "bytes": x["bytes"]}
        if others:
            best = min(others, key=lambda o: o["mean_kld"])
            v["against"] = best["file"]
            try:
                v.update(paired_tokens(best, x))
            except (OSError, KeyError, ValueError, fidelity.FidelityError) as e:
                v["paired"] = f"not paired: {e}"
        if at_q4 and "q4_0" in by_key and x["bytes"] <= 1.001 * by_key["q4_0"]["bytes"]:
            best = min(at_q4, key=lambda o: o["mean_kld"])
            ratio = x["mean_kld"] / best["mean_kld"]
            with contextlib.suppress(OSError, KeyError, ValueError, fidelity.FidelityError):
                p = paired_tokens(best, x)
                ratio, v["q4_0_ratio_ci95"] = p["kld_ratio"], p["kld_ratio_ci95"]
            v["goal"] = f"within Q4_0's size, KLD <= 0.5x the best there ({best['file']})"
            v["q4_0_ratio"], v["met"] = ratio, ratio <= 0.5
        if x["bytes"] < 80e6:
            v["goal_small"] = "under 80 MB with top-1 >= 80%"
            v["met_small"] = x["top1"] >= 0.80
        verdicts.append(v)
        print(json.dumps(v))
    return verdicts


def more_text(work: Path, size: int, evaluation: str) -> Path:
    """``size`` bytes of further calibration-side text (`make_texts.more_calibration`), written
    once into ``work`` (atomically: a killed run leaves no partial file for the next to reuse)."""
    from scripts.make_texts import more_calibration

    path = work / f"more-text-{size}.txt"
    if not path.is_file():
        with atomic_path(path) as tmp:
            tmp.write_text(
                more_calibration(size, CALIBRATION.read_text("utf-8"), evaluation), "utf-8"
            )
    return path


def sampled_text(
    work: Path,
    ref: Path,
    tokens: int,
    *,
    length: int = 256,
    prompt_tokens: int = 32,
    n_seq: int = 64,
    seed: int = 0,
    threads: int | None = None,
) -> Path:
    """About ``tokens`` tokens of the teacher's own text, written once into ``work`` (one JSONL
    record a document): documents of up to ``length`` tokens, each a ``prompt_tokens`` window of
    calibration.txt at a random offset, continued by sampling the reference GGUF at temperature 1
    (the distribution the KD loss is an expectation over; an end-of-generation token ends a
    document early). `edge_llm.llama.batched.sample_continuations` samples ``n_seq`` documents
    together, which is what makes this affordable on a CPU (266 tokens/s on 2 cores for SmolLM2,
    against 70 for transformers' generate). Written atomically: a killed run leaves no partial file."""
    from edge_llm.llama.batched import sample_continuations
    from edge_llm.llama.scoring import ScoringContext

    path = work / f"sampled-{tokens}-s{seed}.jsonl"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    docs: list[list[int]] = []
    made, t0 = 0, time.perf_counter()
    with ScoringContext(ref) as sc:  # the GGUF's tokenizer (no context is opened)
        calib = sc.tokenize(CALIBRATION.read_text("utf-8"), add_special=False)
        while made < tokens:
            starts = rng.integers(0, len(calib) - prompt_tokens, n_seq)
            wave = sample_continuations(
                ref,
                [calib[a : a + prompt_tokens] for a in starts],
                length=length,
                seed=int(rng.integers(1 << 31)),
                n_seq=n_seq,
                threads=threads,
            )
            docs += wave
            made += sum(map(len, wave))
            log(f"sampled {made}/{tokens} tokens ({made / (time.perf_counter() - t0):.0f}/s)")
        text = [b"".join(map(sc.token_to_piece, d)).decode("utf-8", "replace") for d in docs]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in text), "utf-8")
    return path


def tokens_file(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".tokens.npz")


def paired_tokens(a: dict, b: dict) -> dict:
    """`bench.fidelity.paired` on two rows' saved per-token values."""
    load = lambda row: {"per_token": dict(np.load(tokens_file(Path(row["path"]))))}  # noqa: E731
    return fidelity.paired(load(a), load(b))


if __name__ == "__main__":
    sys.exit(main())
