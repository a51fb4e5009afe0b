"""How fast, and in how much memory, does `edge-llm convert` write an F16 GGUF next to llama.cpp?

Two checkpoints, both converted to F16 by both converters:
  smollm2-f32  the shipped SmolLM2-135M-Instruct exported back to a Hugging Face folder with
               convert.export_hf (dtype f32; one 538 MB model.safetensors);
  synth-1b     a synthetic llama (LlamaForCausalLM, hidden 2048, intermediate 5632, 22 layers,
               32 heads, 4 KV heads, vocab 49152 = the SmolLM2 tokenizer, untied lm_head: 1.17 B
               parameters) with random bf16 weights in ~2 GB safetensors shards plus
               model.safetensors.index.json, written tensor by tensor with numpy and a hand-made
               safetensors header (generation never holds more than one 64 MiB chunk).
Converters, each run as a child process with this venv's Python:
  edge-llm     .venv/bin/edge-llm convert SRC -o OUT --type F16 --json
  llama.cpp    python <llama.cpp>/convert_hf_to_gguf.py SRC --outfile OUT --outtype f16
               (the copy that `make install` unpacks under ~/.cache/edge-llm/src, run in place)

Measured per run: wall time from spawn to exit (imports included; edge-llm's own in-process
`seconds` is recorded too), CPU time (user+sys) and peak RSS of the child from the rusage that
os.wait4 returns for it in a small launcher process (ru_maxrss: the kernel's exact high-water
mark, which counts memory-mapped file pages the child touched as well as its own allocations; the
launcher keeps this benchmark's own RSS out of it, see LAUNCHER), and, sampled every 10 ms from
/proc/PID/status, the peaks of RssAnon (the child's own memory) and RssFile (mapped file pages,
reclaimable page cache). Runs interleave: each repetition runs both converters, the order
alternating (edge, llama | llama, edge | ...); outputs are deleted and the disk synced between
runs. One untimed warm-up run of each converter on SmolLM2 comes first. Medians; ratios as ratio
of medians and as median of the per-repetition (paired) ratios.

Then the outputs of the last repetition are compared tensor by tensor with gguf.GGUFReader (by
name: same names, types, shapes, np.array_equal data) and their metadata keys are diffed.

    python -m scripts.convert_speed [--reps 3] [--skip-1b] [--workdir DIR] [--keep]
                                  [--json bench/results/convert_speed.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scripts.synth_checkpoint import SYNTH_CONFIG, make_synth_1b

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MB = 1e6

# ---------------------------------------------------------------------------------------------
# the checkpoints


def export_smollm2(dst: Path) -> Path:
    from convert.export_hf import export_hf
    from edge_llm.registry import resolve

    if not (dst / "model.safetensors").is_file():
        export_hf(resolve("smollm2-135m-instruct"), dst, dtype="f32")
    return dst


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(src / name, dst / name)


def n_params(src: Path) -> int:
    from convert.checkpoint import Checkpoint

    return sum(math.prod(t.shape) for t in Checkpoint(src).tensors.values())


def dir_bytes(src: Path) -> int:
    return sum(p.stat().st_size for p in src.glob("*.safetensors"))


# ---------------------------------------------------------------------------------------------
# running one conversion


def llama_converter(path: str | None) -> Path:
    if path:
        return Path(path)
    from edge_llm.fsutil import cache_dir

    try:
        import importlib.metadata

        version = importlib.metadata.version("llama_cpp_python")
    except Exception:
        version = "*"
    pattern = str(cache_dir() / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp")
    hits = sorted(glob.glob(pattern + "/convert_hf_to_gguf.py"))
    if not hits:
        sys.exit(
            f"no convert_hf_to_gguf.py under {pattern}; run `make install` or pass --llama-convert"
        )
    return Path(hits[-1])


def command(tool: str, src: Path, out: Path, llama_py: Path) -> list[str]:
    if tool == "edge":
        return [
            str(VENV_BIN / "edge-llm"),
            "convert",
            str(src),
            "-o",
            str(out),
            "--type",
            "F16",
            "--json",
        ]
    return [sys.executable, str(llama_py), str(src), "--outfile", str(out), "--outtype", "f16"]


# The converter runs under a tiny launcher (a fresh Python that does nothing else), not forked
# from this process: Linux carries the high-water RSS of the process image that calls execve into
# the new program's ru_maxrss, so a child forked from this benchmark (hundreds of MB after the
# export) would report at least that. The launcher's own image is ~10 MB, the floor it can add.
LAUNCHER = r"""
import json, os, sys, threading, time
report, cmd = sys.argv[1], sys.argv[2:]
peaks = {"anon": 0, "file": 0}
stop = threading.Event()
t0 = time.perf_counter()
pid = os.posix_spawn(cmd[0], cmd, os.environ)
def poll():
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as f:
                for line in f:
                    for key, tag in (("anon", "RssAnon:"), ("file", "RssFile:")):
                        if line.startswith(tag):
                            peaks[key] = max(peaks[key], int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass
        stop.wait(0.01)
poller = threading.Thread(target=poll, daemon=True)
poller.start()
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
stop.set()
poller.join()
with open(report, "w") as f:
    json.dump({"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
               "maxrss_bytes": ru.ru_maxrss * 1024, "major_faults": ru.ru_majflt,
               "sampled_peak_anon_bytes": peaks["anon"], "sampled_peak_file_bytes": peaks["file"],
               "returncode": os.waitstatus_to_exitcode(status)}, f)
"""


def measure(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run ``cmd`` under LAUNCHER: wall time (spawn to exit), rusage of exactly that child
    (os.wait4), peaks of RssAnon/RssFile sampled every 10 ms from /proc/PID/status."""
    report = log.with_suffix(".json")
    report.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    with open(log, "wb") as err, open(log.with_suffix(".out"), "wb") as out:
        p = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(report), *cmd], cwd=cwd, stdout=out, stderr=err
        )
    if p.returncode != 0 or not report.is_file() or json.loads(report.read_text())["returncode"]:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"{' '.join(cmd)} failed:\n{tail}")
    r = json.loads(report.read_text())
    r["cpu_s"] = r["user_s"] + r["sys_s"]
    r["loadavg_1m_before"] = load
    return r


