"""Check a GPU backend against the CPU before it serves a model, and remember the verdict.

Vulkan on phone GPUs has been slower than the CPU (llama.cpp #12462) and plainly wrong (Adreno,
llama.cpp #8965: a cosine similarity of 0.73 against the CPU). A runtime that trusts whatever
backend the build has gives a student wrong answers faster. So before a model runs on a non-CPU
device for the first time, `check` runs a short probe on both (the same text, teacher-forced: the
next-token distribution at every position) and compares:

- agreement: the share of positions where both pick the same top token, and the mean KL
  divergence KL(CPU || device) of the distributions (nats). Backends differ in rounding, never
  in meaning: a right backend agrees on nearly every position with a KL far below what a 4-bit
  quantization costs (about 0.01-0.05 nats);
- speed: the time of the same short turn (prefill the probe, then decode `DECODE_STEPS` tokens
  one by one), after one warm-up pass on each.

The device is used only if top-1 agreement >= `TOP1_MIN`, mean KL <= `KL_MAX` and it is not
slower than the CPU; otherwise the run falls back to the CPU with a one-line notice
(``trust_backend`` skips all this). The verdict is kept in ``$EDGE_LLM_HOME/backend-checks.json``
under (model file SHA-256, backend and device, driver identity, offload depth): a changed model file
or driver makes a new key, so the probe runs again.

The driver's identity: the device's description, the driver's own version where the driver can be
asked (Vulkan: edge_llm.llama.vulkan), the backend library (its path, size, modification time)
and, for Vulkan, every installable client driver the loader would read (the ICD manifests and the
libraries they name), since a driver rebuilt under the same version number replaces those files.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_llm.fsutil import atomic_path, cache_dir, sha256_file

TOP1_MIN = 0.95  # share of probe positions where the device's top token is the CPU's
KL_MAX = 0.02  # mean KL(CPU || device) over the probe's positions, nats
DECODE_STEPS = 16
# The probe: prose, numbers, a list and code, as a short chat would mix them (about 100 tokens).
PROBE = (
    "The library opens at 9 a.m. and closes at 6 p.m. on weekdays. Maria borrowed 3 books on "
    "Monday and returned 2 of them on Thursday, so she still has 1 book at home.\n"
    "Shopping list: 12 eggs, 2 litres of milk, a loaf of bread.\n"
    "def area(width, height):\n    return width * height\n\n"
    "Question: what is 15 + 27? Answer: 42. The capital of France is Paris, and the"
)
VULKAN_ICD_DIRS = (
    "/etc/vulkan/icd.d",
    "/usr/local/etc/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
    "/usr/share/vulkan/icd.d",
)


@dataclass(frozen=True)
class Run:
    """One side of the probe: its logits at every position and its timings."""

    logits: np.ndarray  # [positions, n_vocab]
    prefill_s: float
    decode_s: list[float]  # one decode step each

    @property
    def seconds(self) -> float:
        return self.prefill_s + sum(self.decode_s)


@dataclass
class Verdict:
    """Whether a backend may run a model, and the figures behind it."""

    ok: bool
    reason: str  # why not ("" when ok)
    device: str  # "Vulkan0"
    description: str  # "llvmpipe (LLVM 15.0.6, 256 bits)"
    backend: str
    driver: str  # the driver identity's digest
    model_sha256: str
    n_gpu_layers: int
    positions: int
    top1_agreement: float
    mean_kl: float
    max_kl: float
    cpu_seconds: float  # the probe's timed turn on each side
    device_seconds: float
    cpu_decode_tokens_per_s: float
    device_decode_tokens_per_s: float
    check_seconds: float  # what the whole check cost (both loads, warm-ups, timed turns)
    checked_at: str = ""
    cached: bool = field(default=False, compare=False)

    @property
    def speed_ratio(self) -> float:
        """Device speed over CPU speed on the probe's turn (> 1: the device is faster)."""
        return self.cpu_seconds / self.device_seconds if self.device_seconds else 0.0

    def summary(self) -> str:
        return (
            f"top-1 agreement {self.top1_agreement:.1%}, mean KL {self.mean_kl:.2g} nats over "
            f"{self.positions} positions; {self.speed_ratio:.2f}x the CPU's speed "
            f"({self.device_decode_tokens_per_s:.1f} vs {self.cpu_decode_tokens_per_s:.1f} "
            f"decode tok/s)"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["speed_ratio"] = self.speed_ratio
        return d


# --- the comparison -------------------------------------------------------------------------------


def agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, mean KL, max KL) of two [positions, vocab] logit arrays, the KL taken as
    KL(reference || other) per position, in nats."""
    from edge_llm.llama.scoring import log_softmax

    p, q = log_softmax(reference), log_softmax(other)
    kl = (np.exp(p) * (p - q)).sum(axis=1)
    top1 = float(np.mean(reference.argmax(axis=1) == other.argmax(axis=1)))
    return top1, float(kl.mean()), float(kl.max())


def judge(top1: float, mean_kl: float, cpu: Run, dev: Run) -> str:
    """Why the device must not be used ("" when it may)."""
    if top1 < TOP1_MIN or mean_kl > KL_MAX:
        return (
            f"it disagrees with the CPU (top-1 agreement {top1:.1%} < {TOP1_MIN:.0%} or mean KL "
            f"{mean_kl:.3g} > {KL_MAX} nats)"
        )
    if dev.seconds > cpu.seconds:
        return f"it is slower than the CPU ({dev.seconds:.2f} s vs {cpu.seconds:.2f} s per probe)"
    return ""


def _run(path: Path, n_gpu_layers: int, threads: int) -> Run:
    """The probe on one side (``n_gpu_layers`` 0: the CPU alone), after one warm-up pass."""
    from edge_llm.llama.scoring import ScoringContext

    with ScoringContext(
        path, n_ctx=256, threads=threads, kv_type="f16", flash_attn=None, n_gpu_layers=n_gpu_layers
    ) as sc:
        tokens = sc.tokenize(PROBE, add_special=True, parse_special=False)[:200]
        sc.eval_chunk(tokens[:16])  # warm-up: the first pass uploads and compiles
        t0 = time.perf_counter()
        logits = np.array(sc.eval_chunk(tokens), dtype=np.float32)
        prefill = time.perf_counter() - t0
        steps, token = [], int(logits[-1].argmax())
        for i in range(DECODE_STEPS):
            t0 = time.perf_counter()
            row = sc.eval([token], pos0=len(tokens) + i)
            steps.append(time.perf_counter() - t0)
            token = int(row[-1].argmax())
    return Run(logits, prefill, steps)


def measure(
    path: Path, device, n_gpu_layers: int, threads: int, model_sha: str = "", driver: str = ""
) -> Verdict:
    """Run the probe on the CPU and on ``device`` (a `binding.Device`) and judge it (no cache;
    ``model_sha`` and ``driver``: the identities when the caller has them already)."""
    start = time.perf_counter()
    cpu = _run(path, 0, threads)
    dev = _run(path, n_gpu_layers, threads)
    top1, mean_kl, max_kl = agreement(cpu.logits, dev.logits)
    return Verdict(
        ok=not (reason := judge(top1, mean_kl, cpu, dev)),
        reason=reason,
        device=device.name,
        description=device.description,
        backend=device.backend,
        driver=driver or driver_identity(device),
        model_sha256=model_sha or model_hash(path),
        n_gpu_layers=n_gpu_layers,
        positions=len(cpu.logits),
        top1_agreement=top1,
        mean_kl=mean_kl,
        max_kl=max_kl,
        cpu_seconds=cpu.seconds,
        device_seconds=dev.seconds,
        cpu_decode_tokens_per_s=1 / statistics.median(cpu.decode_s),
        device_decode_tokens_per_s=1 / statistics.median(dev.decode_s),
        check_seconds=time.perf_counter() - start,
        checked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


# --- identities and the cache ---------------------------------------------------------------------


def _stat(path: str | Path) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


def _vulkan_drivers() -> list:
    """Each Vulkan ICD manifest the loader would read, with the driver library it names."""
    listed = os.environ.get("VK_DRIVER_FILES") or os.environ.get("VK_ICD_FILENAMES")
    if listed:
        manifests = [Path(p) for p in listed.split(os.pathsep) if p]
    else:
        manifests = sorted(p for d in VULKAN_ICD_DIRS for p in Path(d).glob("*.json"))
    out = []
    for m in manifests:
        try:
            icd = json.loads(m.read_text()).get("ICD", {})
        except (OSError, ValueError, AttributeError):
            out.append(_stat(m))
            continue
        lib = str(icd.get("library_path", ""))
        if lib and "/" in lib and not os.path.isabs(lib):
            lib = str(m.parent / lib)
        out.append([*_stat(m), icd.get("api_version"), _stat(lib) if "/" in lib else lib])
    return out


def driver_identity(device) -> str:
    """A digest of what identifies ``device``'s driver (see the module's docstring)."""
    from edge_llm.llama.binding import backend_library

    parts: list = [device.backend, device.description, device.driver]
    library = backend_library(device.backend)
    parts.append(_stat(library) if library else None)
    if device.backend.lower() == "vulkan":
        parts.append(_vulkan_drivers())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _file() -> Path:
    return cache_dir() / "backend-checks.json"


def _read() -> dict:
    try:
        data = json.loads(_file().read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):  # a damaged or foreign file: start again, never fail a run
        data = {}
    return {k: v if isinstance(v := data.get(k), dict) else {} for k in ("files", "verdicts")}


def _write(data: dict) -> None:
    try:
        _file().parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(_file()) as tmp:
            tmp.write_text(json.dumps(data, indent=1))
    except OSError:
        pass  # a read-only home: the check runs again next time, nothing else is lost


def model_hash(path: Path) -> str:
    """The file's SHA-256, remembered by (path, size, modification time): a rewritten file is
    hashed again."""
    data = _read()
    ident = json.dumps(_stat(Path(path).resolve()))
    if isinstance(known := data["files"].get(ident), str):
        return known
    digest = sha256_file(path)
    data["files"][ident] = digest
    _write(data)
    return digest


def _key(model_sha: str, device, driver: str, n_gpu_layers: int) -> str:
    """A verdict's key (the driver identity holds the backend and the device's description)."""
    return "|".join([model_sha, device.name, driver, str(n_gpu_layers)])


def cached(path: Path, device, n_gpu_layers: int) -> Verdict | None:
    """The verdict kept for this model file, device, driver and depth, if any."""
    return _kept(_key(model_hash(path), device, driver_identity(device), n_gpu_layers))


def _kept(key: str) -> Verdict | None:
    row = _read()["verdicts"].get(key)
    if not isinstance(row, dict):
        return None
    row = {k: v for k, v in row.items() if k not in ("speed_ratio", "cached")}
    try:
        return Verdict(**row, cached=True)
    except TypeError:
        return None  # written by another version: measure again


def check(path: str | Path, device, n_gpu_layers: int, threads: int, recheck: bool = False):
    """The verdict on running ``path`` on ``device`` with ``n_gpu_layers``: the cached one, or
    measured now (and kept)."""
    path = Path(path)
    sha, driver = model_hash(path), driver_identity(device)
    key = _key(sha, device, driver, n_gpu_layers)
    if not recheck and (v := _kept(key)) is not None:
        return v
    v = measure(path, device, n_gpu_layers, threads, model_sha=sha, driver=driver)
    data = _read()
    data["verdicts"][key] = v.to_dict()
    _write(data)
    return v


def notice(v: Verdict, model: str) -> str:
    """The one line a run prints when it falls back to the CPU."""
    return (
        f"edge-llm: not running {model} on {v.device} ({v.description}): {v.reason}; running on "
        "the CPU (edge-llm devices --check shows the figures; --trust-backend uses it anyway)"
    )
