"""Calibrating this host: per-type decode and prefill costs measured by running models.

It times models loaded by the caller's ``load`` (`edge_llm.load`): `Model` sits above
`edge_llm.devices` (it resolves its device here), so it is passed in, not imported, and the
runtime's import graph keeps to its layers (ARCHITECTURE.md). It lives apart from `detect` all the
same: `edge-llm devices --calibrate` and scripts/plan_accuracy.py run it;
`detect.cached_calibration` reads its result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edge_llm.cpus import available_cpus
from edge_llm.devices import detect, profile
from edge_llm.devices.detect import measure_read_bandwidth
from edge_llm.fsutil import atomic_path, cache_dir, work_dir

# What the calibration runs: the default model requantized (llama.cpp's own quantizer) to each
# common weight type, and Gemma 3 270M to two, so that a per-layer cost separates from the
# per-type costs (the two models have 30 and 18 layers). The shipped mixed-type files are never
# part of the fit: scripts/plan_accuracy.py predicts them out of sample.
CALIBRATION_TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7, "q4_k": 15, "q6_k": 18}
CALIBRATION_TYPES_SECOND_MODEL = {"q8_0": 7, "q4_0": 2}
PROMPT, GENERATE = 256, 48


def _requantize(src: Path, dst: Path, ftype: int) -> None:
    from edge_llm.llama.binding import quantize_file

    if not quantize_file(src, dst, ftype, available_cpus(), pure=True, allow_requantize=True):
        raise RuntimeError(f"llama.cpp could not requantize {src.name}")


def _measure(load, path: Path, threads: int, repeats: int = 2) -> tuple[float, float]:
    """(ms per decoded token, ms per prefilled token), medians."""
    with load(path, n_ctx=1024, threads=threads, device="cpu") as m:
        prompt = m.tokenize("Edge devices read every weight once per token. " * 40)[:PROMPT]
        dec, pre = [], []
        for _ in range(repeats):
            m.reset()
            r = m.generate(prompt, max_tokens=GENERATE + 1, temperature=0, ignore_eos=True)
            dec.append(1000 / r.timings.decode_tokens_per_s)
            pre.append(1000 / r.timings.prefill_tokens_per_s)
    return float(np.median(dec)), float(np.median(pre))


def _fit(rows: list[tuple[float, dict[str, float], float]]) -> dict:
    """Least squares, non-negative: y = layer_ms * n_layer + sum(cost[type] * amount[type])."""
    types = sorted({t for _, amounts, _ in rows for t in amounts})
    cols = ["layer", *types]
    a = np.array([[n_layer] + [amounts.get(t, 0.0) for t in types] for n_layer, amounts, _ in rows])
    y = np.array([ms for _, _, ms in rows])
    keep = list(range(len(cols)))
    while True:  # drop what comes out negative and fit again
        x, *_ = np.linalg.lstsq(a[:, keep], y, rcond=None)
        if (x >= 0).all() or len(keep) == 1:
            break
        keep.pop(int(np.argmin(x)))
    coef = dict.fromkeys(cols, 0.0)
    coef.update({cols[i]: float(max(0.0, v)) for i, v in zip(keep, x)})
    return {"layer_ms": coef.pop("layer"), "per_type": coef}


def calibrate(load, threads: int | None = None, progress=None, busy_ok: bool = False) -> dict:
    """Measure this host: read bandwidth, then per-type decode and prefill costs (see above), with
    the models opened by ``load`` (`edge_llm.load`).

    Takes about two minutes on 2 CPUs; cached until the CPU or llama-cpp-python changes.
    Refuses (ConfigError) when other processes keep the CPUs busy, since it would measure the
    contention and `plan` would predict from it, unless ``busy_ok``; the load measured before
    and during the runs is kept in the result either way.
    """

    from edge_llm import gguf_info, registry
    from edge_llm.cpus import CpuLoad
    from edge_llm.errors import ConfigError
    from edge_llm.shapes import ModelShape, matmul_flops_by_type, read_bytes_by_type

    say = progress or (lambda msg: None)
    n = threads or available_cpus()
    before = detect.host_load()
    if before is not None and before > detect.BUSY_CPUS and not busy_ok:
        raise ConfigError(
            f"this host is busy: other processes kept {before:.1f} of {available_cpus()} CPUs "
            "busy; calibrating now would measure the contention, not the host. Calibrate when "
            "it is idle, or pass --busy-ok to measure anyway (the load is recorded)"
        )
    if before is not None:
        say(f"host load before calibrating: {before:.2f} CPUs busy with other processes")
    counts = sorted({1, n})
    bw = {t: measure_read_bandwidth(t) for t in range(1, n + 1)}
    sources = [(registry.resolve(None), CALIBRATION_TYPES)]
    second = registry.lookup("gemma3-270m")
    if second is not None and second.installed():
        sources.append((registry.fetch(second), CALIBRATION_TYPES_SECOND_MODEL))
    fit: dict[str, dict] = {}
    samples = []
    cache_dir().mkdir(parents=True, exist_ok=True)
    with work_dir(cache_dir() / "calibration") as tmp:
        files = []
        for src, types in sources:
            for name, ftype in types.items():
                dst = Path(tmp) / f"{src.stem}-{name}.gguf"
                _requantize(src, dst, ftype)
                files.append(dst)
        during = CpuLoad()
        loads = []
        total, done, t_start = len(counts) * len(files), 0, time.perf_counter()
        for t in counts:
            dec_rows, pre_rows = [], []
            for f in files:
                done += 1
                say(
                    f"calibrating [{done}/{total}]: {f.name} at {t} thread(s), "
                    f"{time.perf_counter() - t_start:.0f} s so far"
                )
                info = gguf_info.read(f)
                shape = ModelShape.from_info(info)
                dec_ms, pre_ms = _measure(load, f, t)
                if (busy := during.others_busy()) is not None:
                    loads.append(busy)
                kv_ms = 1000 * shape.kv_bytes_per_token() * (PROMPT + GENERATE // 2) / bw[t]
                mb = {k: v / 1e6 for k, v in read_bytes_by_type(info).items()}
                gflop = {k: v / 1e9 for k, v in matmul_flops_by_type(info, PROMPT).items()}
                dec_rows.append((shape.n_layer, mb, dec_ms - kv_ms))
                pre_rows.append((shape.n_layer, gflop, pre_ms))
                samples.append(
                    {
                        "file": f.name,
                        "threads": t,
                        "decode_ms": dec_ms,
                        "prefill_ms": pre_ms,
                        "decode_bytes": shape.decode_bytes_per_token(PROMPT + GENERATE // 2),
                        "prefill_flops": shape.prefill_flops_per_token(PROMPT),
                    }
                )
            # decode: ms per token = layer_ms * layers + ms/MB of each type's weights (+ KV read);
            # prefill: ms per prompt token = layer_ms * layers + ms/GFLOP of each type's matmuls
            fit[str(t)] = {"decode": _fit(dec_rows), "prefill": _fit(pre_rows)}
    # The aggregate figures the plain roofline uses (for a GPU or a file the fit cannot price):
    # the default model's own type, at all threads.
    shipped = f"{sources[0][0].stem}-q4_1.gguf"  # SmolLM2 ships as Q4_1
    default = next(s for s in samples if s["threads"] == n and s["file"] == shipped)
    result = {
        "fingerprint": detect._fingerprint(),
        "read_bandwidth_by_threads": {str(t): b for t, b in bw.items()},
        "decode_efficiency": default["decode_bytes"] * 1000 / default["decode_ms"] / bw[n],
        "cpu_gflops": default["prefill_flops"] * 1000 / default["prefill_ms"] / 1e9,
        "threads": n,
        "fit": fit,
        "samples": samples,
        # CPUs busy with other processes: before the runs, and the most during one of them
        "load_before": before,
        "load_during_max": max(loads) if loads else None,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    path = detect._calibration_file()
    with atomic_path(path) as tmp_file:
        tmp_file.write_text(json.dumps(result, indent=2))
    profile.host_profile.cache_clear()
    return result