def run_once(tool: str, src: Path, out: Path, work: Path, llama_py: Path) -> dict:
    out.unlink(missing_ok=True)
    os.sync()
    log = work / f"{tool}.log"
    r = measure(command(tool, src, out, llama_py), work, log)
    r["output_bytes"] = out.stat().st_size
    if tool == "edge":
        r["self_reported_s"] = json.loads(log.with_suffix(".out").read_text())["seconds"]
    return r


# ---------------------------------------------------------------------------------------------
# comparing the two outputs


def _value(field) -> object:
    try:
        return field.contents()
    except Exception:
        return [bytes(field.parts[i]) for i in field.data]


def compare(edge_path: Path, llama_path: Path) -> dict:
    from gguf import GGUFReader

    ea, la = GGUFReader(edge_path), GGUFReader(llama_path)
    et = {t.name: t for t in ea.tensors}
    lt = {t.name: t for t in la.tensors}
    common = [n for n in et if n in lt]
    type_diff, shape_diff, data_diff, value_equal_other_type = [], [], [], []
    for n in common:
        a, b = et[n], lt[n]
        if list(a.shape) != list(b.shape):
            shape_diff.append(
                {"name": n, "edge": list(map(int, a.shape)), "llama": list(map(int, b.shape))}
            )
            continue
        if a.tensor_type != b.tensor_type:
            type_diff.append({"name": n, "edge": a.tensor_type.name, "llama": b.tensor_type.name})
            if np.array_equal(np.asarray(a.data, np.float32), np.asarray(b.data, np.float32)):
                value_equal_other_type.append(n)
            else:
                data_diff.append(n)
            continue
        if not np.array_equal(a.data, b.data):
            diff = int(np.count_nonzero(np.asarray(a.data) != np.asarray(b.data)))
            data_diff.append(f"{n} ({diff} of {a.data.size} elements differ)")
    ek = {k: f for k, f in ea.fields.items() if not k.startswith("GGUF.")}
    lk = {k: f for k, f in la.fields.items() if not k.startswith("GGUF.")}
    kv_diff = {}
    for k in sorted(set(ek) & set(lk)):
        va, vb = _value(ek[k]), _value(lk[k])
        if va != vb:
            kv_diff[k] = {"edge": _short(va), "llama": _short(vb)}
    return {
        "tensors_edge": len(et),
        "tensors_llama": len(lt),
        "only_edge": sorted(set(et) - set(lt)),
        "only_llama": sorted(set(lt) - set(et)),
        "type_differs": type_diff,
        "type_differs_but_values_equal": value_equal_other_type,
        "shape_differs": shape_diff,
        "data_differs": data_diff,
        "order_same": [n for n in et if n in lt] == [n for n in lt if n in et],
        "identical_tensors": not (set(et) ^ set(lt)) and not (type_diff or shape_diff or data_diff),
        "kv_only_edge": sorted(set(ek) - set(lk)),
        "kv_only_llama": sorted(set(lk) - set(ek)),
        "kv_differs": kv_diff,
    }


