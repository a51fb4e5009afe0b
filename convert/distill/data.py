"""Training text: files (plain text, or JSONL with a "text" field) tokenized with the teacher's
tokenizer, documents joined by EOS and cut into fixed-length sequences; beyond the corpus, teacher
continuations (sequence-level distillation) fill the token budget. The teacher's top-k next-token
log-probabilities over all sequences are computed once and cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from convert.errors import ConvertError, read_input
from convert.quant.options import calibration_path
from edge_llm.fsutil import atomic_path, cache_dir


def default_texts() -> list[Path]:
    """The training text without --text: the project's calibration text."""
    return [calibration_path()]


def read_documents(paths: list[str | Path]) -> list[str]:
    """The documents of each file: a .jsonl file's "text" fields, any other file whole."""
    docs: list[str] = []
    for p in paths:
        p = Path(p)
        raw = read_input(p, "the text file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConvertError(
                f"{p} is not UTF-8 text (byte {e.start}); give a UTF-8 text or JSONL file"
            ) from None
        if p.suffix.lower() == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise ConvertError(
                        f'{p}:{n} is not JSON; each line of a .jsonl file must be an object with a "text" field'
                    ) from None
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    raise ConvertError(
                        f'{p}:{n} has no "text" string field; each line must be {{"text": ...}}'
                    )
                if rec["text"].strip():
                    docs.append(rec["text"])
        elif text.strip():
            docs.append(text)
    if not docs:
        names = ", ".join(str(p) for p in paths)
        raise ConvertError(f"no text in {names}; give files with text to distill on")
    return docs


def check_clean(texts: list[str], what: str) -> dict:
    """The contamination guard (bench.contamination): refuse, with one line, a training corpus
    that shares a word 13-gram with any evaluation item."""
    from bench.contamination import assert_clean
    from bench.errors import BenchError

    try:
        return assert_clean(texts, what)
    except BenchError as e:
        raise ConvertError(str(e)) from None


def load_tokenizer(teacher_dir: Path):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds
        raise ConvertError(
            f"cannot load the teacher's tokenizer from {teacher_dir}: {str(e).splitlines()[0]}"
        ) from None
    tok.model_max_length = 1 << 30  # we cut sequences ourselves
    return tok


def tokenize(tok, docs: list[str]) -> np.ndarray:
    """Documents' tokens, joined by EOS (when the tokenizer has one)."""
    eos = tok.eos_token_id
    ids: list[int] = []
    for d in docs:
        if ids and eos is not None:
            ids.append(int(eos))
        ids.extend(tok(d, add_special_tokens=False)["input_ids"])
    return np.asarray(ids, dtype=np.int64)


def chunk(ids: np.ndarray, seq_len: int) -> np.ndarray:
    n = len(ids) // seq_len
    return ids[: n * seq_len].reshape(n, seq_len)


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def teacher_hash(teacher_dir: Path) -> str:
    """SHA-256 over the teacher's config and weight files (what its logits depend on)."""
    h = hashlib.sha256()
    for p in sorted(teacher_dir.iterdir()):
        if p.name == "config.json" or p.suffix in (".safetensors", ".bin"):
            h.update(p.name.encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
    return h.hexdigest()[:24]


def store_dir() -> Path:
    d = cache_dir() / "distill"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def generate(
    teacher,
    prompts: np.ndarray,
    seq_len: int,
    *,
    temperature: float,
    seed: int,
    batch: int,
    device: str,
    progress=None,
) -> np.ndarray:
    """Sampled continuations of ``prompts`` [N, P] to ``seq_len`` tokens (EOS suppressed so every
    sequence is full), with a fixed seed."""
    import torch

    out = []
    new = seq_len - prompts.shape[1]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for b in range(0, len(prompts), batch):
        x = torch.from_numpy(prompts[b : b + batch]).to(device)
        with torch.random.fork_rng(devices=[] if device == "cpu" else None):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            with torch.no_grad():
                y = teacher.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    do_sample=True,
                    temperature=temperature,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=0,
                    use_cache=True,
                )
        out.append(y[:, :seq_len].cpu().numpy())
        if progress:
            progress("generate", min(b + batch, len(prompts)), len(prompts), {})
    return np.concatenate(out).astype(np.int64)


