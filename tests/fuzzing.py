"""Mutation fuzzing helpers: mutated copies of real files, and a child process that loads GGUFs
with llama.cpp so that an abort there is a finding, not a dead test run.

GGUF copies are header-only: the mutated header is spliced from the seed's own bytes (fields
that are not mutated are copied as they are; mutated ones are serialized by gguf-py's writer) and
the tensor data section is a sparse run of zeros of the right length, so a 100 MB seed costs a
few kilobytes per input. `edge-llm info` reads only the header; llama.cpp maps the data without
reading it while loading.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

HANG_S = 10.0  # an input that takes longer than this is a hang


# --- GGUF -------------------------------------------------------------------------------------


@dataclass
class Seed:
    """A real GGUF, parsed once by gguf-py: the raw bytes of each metadata field and of each
    part of each tensor info (name length, name, dims, type, offset)."""

    path: Path
    version: int
    alignment: int
    kv: list[tuple[str, bytes]]  # (key, raw bytes of the whole field)
    tensors: list[dict]  # name, shape (ggml order), type, parts (raw bytes of the info's parts)

    @classmethod
    def read(cls, path: Path) -> Seed:
        r = gguf.GGUFReader(path)
        raw = np.memmap(path, mode="r")
        kv = []
        for name, f in r.fields.items():
            if name.startswith("GGUF."):
                continue
            size = sum(int(p.nbytes) for p in f.parts)
            kv.append((name, bytes(raw[f.offset : f.offset + size])))
        tensors = [
            {"name": t.name, "shape": [int(d) for d in t.shape], "type": int(t.tensor_type),
             "parts": [bytes(p.tobytes()) for p in t.field.parts]}
            for t in r.tensors
        ]  # fmt: skip
        version = int(r.fields["GGUF.version"].parts[-1][0])
        return cls(Path(path), version, r.alignment, kv, tensors)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.kv]


def pack_field(key: str, value: Any, vtype: gguf.GGUFValueType, sub: Any = None) -> bytes:
    """One metadata field's bytes, as gguf-py writes it (through a tiny GGUF and its reader)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.gguf"
        w = gguf.GGUFWriter(p, "x")
        w.add_key_value(key, value, vtype, sub_type=sub)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        r = gguf.GGUFReader(p)
        f = r.fields[key]
        raw = p.read_bytes()
        return raw[f.offset : f.offset + sum(int(x.nbytes) for x in f.parts)]


