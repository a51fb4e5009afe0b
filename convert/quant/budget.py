"""Size budgets: choose a type per tensor to minimise the predicted KL divergence within a size.

Three steps, each its own function:

1. `measure_errors`: for every quantizable tensor and every candidate type whose block divides
   its rows, the importance-weighted squared error of llama.cpp's own quantization of that
   tensor, sum over rows and columns of w_col * (W - dequant(quant(W)))^2, where w_col is the
   mean squared activation of input column col (the imatrix; for the output matrix / tied
   embeddings, the statistics of the output multiplication). This is the expected squared error
   the tensor adds to its output per token. Quantization is ggml's (`ggml_quantize_chunk`, with
   the imatrix when the file will be made with one), dequantization the gguf package's; rows are
   sampled (about 128k weights per tensor) and the sum scaled to the whole tensor.
2. `measure_gains`: how much KL divergence a unit of that error costs, by probes on the
   calibration text. A base file (every tensor Q8_0) and probe files (one group of tensors
   Q4_0, the rest Q8_0; groups: each tensor kind, and each quarter of the blocks) are assembled
   from two llama.cpp quantizations and run against the unquantized model; a group's measured
   KL divergence above the base, divided by its summed error increase, is its gain. Gains are
   fitted as kind x block-range factors (iterative proportional fitting). The predicted KL
   divergence of a file is then sum over tensors of gain * error(type), and `Sensitivity.checks`
   holds each probe's measured and predicted values (plus one file with every tensor at Q4_0, a
   check of additivity that is not used in the fit).
3. `allocate`: a knapsack over tensors (dynamic programming on sizes rounded up to 1/60000 of
   the budget, then a greedy pass with exact sizes on what is left) minimising the predicted
   KL divergence with the data bytes within the budget.

Only the tensors llama.cpp quantizes take part; vectors (norms) stay F32 and count as fixed bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from convert.quant import ggml_types, recipes
from convert.quant.ggml_quant import roundtrip
from convert.quant.imatrix import Imatrix
from edge_llm.fsutil import sha256_file
from edge_llm.llama import quant as ggml
from edge_llm.llama.scoring import ScoringContext, chunk_plan, log_softmax, tokenize_file
from edge_llm.llama.threads import ThreadPolicy

VERSION = 2  # of the sensitivity measurement (part of its cache key)
CANDIDATES = [
    "F16",
    "Q8_0",
    "Q6_K",
    "Q5_K",
    "Q5_1",
    "Q5_0",
    "Q4_K",
    "Q4_1",
    "IQ4_NL",
    "IQ4_XS",
    "Q4_0",
    "MXFP4",
    "Q3_K",
    "IQ3_S",
    "Q2_K",
    "Q2_0",
]
IMATRIX_CANDIDATES = ["IQ3_XXS", "IQ2_S"]  # llama.cpp makes these only with an imatrix
BASE_TYPE, PROBE_TYPE = "Q8_0", "Q4_0"
SAMPLE_WEIGHTS = 1 << 17
ALIGN = 32  # GGUF data alignment (llama.cpp's default)
DP_BINS = 60_000

Stage = Callable[[str, int, int], None]  # progress(stage, done, total)


@dataclass(frozen=True)
class TensorRef:
    name: str
    rows: int
    cols: int
    kind: str  # attn_q, ffn_down, token_embd, output, ...
    layer: int | None

    @property
    def n(self) -> int:
        return self.rows * self.cols


def kind_of(name: str) -> str:
    m = re.match(r"blk\.\d+\.(.+)\.weight$", name)
    return m.group(1) if m else name.removesuffix(".weight")


def padded(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --- the model's tensors ------------------------------------------------------------------------


class Weights:
    """The intermediate GGUF's tensors as float32 (memory-mapped by the gguf package)."""

    def __init__(self, path: Path):
        import gguf

        self.reader = gguf.GGUFReader(path)
        self.by_name = {t.name: t for t in self.reader.tensors}
        self.arch = str(self.reader.fields["general.architecture"].contents())
        f = self.reader.fields.get(f"{self.arch}.block_count")
        self.n_layer = int(f.contents()) if f is not None else 0

    def refs(self) -> list[TensorRef]:
        out = []
        for t in self.reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))  # numpy order (rows, cols)
            if recipes.quantizable(t.name, shape):
                rows = math.prod(shape[:-1])
                out.append(
                    TensorRef(t.name, rows, shape[-1], kind_of(t.name), recipes.layer_of(t.name))
                )
        return out

    def fixed_bytes(self) -> int:
        """Data bytes of the tensors no type choice touches (norms, biases), padded."""
        total = 0
        for t in self.reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))
            if not recipes.quantizable(t.name, shape):
                total += padded(int(t.n_bytes))
        return total

    def rows(self, ref: TensorRef, idx: np.ndarray) -> np.ndarray:
        import gguf

        t = self.by_name[ref.name]
        data = np.asarray(t.data).reshape(ref.rows, -1)
        q = t.tensor_type
        if q == gguf.GGMLQuantizationType.F32:
            return np.asarray(data[idx], dtype=np.float32)
        if q == gguf.GGMLQuantizationType.F16:
            return np.asarray(data[idx], dtype=np.float32)
        if q == gguf.GGMLQuantizationType.BF16:
            raw = np.asarray(data[idx]).view(np.uint16).astype(np.uint32) << 16
            return raw.view(np.float32)
        raise ConvertError(f"{ref.name} is {q.name}; a size budget needs an F32/F16/BF16 source")