def generate_llama(
    teacher_dir: Path,
    prompts: np.ndarray,
    seq_len: int,
    *,
    temperature: float,
    seed: int,
    threads: int | None = None,
    progress=None,
) -> np.ndarray | None:
    """`generate` through llama.cpp: the teacher converted once to an F32 GGUF (cached by its
    hash), ``prompts`` [N, P] continued to ``seq_len`` tokens by
    `edge_llm.llama.batched.sample_continuations` (many sequences per batch, end-of-generation
    tokens banned, so every sequence is full; llama.cpp's sampler with ``seed``). About 4x
    transformers' ``generate`` on a 2-core CPU (266 against 70 tokens/s on SmolLM2-135M). None
    when the converter does not take the teacher's architecture (the caller falls back)."""
    from convert import convert
    from edge_llm.llama.batched import sample_continuations

    gguf = store_dir() / f"teacher-{teacher_hash(teacher_dir)}-f32.gguf"
    if not gguf.is_file():
        try:
            convert(teacher_dir, gguf, type="F32")
        except ConvertError:
            return None
    done = lambda k: progress("generate", k, len(prompts), {}) if progress else None  # noqa: E731
    out = sample_continuations(
        gguf,
        prompts.tolist(),
        length=seq_len,
        temperature=temperature,
        seed=seed,
        ban_eog=True,
        threads=threads,
        progress=done,
        error=ConvertError,
    )
    return np.asarray(out, dtype=np.int64)


def teacher_topk(
    teacher, seqs: np.ndarray, *, k: int, temperature: float, batch: int, device: str, progress=None
) -> dict:
    """The teacher's top-k log-probabilities at temperature T at every position, and the log of
    the probability mass outside the top k (clamped at -60 so 0 * log 0 stays finite)."""
    import torch

    n, length = seqs.shape
    idx = np.zeros((n, length, k), dtype=np.int32)
    logp = np.zeros((n, length, k), dtype=np.float32)
    rest = np.zeros((n, length), dtype=np.float32)
    for b in range(0, n, batch):
        x = torch.from_numpy(seqs[b : b + batch]).to(device)
        with torch.no_grad():
            logits = teacher(x, use_cache=False).logits.float()
            lp = torch.log_softmax(logits / temperature, dim=-1)
            top, ids = lp.topk(k, dim=-1)
            r = lp.scatter(-1, ids, float("-inf")).logsumexp(-1).clamp_min(-60.0)
        idx[b : b + batch] = ids.cpu().numpy()
        logp[b : b + batch] = top.cpu().numpy()
        rest[b : b + batch] = r.cpu().numpy()
        if progress:
            progress("teacher logits", min(b + batch, n), n, {})
    return {"idx": idx, "logp": logp, "rest": rest}


class Dataset:
    """Distinct sequences with the teacher's cached top-k, and the order training reads them in:
    epoch e is a permutation drawn from seed + e, so step s always sees the same sequences.
    ``alpha``: optionally, per sequence, the weight of cross-entropy on its text (a domain's
    gold solutions)."""

    def __init__(
        self,
        seqs: np.ndarray,
        top: dict,
        *,
        seed: int,
        corpus: int,
        generated: int,
        alpha: np.ndarray | None = None,
    ):
        self.seqs, self.top, self.seed = seqs, top, seed
        self.corpus, self.generated = corpus, generated
        self.alpha = alpha

    def __len__(self) -> int:
        return len(self.seqs)

    def order(self, count: int) -> np.ndarray:
        """The first ``count`` sequence indices of the training stream."""
        parts, e = [], 0
        while sum(len(p) for p in parts) < count:
            parts.append(np.random.default_rng([self.seed, e]).permutation(len(self.seqs)))
            e += 1
        return np.concatenate(parts)[:count] if parts else np.zeros(0, dtype=np.int64)

    def batch(self, indices: np.ndarray, device: str):
        """(tokens, top-k ids, top-k log-probs, rest, alpha or None) of ``indices``; only those
        rows of the (memory-mapped) cache are read."""
        import torch

        rows = np.sort(np.asarray(indices))
        back = np.argsort(np.argsort(indices))  # rows[back] == indices

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(np.asarray(a[rows])[back])).to(device)

        alpha = None if self.alpha is None else t(self.alpha).float()
        return (
            t(self.seqs),
            t(self.top["idx"]).long(),
            t(self.top["logp"]),
            t(self.top["rest"]),
            alpha,
        )


def save_topk(path: Path, top: dict) -> None:
    """The top-k cache as a folder of .npy files (memory-mappable: a rank reads only its rows),
    written to a temporary folder and renamed into place."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, a in top.items():
            np.save(tmp / f"{name}.npy", a)
        try:
            tmp.rename(path)
        except OSError:  # another process wrote it first
            if not path.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_topk(path: Path) -> dict:
    return {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in ("idx", "logp", "rest")}
