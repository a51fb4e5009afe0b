"""Distillation and knowledge density: does pruning + healing buy capability per FLOP?

Teacher: SmolLM2-135M-Instruct, the full checkpoint (the shipped GGUF exported to Hugging Face at
F32, cached under ~/.cache/edge-llm/bench-distill/). Students, depth-pruned to 20 of 30 layers by
block influence:
  (a) pruned, not healed;
  (b) pruned and healed by KD on the teacher's top-64 logits over the calibration corpus, with a
      token budget sized to a wall-clock budget (--minutes, default 40) measured on this machine
      (a probe times the teacher's forward and the student's training step first).
All three are converted to GGUF (F16) and measured with `edge-llm bench --suite quick`, each in
its own process: bpb on the held-out eval.txt, k12-math, mmlu, fidelity to the teacher's GGUF,
FLOPs/token, density per GFLOP. Goals:
  (b) recovers >= 50% of the bpb gap between (a) and the teacher;
  (b)'s density (capability per GFLOP/token) >= 1.3x the teacher's and >= 1.2x (a)'s.

--targeted adds the targeted students (issue 18), trained for the same tokens as (b):
  (c) pruned to 20 of 30 layers (0.74x the teacher's FLOPs/token) and healed with the K-12 domain
      mix (`distill --domain k12-math`: half the sequences from the built-in worked-solution
      corpus, CE on their gold text mixed with KD; the rest KD on the calibration corpus);
  (d) the fair baseline: the teacher itself (30 layers) trained on the same mix for the same tokens.
Goal: (c)'s K-12 capability (the mean of its k12-math and k12-robust accuracies) per GFLOP >=
1.3x the teacher's, with the paired verdict on k12-math "better" than the teacher; k12-robust is
reported beside it (a student that memorised its templates shows it there), and (c) is paired
against (d) as well.

    python -m scripts.distill_density [--minutes 40] [--tokens N] [--device cpu] [--skip-bench] [--targeted]
    python -m scripts.distill_density --targeted --students '' --suite bench/suites/k12.toml --minutes 15
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edge_llm.fsutil import atomic_path
from scripts.bench_cmd import bench_argv

ROOT = Path(__file__).resolve().parent.parent

WORK = Path.home() / ".cache/edge-llm/bench-distill"
# F32 exports of the same shipped GGUF that other benchmarks may have made already
EXPORTS = [
    Path.home() / ".cache/edge-llm/bench-quant/smollm2-135m-instruct/hf",
    Path.home() / ".cache/edge-llm/bench-qat/smollm2-135m-instruct/hf",
]
KEEP = 20
SEQ, BATCH = 256, 4


def teacher_hf(work: Path) -> Path:
    """The F32 Hugging Face export of SmolLM2 (reused from scripts/quant_quality's or
    scripts/qat_quality's cache if there)."""
    out = work / "SmolLM2-135M-Instruct"
    if (out / "config.json").is_file():
        return out
    found = [p for p in EXPORTS if (p / "model.safetensors").is_file()]
    if found:
        shutil.copytree(found[0], out.with_suffix(".part"), dirs_exist_ok=True)
    else:
        from convert.export_hf import export_hf
        from edge_llm.registry import resolve

        print("exporting SmolLM2 to a Hugging Face folder (once)", file=sys.stderr)
        export_hf(resolve("smollm2-135m-instruct"), out.with_suffix(".part"), dtype="f32")
    out.with_suffix(".part").rename(out)
    return out


def recipe(tokens: int, freeze: bool, domain: bool = False):
    from convert.distill.recipe import recipe_from_dict

    extra = {"domain": {"fraction": 0.5, "ce_weight": 0.5}} if domain else {}
    return recipe_from_dict(
        extra
        | {
            "kd": {
                "seq_len": SEQ,
                "batch_size": BATCH,
                "top_k": 64,
                "lr": 3e-4,
                "warmup": 0.05,
                "min_lr_ratio": 0.1,
                "temperature": 1.0,
                "alpha": 0.0,
                "tokens": tokens,
                "checkpoint_every": 25,
                "freeze_embeddings": freeze,
            },
            # beyond the corpus, repeat it: the probe times training and the teacher's forward, not
            # the teacher's sampling of new sequences (slow on a CPU), so generating would overrun
            "data": {"calibration_sequences": 16, "generate": False},
        }
    )


def probe(teacher: Path, device: str, freeze: bool) -> tuple[float, float]:
    """(teacher forward tokens/s, student training tokens/s) on this machine, now: the teacher
    truncated to KEEP layers stands in for the student (same shapes)."""
    import torch
    from transformers import AutoModelForCausalLM

    from convert.distill.kd import kd_loss

    m = AutoModelForCausalLM.from_pretrained(str(teacher), dtype=torch.float32).to(device)
    x = torch.randint(0, m.config.vocab_size, (BATCH, SEQ), device=device)
    with torch.no_grad():
        m(x[:1, :32])
        t0 = time.perf_counter()
        m(x, use_cache=False)
        t_fwd = time.perf_counter() - t0
    m.model.layers = m.model.layers[:KEEP]
    m.config.num_hidden_layers = KEEP
    if freeze:
        m.get_input_embeddings().weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-6)
    idx = torch.randint(0, m.config.vocab_size, (BATCH, SEQ, 64), device=device)
    lp = torch.full((BATCH, SEQ, 64), math.log(0.5 / 64), device=device)
    rest = torch.full((BATCH, SEQ), math.log(0.5), device=device)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        kd_loss(m(x, use_cache=False).logits, idx, lp, rest, temperature=1.0).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return BATCH * SEQ / t_fwd, BATCH * SEQ / min(times)