def tensor_infos(tensors: list[dict], alignment: int) -> tuple[bytes, int]:
    """The tensor-info section (the seed's parts, with names, types and the data offsets that
    follow from the types replaced) and the data section's size."""
    out, offset = [], 0
    for t in tensors:
        parts = list(t["parts"])
        name = t["name"].encode("utf-8", "surrogateescape") if isinstance(t["name"], str) else t["name"]
        parts[0], parts[1] = np.uint64(len(name)).tobytes(), name
        parts[-2] = np.uint32(t["type"]).tobytes()
        parts[-1] = np.uint64(offset).tobytes()
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t["type"])]
        except (ValueError, KeyError):
            block, size = 1, 1
        nbytes = math.prod(t["shape"]) // block * size
        offset += -(-nbytes // alignment) * alignment
        out += parts
    return b"".join(out), offset


def write_gguf(
    seed: Seed, out: Path, kv: list[bytes], ti: bytes, n_tensors: int, data: int
) -> Path:
    """Header (the seed's version) + fields + tensor infos, padding, sparse zero data."""
    head = struct.pack("<4sIQQ", b"GGUF", seed.version, n_tensors, len(kv))
    body = head + b"".join(kv) + ti
    pad = -len(body) % seed.alignment
    with open(out, "wb") as f:
        f.write(body + b"\0" * pad)
        f.truncate(len(body) + pad + data)
    return out


def value_type(v: Any) -> tuple[gguf.GGUFValueType, Any]:
    """The GGUF type a fuzzed value is written as (and an array's element type)."""
    T = gguf.GGUFValueType  # noqa: N806
    if isinstance(v, bool):
        return T.BOOL, None
    if isinstance(v, int):
        if 0 <= v < 2**32:
            return T.UINT32, None
        if -(2**31) <= v < 0:
            return T.INT32, None
        return (T.UINT64 if v >= 0 else T.INT64), None
    if isinstance(v, float):
        return T.FLOAT32, None
    if isinstance(v, str):
        return T.STRING, None
    if isinstance(v, list):
        sub = value_type(v[0])[0] if v else T.UINT32
        return T.ARRAY, sub
    raise TypeError(v)


BAD_UTF8 = b"\xff\xfe\xc3("  # invalid UTF-8, put in place of a placeholder of the same length


def mutated_gguf(seed: Seed, out: Path, mutations: list[tuple]) -> Path:
    """Apply ``mutations`` to the seed and write the result at ``out``.

    ("set", key, value) | ("delete", key) | ("rename_key", key, new) | ("bad_utf8_key", key) |
    ("bad_utf8_value", key) | ("tensor_type", i, ggml_type) | ("tensor_name", i, name) |
    ("bad_utf8_tensor", i) | ("drop_tensor", i) | ("swap_tensors", i, j)
    """
    kv = dict(seed.kv)
    order = seed.keys
    tensors = [dict(t) for t in seed.tensors]
    for m in mutations:
        op = m[0]
        if op == "set":
            key, value = m[1], m[2]
            vtype, sub = value_type(value)
            kv[key] = pack_field(key, value, vtype, sub)
            if key not in order:
                order.append(key)
        elif op == "delete" and m[1] in kv:
            del kv[m[1]]
            order.remove(m[1])
        elif op == "rename_key" and m[1] in kv and m[2] not in kv:
            i = order.index(m[1])
            raw = kv.pop(m[1])
            new = m[2].encode()
            kv[m[2]] = np.uint64(len(new)).tobytes() + new + raw[8 + len(m[1].encode()) :]
            order[i] = m[2]
        elif op == "bad_utf8_key" and m[1] in kv:
            enc = m[1].encode()
            bad = (enc + BAD_UTF8)[len(BAD_UTF8) :] if len(enc) >= len(BAD_UTF8) else BAD_UTF8[: len(enc)]
            kv[m[1]] = kv[m[1]][:8] + bad + kv[m[1]][8 + len(enc) :]
        elif op == "bad_utf8_value" and m[1] in kv:
            placeholder = "Z" * 8
            raw = pack_field(m[1], placeholder, gguf.GGUFValueType.STRING)
            kv[m[1]] = raw.replace(placeholder.encode(), BAD_UTF8 * 2)
        elif op == "tensor_type" and m[1] < len(tensors):
            tensors[m[1]]["type"] = int(m[2])
        elif op == "tensor_name" and m[1] < len(tensors):
            tensors[m[1]]["name"] = m[2]
        elif op == "bad_utf8_tensor" and m[1] < len(tensors):
            name = tensors[m[1]]["name"]
            name = name.encode() if isinstance(name, str) else name
            tensors[m[1]]["name"] = BAD_UTF8 + name[len(BAD_UTF8) :]
        elif op == "drop_tensor" and m[1] < len(tensors) and len(tensors) > 1:
            del tensors[m[1]]
        elif op == "swap_tensors" and max(m[1], m[2]) < len(tensors):
            a, b = tensors[m[1]], tensors[m[2]]  # shapes and types trade places, names stay
            tensors[m[1]], tensors[m[2]] = {**b, "name": a["name"]}, {**a, "name": b["name"]}
    ti, data = tensor_infos(tensors, seed.alignment)
    return write_gguf(seed, out, [kv[k] for k in order], ti, len(tensors), data)


# --- a child process that loads GGUFs with llama.cpp -------------------------------------------

_WORKER = r"""
import sys, json
from pathlib import Path
from edge_llm import validate, gguf_info
from edge_llm.errors import EdgeLLMError
from edge_llm.llama import backend
for line in sys.stdin:
    path = Path(line.strip())
    out = {"ok": True}
    try:
        validate.check(path)
        out["checked"] = True
        cfg = backend.ContextConfig(n_ctx=64, n_threads=1, n_threads_batch=1, n_batch=64)
        try:
            b = backend.Backend(path, cfg)
            b.close()
        except backend.LoadError as e:
            out = {"ok": False, "checked": True, "refused": gguf_info.explain_load_failure(path, e.details)}
    except EdgeLLMError as e:
        out = {"ok": False, "checked": False, "refused": str(e)}
    except BaseException as e:
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
"""


class LoadWorker:
    """Loads GGUFs one per request in a child; a crash or a hang there is reported, and the
    child restarted, instead of taking the test process down."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        return subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def load(self, path: Path, timeout: float = HANG_S) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        p = self.proc
        p.stdin.write(f"{path}\n")
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], timeout + 30)  # + interpreter start
        if not ready:
            p.kill()
            p.wait()
            self.proc = None
            return {"ok": False, "hang": True}
        line = p.stdout.readline()
        if not line:
            code = p.wait()
            err = p.stderr.read()[-2000:]
            self.proc = None
            return {"ok": False, "crash": code, "stderr": err}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- JSON / TOML mutation ---------------------------------------------------------------------


def paths_of(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indexes) into a JSON-like document, lists sampled."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        idx = range(len(doc)) if len(doc) <= 8 else [0, 1, len(doc) // 2, len(doc) - 1]
        for i in idx:
            out += paths_of(doc[i], (*prefix, i))
    return out


def set_path(doc: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced (or deleted)."""
    if not path:
        return value
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        node = node[k]
    if delete:
        if isinstance(node, dict):
            node.pop(path[-1], None)
        elif isinstance(node, list) and node:
            node.pop(path[-1])
    else:
        node[path[-1]] = value
    return doc


# --- Hugging Face checkpoints -----------------------------------------------------------------

TINY_CONFIG = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=32,
                   intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                   tie_word_embeddings=True)  # fmt: skip


def tiny_checkpoint(path: Path, shards: int = 1, **config: Any) -> Path:
    """A tiny llama folder: safetensors written by the safetensors library, a tokenizer trained
    by the tokenizers library (tests/tinymodels.py), config.json as transformers writes it."""
    from safetensors.numpy import save_file

    from tinymodels import bpe_tokenizer, llama_tensors

    path.mkdir(parents=True, exist_ok=True)
    vocab = bpe_tokenizer(path, pre="smollm", vocab=400)
    cfg = {**TINY_CONFIG, "vocab_size": vocab, **config}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    tensors = llama_tensors(cfg, vocab)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"))
        return path
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, str(path / fname))
        weight_map |= dict.fromkeys(part, fname)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": weight_map}  # fmt: skip
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return path


def read_safetensors_header(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header (JSON) and its data section."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_safetensors_header(path: Path, header: Any, data: bytes) -> None:
    """A safetensors file with ``header`` (any JSON, as crafted) over ``data``."""
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def tree_hash(folder: Path) -> str:
    """SHA-256 over every file's relative name and bytes under ``folder``."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