def _short(v: object) -> object:
    if isinstance(v, list) and len(v) > 4:
        return f"<list of {len(v)}>"
    if isinstance(v, str) and len(v) > 80:
        return v[:77] + "..."
    return v


# ---------------------------------------------------------------------------------------------


def host_info() -> dict:
    from edge_llm.devices import available_cpus

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    from importlib.metadata import version

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "available_cpus": available_cpus(),
        "ram_bytes": mem,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gguf": version("gguf"),
        "platform": platform.platform(),
    }


def code_state() -> dict:
    """Which converter code ran: git HEAD and a hash of convert/ (it may be uncommitted work)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "convert").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        head = "?"
    return {"git_head": head, "convert_sha256": h.hexdigest()[:16]}


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_case(name: str, src: Path, work: Path, reps: int, llama_py: Path, warmup: bool) -> dict:
    outs = {"edge": work / f"{name}.edge.gguf", "llama": work / f"{name}.llama.gguf"}
    if warmup:
        for tool in ("edge", "llama"):
            run_once(tool, src, outs[tool], work, llama_py)
            outs[tool].unlink()
    samples: dict[str, list[dict]] = {"edge": [], "llama": []}
    for rep in range(reps):
        order = ("edge", "llama") if rep % 2 == 0 else ("llama", "edge")
        for tool in order:
            r = run_once(tool, src, outs[tool], work, llama_py)
            samples[tool].append(r)
            print(
                f"  {name} rep {rep + 1}/{reps} {tool:5s}: {r['wall_s']:6.2f} s, "
                f"peak RSS {r['maxrss_bytes'] / MB:6.0f} MB, load {r['loadavg_1m_before']:.2f}",
                file=sys.stderr,
            )
            if rep < reps - 1:
                outs[tool].unlink()
    print(f"  {name}: comparing the outputs ...", file=sys.stderr)
    cmp = compare(outs["edge"], outs["llama"])
    for p in outs.values():
        p.unlink(missing_ok=True)
    os.sync()
    return {
        "source": str(src),
        "source_bytes": dir_bytes(src),
        "params": n_params(src),
        "samples": samples,
        "compare": cmp,
    }


def summarize(cases: dict) -> None:
    print(
        "| case | converter | wall s (median) | wall min-max | CPU s | peak RSS MB (ru_maxrss) "
        "| peak RssAnon MB (sampled) | peak RssFile MB (sampled) | output MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, c in cases.items():
        for tool, label in (("edge", "edge-llm"), ("llama", "llama.cpp")):
            s = c["samples"][tool]
            w = [r["wall_s"] for r in s]
            extra = ""
            if tool == "edge":
                extra = f" (in-process {med([r['self_reported_s'] for r in s]):.2f})"
            print(
                f"| {name} | {label} | {med(w):.2f}{extra} | {min(w):.2f}-{max(w):.2f} "
                f"| {med([r['cpu_s'] for r in s]):.2f} "
                f"| {med([r['maxrss_bytes'] for r in s]) / MB:.0f} "
                f"| {med([r['sampled_peak_anon_bytes'] for r in s]) / MB:.0f} "
                f"| {med([r['sampled_peak_file_bytes'] for r in s]) / MB:.0f} "
                f"| {s[-1]['output_bytes'] / MB:.0f} |"
            )
    print()
    print(
        "| case | llama.cpp / edge time (ratio of medians) | paired median | goal >= 2x "
        "| edge / llama.cpp peak RSS (ratio of medians) | paired median | goal <= 0.5x "
        "| edge / llama.cpp peak RssAnon | tensors equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, c in cases.items():
        e, lc = c["samples"]["edge"], c["samples"]["llama"]
        tr = med([r["wall_s"] for r in lc]) / med([r["wall_s"] for r in e])
        tp = med([b["wall_s"] / a["wall_s"] for a, b in zip(e, lc)])
        mr = med([r["maxrss_bytes"] for r in e]) / med([r["maxrss_bytes"] for r in lc])
        mp = med([a["maxrss_bytes"] / b["maxrss_bytes"] for a, b in zip(e, lc)])
        ar = med([r["sampled_peak_anon_bytes"] for r in e]) / med(
            [r["sampled_peak_anon_bytes"] for r in lc]
        )
        c["ratios"] = {
            "time_llama_over_edge": tr,
            "time_paired": tp,
            "rss_edge_over_llama": mr,
            "rss_paired": mp,
            "anon_rss_edge_over_llama": ar,
        }
        cmp = c["compare"]
        eq = "yes" if cmp["identical_tensors"] else "no (see below)"
        print(
            f"| {name} | {tr:.2f}x | {tp:.2f}x | {'met' if tr >= 2 else 'NOT met'} "
            f"| {mr:.2f}x | {mp:.2f}x | {'met' if mr <= 0.5 else 'NOT met'} | {ar:.2f}x | {eq} |"
        )
    print()
    for name, c in cases.items():
        cmp = c["compare"]
        print(
            f"{name}: {cmp['tensors_edge']} tensors (edge-llm) vs {cmp['tensors_llama']} "
            f"(llama.cpp); same order: {cmp['order_same']}"
        )
        for key in ("only_edge", "only_llama", "type_differs", "shape_differs", "data_differs"):
            if cmp[key]:
                print(
                    f"  {key}: {len(cmp[key])}: {cmp[key][:6]}{' ...' if len(cmp[key]) > 6 else ''}"
                )
        if cmp["type_differs"]:
            n = len(cmp["type_differs_but_values_equal"])
            print(f"  of the type differences, {n} hold equal values once both are read as float32")
        if cmp["kv_only_edge"] or cmp["kv_only_llama"] or cmp["kv_differs"]:
            print(f"  metadata keys only in edge-llm: {cmp['kv_only_edge']}")
            print(f"  metadata keys only in llama.cpp: {cmp['kv_only_llama']}")
            for k, v in cmp["kv_differs"].items():
                print(f"  metadata {k}: edge-llm {v['edge']!r}, llama.cpp {v['llama']!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-1b", action="store_true", help="only the SmolLM2 case (quick)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where checkpoints and outputs go (default: a new temp dir, removed after)",
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the work dir (checkpoints) afterwards"
    )
    ap.add_argument("--llama-convert", default=None, help="path of convert_hf_to_gguf.py")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/convert_speed.json")
    args = ap.parse_args()

    llama_py = llama_converter(args.llama_convert)
    created = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="edge-llm-convert-speed.")) if created else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    need = 1.2e9 + (0 if args.skip_1b else 7.2e9)
    free = shutil.disk_usage(work).free
    if free < need:
        sys.exit(
            f"{work} has {free / 1e9:.1f} GB free; this benchmark needs about {need / 1e9:.1f} GB"
        )

    host = host_info()
    print(
        f"host: {host['cpu']}, {host['cpus']} CPUs ({host['available_cpus']} available), "
        f"{host['ram_bytes'] / 2**30:.0f} GiB RAM, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"python {host['python']}, numpy {host['numpy']}, gguf {host['gguf']}; "
        f"llama.cpp converter {llama_py}"
    )
    print(
        f"work dir {work} ({free / 1e9:.0f} GB free); {args.reps} interleaved repetitions, "
        f"order alternating; warm-up {'off' if args.no_warmup else 'on'}\n"
    )

    code = code_state()
    print(f"code: git {code['git_head'][:12]}, convert/ sha256 {code['convert_sha256']}\n")
    cases = {}
    try:
        smol = export_smollm2(work / "smollm2-f32")
        print("converting smollm2-f32 ...", file=sys.stderr)
        cases["smollm2-f32"] = bench_case(
            "smollm2-f32", smol, work, args.reps, llama_py, not args.no_warmup
        )
        if not args.skip_1b:
            t0 = time.perf_counter()
            print("generating synth-1b ...", file=sys.stderr)
            synth = make_synth_1b(work / "synth-1b")
            copy_tokenizer(smol, synth)
            os.sync()
            print(f"  generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            print("converting synth-1b ...", file=sys.stderr)
            cases["synth-1b"] = bench_case("synth-1b", synth, work, args.reps, llama_py, False)
    finally:
        if created and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    code_after = code_state()
    if code_after != code:
        print(
            f"WARNING: convert/ changed during the run ({code['convert_sha256']} -> "
            f"{code_after['convert_sha256']}); the samples mix two versions, run again\n"
        )
    for name, c in cases.items():
        print(
            f"{name}: {c['params'] / 1e9:.3f} B parameters, {c['source_bytes'] / MB:.0f} MB of "
            f"safetensors at {c['source']}"
        )
    print()
    summarize(cases)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "host": host,
        "llama_convert": str(llama_py),
        "code": code,
        "code_after": code_after,
        "reps": args.reps,
        "warmup": not args.no_warmup,
        "memory_method": "ru_maxrss from os.wait4 on the child (exact peak, counts mapped file "
        "pages); RssAnon/RssFile peaks sampled every 10 ms from /proc/PID/status",
        "synth_config": SYNTH_CONFIG,
        "cases": cases,
    }
    args.json.write_text(json.dumps(out, indent=2))
    print(f"\nraw samples: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