def bench(
    model: Path,
    label: str,
    out: Path,
    reference: Path | None,
    threads: int | None,
    suite: str = "quick",
) -> dict:
    from bench import store

    cmd = bench_argv(model, suite, out, recipe=label, reference=reference, threads=threads)
    print(f"\n=== {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return store.load(out)[-1]


def row(r: dict) -> dict:
    t = r["tasks"]
    get = lambda task, key="score": t.get(task, {}).get(key)  # noqa: E731
    gflops = r["compute"]["flops_per_token"] / 1e9
    k12 = [v for v in (get("k12-math"), get("k12-robust")) if v is not None]
    k12_cap = sum(k12) / len(k12) if k12 else None
    return {
        "bpb": get("bpb", "bpb"),
        "k12_math": get("k12-math"),
        "k12_robust": get("k12-robust"),
        "mmlu": get("mmlu"),
        "capability": r["capability"],
        # the targeted goal's measure: the K-12 tasks only (accuracy: their chance level is 0)
        "k12_capability": k12_cap,
        "gflops_per_token": gflops,
        "density_per_gflop": r["density"]["per_gflop"],
        "k12_density_per_gflop": None if k12_cap is None else k12_cap / gflops,
        "mean_kld": get("fidelity", "mean_kld"),
        "top1": get("fidelity", "top1"),
        "params": r["compute"]["params_total"],
        "run_id": r.get("run_id"),
        "capability_ci95": r.get("capability_ci95"),
        "decode_tokens_per_s": r["compute"]["decode_tokens_per_s"],
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=40.0, help="wall budget of the healing (b)")
    ap.add_argument("--tokens", type=int, default=None, help="token budget (instead of --minutes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--bench-threads", type=int, default=None)
    ap.add_argument(
        "--train-embeddings",
        action="store_true",
        help="train the (tied) embedding too; default: decoder layers only",
    )
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument(
        "--targeted",
        action="store_true",
        help="also (c) and (d): the K-12 targeted student and its baseline",
    )
    ap.add_argument(
        "--students",
        default="a,b",
        help="which of the generic students to make and measure (a, b; none: '')",
    )
    ap.add_argument(
        "--suite",
        default="quick",
        help="capability suite of the measurements (quick, full or a .toml: bench/suites/k12.toml "
        "is the K-12 tasks alone, with more k12-math items, for the targeted goal)",
    )
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/distill_density.jsonl")
    ap.add_argument("--summary", type=Path, default=ROOT / "bench/results/distill_density.json")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    students = {x for x in args.students.split(",") if x}

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    freeze = not args.train_embeddings
    teacher = teacher_hf(args.work)
    t_gguf = f16(teacher, args.work / "teacher-F16.gguf")
    ggufs = {"teacher": t_gguf}
    if "a" in students:
        ggufs["a"] = student_a(args, teacher, freeze)
    tokens, probed = token_budget(args, teacher, freeze)
    summary = {
        "teacher": str(teacher),
        "keep_layers": KEEP,
        "tokens": tokens,
        "minutes": args.minutes,
        "device": args.device,
        "freeze_embeddings": freeze,
        "seq_len": SEQ,
        "batch": BATCH,
        "suite": args.suite,
        "probe": probed,
    }
    if "b" in students:
        ggufs["b"] = student_b(args, teacher, tokens, freeze, summary)
    if args.targeted:  # (c) pruned + K-12 domain mix, (d) the teacher on the same mix
        summary["targeted"] = {}
        for key, keep in (("c", KEEP), ("d", None)):
            ggufs[key] = targeted(args, teacher, key, keep, tokens, freeze, summary["targeted"])
    summary["ggufs"] = {k: str(v) for k, v in ggufs.items()}
    if not args.skip_bench:
        measure(args, ggufs, t_gguf, tokens, summary)
    write_summary(args.summary, summary)
    return 0


def f16(hf: Path, gguf: Path) -> Path:
    """The F16 GGUF of a Hugging Face folder, converted once."""
    from convert import convert

    if not gguf.is_file():
        convert(hf, gguf, type="F16")
    return gguf


def student_a(args, teacher: Path, freeze: bool) -> Path:
    """(a): pruned, not healed."""
    from convert.distill import distill

    a_dir, a_gguf = args.work / f"student-a-{KEEP}", args.work / f"student-a-{KEEP}-F16.gguf"
    if not (a_dir / "config.json").is_file():
        shutil.rmtree(a_dir, ignore_errors=True)
        ra = distill(
            teacher, a_dir, layers=KEEP, steps=0, device=args.device, recipe=recipe(0, freeze)
        )
        print(f"(a) kept layers {ra.kept_layers}", file=sys.stderr)
    return f16(a_dir, a_gguf)


def token_budget(args, teacher: Path, freeze: bool) -> tuple[int, dict]:
    """The token budget of the healing (b), and of (c) and (d): --tokens, or what --minutes
    allow at the probed speeds. Returns (tokens, the probe's speeds)."""
    fwd_tps = train_tps = None
    if args.tokens:
        tokens = args.tokens
    else:
        fwd_tps, train_tps = probe(teacher, args.device, freeze)
        # seconds = tokens / train + tokens / teacher forward (top-k cache) + fixed costs
        budget_s = max(args.minutes * 60 - 60, 30)
        tokens = int(budget_s / (1 / train_tps + 1 / fwd_tps))
        tokens = max(BATCH * SEQ, tokens // (BATCH * SEQ) * (BATCH * SEQ))
        print(
            f"probe: teacher forward {fwd_tps:.0f} tok/s, student KD step {train_tps:.0f} tok/s "
            f"-> {tokens} tokens in {args.minutes:g} min",
            file=sys.stderr,
        )
    return tokens, {"teacher_forward_tokens_per_s": fwd_tps, "train_tokens_per_s": train_tps}


def student_b(args, teacher: Path, tokens: int, freeze: bool, summary: dict) -> Path:
    """(b): healed within the budget; its training goes into ``summary``."""
    from convert.distill import distill

    b_dir, b_gguf = (
        args.work / f"student-b-{KEEP}-{tokens}",
        args.work / f"student-b-{KEEP}-{tokens}-F16.gguf",
    )
    rb = None
    t0 = time.perf_counter()
    if not (b_dir / "config.json").is_file():
        shutil.rmtree(b_dir, ignore_errors=True)
        from convert.distill.cli import progress_bar

        bar, update = progress_bar()
        resume = (args.work / f".{b_dir.name}.distill-work").is_dir()
        with bar:
            rb = distill(
                teacher,
                b_dir,
                layers=KEEP,
                recipe=recipe(tokens, freeze),
                device=args.device,
                resume=resume,
                progress=update,
            )
        print(
            f"(b) {rb.steps} steps, {rb.tokens} tokens, loss {rb.loss_first:.4f} -> "
            f"{rb.loss_last:.4f}, {rb.tokens_per_s:.0f} tok/s, {rb.seconds:.0f} s",
            file=sys.stderr,
        )
    heal_s = time.perf_counter() - t0
    f16(b_dir, b_gguf)
    info_b = json.loads((b_dir / "distill.json").read_text())
    summary["heal"] = {
        k: info_b.get(k)
        for k in (
            "steps",
            "tokens",
            "loss_first",
            "loss_last",
            "tokens_per_s",
            "kept_layers",
            "block_influence",
            "params_student",
            "params_teacher",
        )
    }
    summary["heal_wall_s"] = heal_s if rb else None
    return b_gguf


def targeted(args, teacher: Path, key: str, keep, tokens: int, freeze: bool, into: dict) -> Path:
    """(c) or (d): ``keep`` layers (None: all) healed on the K-12 domain mix; its training goes
    into ``into[key]``."""
    from convert.distill import distill

    name = f"student-{key}-{keep or 30}-k12-{tokens}"
    d_dir, d_gguf = args.work / name, args.work / f"{name}-F16.gguf"
    t0 = time.perf_counter()
    if not (d_dir / "config.json").is_file():
        shutil.rmtree(d_dir, ignore_errors=True)
        resume = (args.work / f".{d_dir.name}.distill-work").is_dir()
        rc = distill(
            teacher,
            d_dir,
            layers=keep,
            recipe=recipe(tokens, freeze, domain=True),
            device=args.device,
            resume=resume,
            domain="k12-math",
        )
        print(
            f"({key}) {rc.steps} steps, {rc.domain_sequences} K-12 sequences, loss "
            f"{rc.loss_first:.4f} -> {rc.loss_last:.4f}, {rc.seconds:.0f} s",
            file=sys.stderr,
        )
        into[key] = {"wall_s": round(time.perf_counter() - t0, 1)}
    f16(d_dir, d_gguf)
    info = json.loads((d_dir / "distill.json").read_text())
    into.setdefault(key, {}).update(
        {k: info.get(k) for k in ("steps", "tokens", "domain_sequences", "loss_first", "loss_last")}
    )
    return d_gguf


def measure(args, ggufs: dict, t_gguf: Path, tokens: int, summary: dict) -> None:
    """Every GGUF through `edge-llm bench`, the paired verdicts, the goals; into ``summary``
    and printed."""
    names = {
        "teacher": "teacher (30 layers)",
        "a": f"(a) pruned {KEEP}, no healing",
        "b": f"(b) pruned {KEEP} + KD, {tokens} tokens",
        "c": f"(c) pruned {KEEP} + K-12 mix, {tokens} tokens",
        "d": f"(d) teacher + K-12 mix, {tokens} tokens",
    }
    labels = {
        "teacher": "distill teacher F16",
        "a": f"distill (a) {KEEP}/30 pruned",
        "b": f"distill (b) {KEEP}/30 KD {tokens} tok",
        "c": f"distill (c) {KEEP}/30 K-12 mix {tokens} tok",
        "d": f"distill (d) teacher K-12 mix {tokens} tok",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = {
        key: row(
            bench(
                path,
                labels[key],
                args.out,
                None if key == "teacher" else t_gguf,
                args.bench_threads,
                args.suite,
            )
        )
        for key, path in ggufs.items()
    }
    summary["results"] = rows
    summary["paired"] = paired(args.out, rows, names)
    summary["goals"] = goals(rows, summary["paired"])
    print_table(args.suite, rows, names, summary["goals"])


def paired(out: Path, rows: dict, names: dict) -> dict:
    """Paired verdicts on the same items (bench report --compare): each student against the
    teacher, and the targeted student against its fair baseline (d)."""
    from bench import compare, store

    pairs = [("teacher", k) for k in rows if k != "teacher"]
    if "c" in rows and "d" in rows:
        pairs.append(("d", "c"))
    verdicts = {}
    records = store.load(out)
    for a_key, b_key in pairs:
        c = compare.compare(out, records, rows[a_key]["run_id"], rows[b_key]["run_id"])
        verdicts[f"{b_key}-vs-{a_key}"] = {
            t: {"difference": v["difference"], "ci95": v["ci95"], "verdict": v["verdict"]}
            for t, v in c["tasks"].items()
        }
        print(f"\n### {names[b_key]} against {names[a_key]}\n\n" + compare.markdown(c))
    return verdicts


def ratio(x, y):
    if x is None or y is None:
        return float("nan")
    return x / y if y else float("inf") if x else float("nan")


def goals(rows: dict, paired: dict) -> dict:
    t = rows["teacher"]
    out = {}
    if "a" in rows and "b" in rows:
        a, b = rows["a"], rows["b"]
        gap = a["bpb"] - t["bpb"] if a["bpb"] is not None else float("nan")
        recovered = (a["bpb"] - b["bpb"]) / gap if gap > 0 else float("nan")
        d_t = ratio(b["density_per_gflop"], t["density_per_gflop"])
        d_a = ratio(b["density_per_gflop"], a["density_per_gflop"])
        out |= {
            "bpb_gap_recovered": {"value": recovered, "goal": 0.5, "met": recovered >= 0.5},
            "density_vs_teacher": {"value": d_t, "goal": 1.3, "met": d_t >= 1.3},
            "density_vs_a": {"value": d_a, "goal": 1.2, "met": d_a >= 1.2},
        }
    if "c" in rows:
        c = rows["c"]
        d_c = ratio(c["k12_density_per_gflop"], t["k12_density_per_gflop"])
        word = paired["c-vs-teacher"].get("k12-math", {}).get("verdict")
        out["targeted_k12_density_vs_teacher"] = {
            "value": d_c,
            "goal": 1.3,
            "k12_math_verdict": word,
            "met": d_c >= 1.3 and word == "better",
        }
    if "c" in rows and "d" in rows:
        out["targeted_k12_math_vs_finetuned_teacher"] = {
            "value": ratio(rows["c"]["k12_math"], rows["d"]["k12_math"]),
            "verdict": paired["c-vs-d"].get("k12-math", {}).get("verdict"),
            "k12_density_ratio": ratio(
                rows["c"]["k12_density_per_gflop"], rows["d"]["k12_density_per_gflop"]
            ),
        }
    return out


def print_table(suite: str, rows: dict, names: dict, goals: dict) -> None:
    print(f"\n## Distillation: SmolLM2-135M-Instruct, {KEEP} of 30 layers, suite {suite}\n")
    print(
        "| model | params | GFLOP/token | bpb (eval) | k12-math | k12-robust | mmlu | capability | "
        "density /GFLOP | K-12 density /GFLOP | KL to teacher | top-1 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for key, r in rows.items():
        f = lambda v, p=3: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
        print(
            f"| {names[key]} | {r['params'] / 1e6:.1f}M | {r['gflops_per_token']:.3f} | "
            f"{f(r['bpb'], 4)} | {f(r['k12_math'])} | {f(r['k12_robust'])} | {f(r['mmlu'])} | "
            f"{f(r['capability'])} | {f(r['density_per_gflop'])} | "
            f"{f(r['k12_density_per_gflop'])} | {f(r['mean_kld'])} | {f(r['top1'])} |"
        )
    print()
    for name, g in goals.items():
        met = "" if "met" not in g else (": met" if g["met"] else ": NOT met")
        goal = f" (goal >= {g['goal']})" if "goal" in g else ""
        print(f"- {name}: {g['value']:.3f}{goal}{met}")


def write_summary(path: Path, summary: dict) -> None:
    """Atomically: a killed run leaves the previous summary whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nsummary: {path}")


if __name__ == "__main__":
    sys.exit(main())