def column_weights(ref: TensorRef, imatrix: Imatrix | None, extra: Imatrix | None) -> np.ndarray:
    """What one column's error costs: its mean squared activation (1 where none was measured)."""
    for im in (imatrix, extra):
        if im is not None and ref.name in im.sums:
            w = im.mean(ref.name).astype(np.float64)
            if w.size == ref.cols:
                return w
    return np.ones(ref.cols, dtype=np.float64)


def candidate_types(cols: int, use_imatrix: bool) -> list[str]:
    names = CANDIDATES + (IMATRIX_CANDIDATES if use_imatrix else [])
    return [n for n in names if ggml_types.fits(ggml_types.TYPES[n], cols)]


def measure_errors(
    weights: Weights,
    refs: list[TensorRef],
    imatrix: Imatrix | None,
    extra: Imatrix | None,
    use_imatrix: bool,
    threads: int,
    progress: Stage | None = None,
) -> dict[str, dict[str, float]]:
    """Per tensor and candidate type, the importance-weighted squared quantization error."""
    ggml.prepare(ggml_types.TYPES[n].ggml for n in CANDIDATES + IMATRIX_CANDIDATES)

    def one(ref: TensorRef) -> tuple[str, dict[str, float]]:
        rng = np.random.default_rng(zlib.crc32(ref.name.encode()))
        n_s = min(ref.rows, max(16, SAMPLE_WEIGHTS // ref.cols))
        idx = np.sort(rng.choice(ref.rows, n_s, replace=False))
        w = weights.rows(ref, idx)
        cw = column_weights(ref, imatrix, extra)
        qw = None
        if use_imatrix and imatrix is not None and ref.name in imatrix.sums:
            qw = imatrix.mean(ref.name)
        scale = ref.rows / n_s
        out = {}
        for t in candidate_types(ref.cols, qw is not None):
            d = roundtrip(w, t, qw) - w
            out[t] = float(np.square(d, dtype=np.float64).sum(axis=0) @ cw) * scale
        return ref.name, out

    errors: dict[str, dict[str, float]] = {}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, (name, errs) in enumerate(pool.map(one, refs)):
            errors[name] = errs
            if progress:
                progress("measuring quantization errors", i + 1, len(refs))
    return errors


# --- probes -------------------------------------------------------------------------------------


class _Evaluator:
    """A GGUF run over fixed token chunks (F32 KV cache, flash attention off); the mean KL
    divergence of its next-token distributions from stored reference log-probs on the second
    half of each chunk (as llama-perplexity scores)."""

    def __init__(self, chunks: list[list[int]], n_ctx: int, threads: int | None):
        self.chunks, self.n_ctx, self.threads = chunks, n_ctx, ThreadPolicy(threads)
        self.first, self.last = n_ctx // 2, n_ctx - 1
        self.reference: list[np.ndarray] = []

    def _logprobs(self, path: Path):
        with ScoringContext(path, n_ctx=self.n_ctx, threads=self.threads, error=ConvertError) as sc:
            n = self.last - self.first
            for chunk in self.chunks:
                raw = sc.eval_chunk(chunk, self.first, self.last)
                out = np.empty((n, sc.n_vocab), dtype=np.float32)
                for r0 in range(0, n, 16):
                    out[r0 : r0 + 16] = log_softmax(raw[r0 : r0 + 16])
                yield out

    def set_reference(self, path: Path) -> None:
        self.reference = list(self._logprobs(path))

    def kld(self, path: Path) -> float:
        total, count = 0.0, 0
        for ref, got in zip(self.reference, self._logprobs(path)):
            lr, lc = ref.astype(np.float64), got.astype(np.float64)
            total += float((np.exp(lr) * (lr - lc)).sum())
            count += lr.shape[0]
        return total / count


def evaluator(
    model: Path, text: str, threads: int | None, n_ctx: int = 512, n_chunks: int = 2
) -> _Evaluator:
    """An evaluator on the last ``n_chunks`` chunks of the calibration text (the imatrix uses its
    beginning), its reference not yet set."""
    tokens, bos = tokenize_file(model, text, ConvertError)
    n_ctx = min(n_ctx, max(16, len(tokens) // max(n_chunks, 1)))
    every = chunk_plan(tokens, n_ctx, bos)
    if not every:
        raise ConvertError("the calibration text is too short to measure sensitivities on")
    return _Evaluator(every[-n_chunks:], n_ctx, threads)


def rival_mixes(n_params: int, limit: int, use_imatrix: bool) -> list[str]:
    """llama.cpp's own file types (mixes) that may fit ``limit`` bytes, largest first, by their
    nominal bits per weight (a mix often comes out larger: the caller checks the real size)."""
    from convert.quant import quantize

    names = [
        n
        for n, t in quantize.TYPES.items()
        if n not in ("F32", "F16", "BF16")
        and not n.startswith("TQ")
        and (use_imatrix or not t.needs_imatrix)
        and n_params * t.bits / 8 <= limit
    ]
    return sorted(names, key=lambda n: -quantize.TYPES[n].bits)


def uniform_rival(sens: Sensitivity, data_limit: int) -> tuple[str, dict[str, str]] | None:
    """("uniform-T", types): every matrix at the largest candidate type T (where T's blocks do
    not divide a tensor's rows, llama.cpp's fallback) whose tensor data fits ``data_limit``
    bytes; None when none fits."""
    best = None
    for t in CANDIDATES:
        if t in ("F16", "Q2_0", "MXFP4"):
            continue
        types = {r.name: ggml_types.fallback(t, r.cols) for r in sens.tensors}
        if any(types[r.name] not in sens.errors[r.name] for r in sens.tensors):
            continue  # a fallback the sensitivity tables do not know (F16): not a rival
        size = sens.data_bytes(types)
        if size <= data_limit and (best is None or size > best[0]):
            best = (size, f"uniform-{t}", types)
    return None if best is None else (best[1], best[2])


def probe_groups(refs: list[TensorRef], n_layer: int) -> dict[str, list[str]]:
    """The tensor groups the gains are measured on: each kind, and each range of blocks."""
    groups: dict[str, list[str]] = {}
    for r in refs:
        groups.setdefault(f"kind:{r.kind}", []).append(r.name)
    for lo, hi in bucket_bounds(n_layer):
        names = [r.name for r in refs if r.layer is not None and lo <= r.layer < hi]
        if names:
            groups[f"blocks:{lo}-{hi - 1}"] = names
    return groups


def bucket_bounds(n: int) -> list[tuple[int, int]]:
    """Block ranges: the first eighth, up to the middle, up to the last eighth, the last eighth
    (where llama.cpp's mixes spend extra bits)."""
    cuts = sorted({0, max(1, n // 8), n // 2, 7 * n // 8, n})
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def bucket_of(layer: int | None, n: int) -> str | None:
    if layer is None:
        return None
    for lo, hi in bucket_bounds(n):
        if lo <= layer < hi:
            return f"blocks:{lo}-{hi - 1}"
    return None


@dataclass
class Sensitivity:
    """Everything `allocate` needs, JSON-serialisable (and cached)."""

    tensors: list[TensorRef]
    errors: dict[str, dict[str, float]]
    gains: dict[str, float]
    fixed_bytes: int
    n_layer: int
    use_imatrix: bool
    base_kld: float = 0.0
    # what the weights' error does not explain: measured minus predicted KLD of the all-Q8_0 file
    # (llama.cpp quantizes the activations of every quantized matmul to 8 bits, whatever the
    # weight type); added to every prediction, it moves no choice
    intercept: float = 0.0
    checks: list[dict] = field(default_factory=list)  # probe: measured vs predicted KLD

    def options(self, ref: TensorRef) -> list[tuple[str, int, float]]:
        """(type, padded bytes, predicted KLD contribution), smallest first."""
        g = self.gains[ref.name]
        opts = [
            (t, padded(ggml_types.TYPES[t].nbytes(ref.n)), g * e)
            for t, e in self.errors[ref.name].items()
        ]
        return sorted(opts, key=lambda o: (o[1], o[2]))

    def predict(self, types: dict[str, str]) -> float:
        """Predicted mean KL divergence of a file with these types (to the unquantized model)."""
        weights = sum(self.gains[n] * self.errors[n][t] for n, t in types.items())
        return float(weights + self.intercept)

    def data_bytes(self, types: dict[str, str]) -> int:
        by = {r.name: r for r in self.tensors}
        return sum(padded(ggml_types.TYPES[t].nbytes(by[n].n)) for n, t in types.items())

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> Sensitivity:
        d = json.loads(text)
        d["tensors"] = [TensorRef(**t) for t in d["tensors"]]
        return cls(**d)


def measure_gains(
    model: Path,
    sens: Sensitivity,
    text: str,
    imatrix: Imatrix | None,
    threads: int | None,
    workdir: Path,
    n_ctx: int = 512,
    n_chunks: int = 2,
    progress: Stage | None = None,
) -> None:
    """Fit ``sens.gains`` from probe files run on the calibration text (see the module doc)."""
    from convert import gguf_edit
    from convert.quant import quantize

    ev = evaluator(model, text, threads, n_ctx, n_chunks)
    refs = sens.tensors
    groups = probe_groups(refs, sens.n_layer)
    steps = len(groups) + 5
    done = 0

    def tick(stage="probing sensitivities"):
        nonlocal done
        done += 1
        if progress:
            progress(stage, done, steps)

    ev.set_reference(model)
    tick()
    means = imatrix.means() if (imatrix is not None and sens.use_imatrix) else None
    base_types = {r.name: ggml_types.fallback(BASE_TYPE, r.cols) for r in refs}
    probe_types = {r.name: ggml_types.fallback(PROBE_TYPE, r.cols) for r in refs}
    base, probe = workdir / "base.gguf", workdir / "probe-all.gguf"
    ftype = recipes.ftype_for(BASE_TYPE)
    qthreads = threads_default(threads)
    quantize.llama_quantize(
        model, base, None, qthreads, imatrix=means, types=base_types, ftype=ftype
    )
    tick()
    quantize.llama_quantize(
        model, probe, None, qthreads, imatrix=means, types=probe_types, ftype=ftype
    )
    tick()
    sens.base_kld = ev.kld(base)
    tick()
    measured: dict[str, float] = {}
    one = workdir / "probe.gguf"
    for g, names in groups.items():
        gguf_edit.assemble(one, base, dict.fromkeys(names, probe))
        measured[g] = ev.kld(one)
        one.unlink()
        tick()
    delta = {
        r.name: max(
            sens.errors[r.name][probe_types[r.name]] - sens.errors[r.name][base_types[r.name]], 0.0
        )
        for r in refs
    }
    sens.gains = fit_gains(refs, sens.n_layer, delta, measured, sens.base_kld)
    sens.intercept = max(0.0, sens.base_kld - sens.predict(base_types))
    all_kld = ev.kld(probe)
    tick()
    checks = [
        {
            "probe": "base (all Q8_0)",
            "measured": sens.base_kld,
            "predicted": sens.predict(base_types),
        }
    ]
    for g, names in groups.items():
        types = {**base_types, **{n: probe_types[n] for n in names}}
        checks.append({"probe": g, "measured": measured[g], "predicted": sens.predict(types)})
    checks.append(
        {
            "probe": "all Q4_0 (not fitted)",
            "measured": all_kld,
            "predicted": sens.predict(probe_types),
        }
    )
    sens.checks = checks


def fit_gains(
    refs: list[TensorRef],
    n_layer: int,
    delta: dict[str, float],
    measured: dict[str, float],
    base_kld: float,
    iterations: int = 50,
) -> dict[str, float]:
    """gain(tensor) = a[kind] * b[block range]: each probe's KL divergence above the base
    equals the sum over its tensors of gain * error increase (iterative proportional fitting;
    the block-range probes only shape b, their total is matched to the kind probes')."""
    floor = 1e-6
    target = {g: max(m - base_kld, floor) for g, m in measured.items()}
    kinds = sorted({f"kind:{r.kind}" for r in refs})
    buckets = sorted({b for r in refs if (b := bucket_of(r.layer, n_layer)) is not None})
    a = dict.fromkeys(kinds, 1.0)
    b = dict.fromkeys(buckets, 1.0)
    in_blocks = [r for r in refs if r.layer is not None]
    kind_total = sum(target[f"kind:{r}"] for r in {r.kind for r in in_blocks})
    bucket_total = sum(target[x] for x in buckets)
    scale = kind_total / bucket_total if bucket_total > 0 else 1.0

    def bb(r: TensorRef) -> float:
        x = bucket_of(r.layer, n_layer)
        return b[x] if x else 1.0

    for _ in range(iterations):
        for k in kinds:
            s = sum(bb(r) * delta[r.name] for r in refs if f"kind:{r.kind}" == k)
            a[k] = target[k] / s if s > 0 else 0.0
        for x in buckets:
            s = sum(
                a[f"kind:{r.kind}"] * delta[r.name]
                for r in in_blocks
                if bucket_of(r.layer, n_layer) == x
            )
            b[x] = target[x] * scale / s if s > 0 else 1.0
    return {r.name: a[f"kind:{r.kind}"] * bb(r) for r in refs}


# --- allocation ---------------------------------------------------------------------------------


def minimum_bytes(sens: Sensitivity) -> int:
    return sum(min(o[1] for o in sens.options(r)) for r in sens.tensors)


def allocate(sens: Sensitivity, data_budget: int) -> dict[str, str]:
    """The type per tensor minimising the predicted KL divergence with padded data bytes at most
    ``data_budget``: dynamic programming on rounded-up sizes, then greedy upgrades on exact ones."""
    refs = sens.tensors
    opts = [_pareto(sens.options(r)) for r in refs]
    need = sum(o[0][1] for o in opts)
    if need > data_budget:
        raise ValueError(need)
    unit = max(1, math.ceil(data_budget / DP_BINS))
    cap = data_budget // unit
    best = np.zeros(cap + 1, dtype=np.float64)  # min loss with rounded size <= c
    choice = np.zeros((len(refs), cap + 1), dtype=np.int8)
    for i, o in enumerate(opts):
        new = np.full(cap + 1, np.inf)
        pick = np.zeros(cap + 1, dtype=np.int8)
        for k, (_, nbytes, loss) in enumerate(o):
            w = math.ceil(nbytes / unit)
            if w > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[w:] = best[: cap + 1 - w] + loss
            better = cand < new
            new[better], pick[better] = cand[better], k
        best, choice[i] = new, pick
    if not np.isfinite(best[cap]):
        raise ValueError(need)
    c, chosen = cap, [0] * len(refs)
    for i in range(len(refs) - 1, -1, -1):
        k = int(choice[i][c])
        chosen[i] = k
        c -= math.ceil(opts[i][k][1] / unit)
    # greedy: spend what rounding left, biggest loss reduction first
    left = data_budget - sum(opts[i][k][1] for i, k in enumerate(chosen))
    while True:
        gain, move = 0.0, None
        for i, o in enumerate(opts):
            cur = o[chosen[i]]
            for k, (_, nbytes, loss) in enumerate(o):
                extra = nbytes - cur[1]
                if 0 < extra <= left and cur[2] - loss > gain:
                    gain, move = cur[2] - loss, (i, k, extra)
        if move is None:
            break
        i, k, extra = move
        chosen[i], left = k, left - extra
    return {r.name: opts[i][k][0] for i, (r, k) in enumerate(zip(refs, chosen))}


def _pareto(opts: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """Options no other option beats on both size and loss, smallest first."""
    out: list[tuple[str, int, float]] = []
    for o in sorted(opts, key=lambda o: (o[1], o[2])):
        if not out or o[2] < out[-1][2]:
            out.append(o)
    return out


# --- the whole measurement, cached --------------------------------------------------------------


def analyze(
    model: Path,
    text: str,
    imatrix: Imatrix | None,
    extra: Imatrix | None,
    use_imatrix: bool,
    threads: int | None,
    progress: Stage | None = None,
    cache: bool = True,
) -> Sensitivity:
    """Errors and gains for the unquantized GGUF ``model`` (cached by content under
    ~/.cache/edge-llm/sensitivity)."""
    from edge_llm.fsutil import atomic_path, cache_dir, work_dir

    key = hashlib.sha256(
        json.dumps(
            [
                VERSION,
                sha256_file(model),
                hashlib.sha256(text.encode()).hexdigest(),
                imatrix.digest() if imatrix else None,
                extra.digest() if extra else None,
                use_imatrix,
                CANDIDATES,
                IMATRIX_CANDIDATES,
                SAMPLE_WEIGHTS,
            ]
        ).encode()
    ).hexdigest()[:24]
    path = cache_dir() / "sensitivity" / f"{key}.json"
    if cache and path.is_file():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return Sensitivity.from_json(path.read_text())
    weights = Weights(model)
    refs = weights.refs()
    if not refs:
        raise ConvertError(f"{model} has no matrix to quantize")
    errors = measure_errors(
        weights, refs, imatrix, extra, use_imatrix, threads_default(threads), progress
    )
    sens = Sensitivity(
        tensors=refs,
        errors=errors,
        gains={},
        fixed_bytes=weights.fixed_bytes(),
        n_layer=weights.n_layer,
        use_imatrix=use_imatrix,
    )
    del weights
    with work_dir(model.parent / "probes") as tmp:
        measure_gains(model, sens, text, imatrix, threads, tmp, progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as t:
            t.write_text(sens.to_json())
    return sens


def parse_size(text: str | int | float) -> int:
    """'80MB', '300 MiB', '1.5GB', '95000000' -> bytes (MB = 10^6, MiB = 2^20)."""
    if isinstance(text, int | float):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)(i?)[bB]?\s*", str(text))
    if not m:
        raise ConvertError(
            f"--target-size {text!r} is not a size; write e.g. 80MB, 300MiB or 95000000"
        )
    value, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    mult = {"": 1, "K": 1, "M": 2, "G": 3}[unit]
    base = 1024 if binary else 1000
    return int(value * (base**mult if unit else 1))


def threads_default(threads: int | None) -> int:
    """For llama.cpp's quantizer and the error measurement: ``threads``, else the CPUs other
    processes leave free now."""
    return ThreadPolicy(threads).current
