"""Property and mutation fuzzing of every input edge-llm reads (issue 14).

Each target mutates real files (the seeds: a GGUF made by the converter from a checkpoint written
by safetensors/tokenizers, and for `info` in the full run the shipped SmolLM2 GGUF; the project's recipes,
device profiles and bench suites, real API request bodies) and checks the one property every
input must have: it is accepted, or refused with an EdgeLLMError whose message is one line.
Never another exception (a traceback), never a native crash (GGUFs are loaded by llama.cpp in a
child process), never a hang (over 10 s). A GGUF that passes the checks must load in llama.cpp,
and a config that passes must convert into a GGUF that does.

`make test` runs 300 inputs per target (fixed seed); `make fuzz` runs
EDGE_LLM_FUZZ_EXAMPLES=10000 with fresh randomness and writes counts to EDGE_LLM_FUZZ_REPORT.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import tomllib
from pathlib import Path

import gguf
import pytest
import tomli_w
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edge_llm.errors import EdgeLLMError
from tests.fixtures.fuzzing import (
    HANG_S,
    LoadWorker,
    Seed,
    mutated_gguf,
    paths_of,
    set_path,
    tiny_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
N = int(os.environ.get("EDGE_LLM_FUZZ_EXAMPLES", "300"))
FULL = N > 300
FUZZ = settings(
    max_examples=N,
    deadline=None,
    derandomize=not FULL,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink]
    if FULL
    else [Phase.explicit, Phase.generate],
)
STATS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


class Hang(Exception):
    pass


@contextlib.contextmanager
def within(seconds: float = HANG_S):
    """Fail the input (as a hang) if the block runs longer than ``seconds``."""

    def alarm(signum, frame):
        raise Hang(f"input took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def verdict(target: str, fn, *args, **kwargs):
    """Run fn: returns its result, or None after a one-line EdgeLLMError; records the outcome.
    Any other exception (or a hang) propagates and fails the input."""
    STATS[target]["inputs"] += 1
    if STATS[target]["inputs"] % 500 == 0:
        write_report()  # progress of a long run
    try:
        with within():
            out = fn(*args, **kwargs)
    except EdgeLLMError as e:
        msg = str(e)
        assert msg and "\n" not in msg, f"multi-line error: {msg!r}"
        STATS[target]["refused"] += 1
        return None
    STATS[target]["accepted"] += 1
    return out


def write_report() -> None:
    path = os.environ.get("EDGE_LLM_FUZZ_REPORT")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
        old.update({k: dict(v) for k, v in STATS.items()})
        Path(path).write_text(json.dumps(old, indent=2))


@pytest.fixture(autouse=True)
def report():
    yield
    write_report()


# --- values a mutation puts anywhere ------------------------------------------------------

EDGE_INTS = [
    0,
    1,
    -1,
    2,
    7,
    65,
    512,
    513,
    1000,
    4096,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**63 - 1,
    -(2**31),
    -(2**63),
    10**12,
]
EDGE_FLOATS = [0.0, -0.0, -1e-5, 1e-30, 1e30, 1e308, float("nan"), float("inf"), float("-inf")]
scalars = st.one_of(
    st.sampled_from(EDGE_INTS),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "none", "no_vocab", "llama", "gpt2", "F16", "Q4_0", "yarn", "\ud800"]),
)
json_values = st.recursive(
    scalars.filter(
        lambda v: (
            not (isinstance(v, str) and "\ud800" in v)
            and not (isinstance(v, int) and abs(v) > 2**64)
        )
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def mutate_doc(draw, doc):
    """1 to 3 structural mutations of a JSON-like document: replace, delete, retype a value."""
    for _ in range(draw(st.integers(1, 3))):
        paths = paths_of(doc)
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["set", "set", "delete", "near"]))
        if kind == "delete" and path:
            doc = set_path(doc, path, None, delete=True)
            continue
        old = doc
        for k in path:
            old = old[k]
        if kind == "near" and isinstance(old, int | float) and not isinstance(old, bool):
            op = draw(st.sampled_from(["neg", "zero", "double", "plus1", "huge", "float"]))
            value = {
                "neg": -old,
                "zero": 0,
                "double": old * 2,
                "plus1": old + 1,
                "huge": old * 10**9,
                "float": float(old) + 0.5,
            }[op]
        else:
            value = draw(json_values)
        doc = set_path(doc, path, value)
    return doc


# --- GGUF: header as read by `info` and by `load` -------------------------------------------


@pytest.fixture(scope="module")
def gguf_seeds(tmp_path_factory, smollm2_path) -> list[Seed]:
    from convert.hf_to_gguf import convert

    d = tmp_path_factory.mktemp("gguf-seeds")
    tiny = convert(tiny_checkpoint(d / "hf"), d / "tiny.gguf", type="F32").path
    seeds = [Seed.read(tiny)]
    if FULL:
        seeds.append(Seed.read(smollm2_path))
    return seeds


TYPES = [int(t) for t in gguf.GGMLQuantizationType]


@st.composite
def gguf_mutations(draw, seed: Seed):
    out = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                [
                    "set",
                    "set",
                    "set",
                    "delete",
                    "rename_key",
                    "bad_utf8_key",
                    "bad_utf8_value",
                    "tensor_type",
                    "tensor_name",
                    "bad_utf8_tensor",
                    "drop_tensor",
                    "swap_tensors",
                ]
            )
        )
        key = draw(st.sampled_from(seed.keys))
        i = draw(st.integers(0, len(seed.tensors) - 1))
        if op == "set":
            value = draw(
                st.one_of(
                    scalars,
                    st.lists(scalars, max_size=4).filter(lambda v: len({type(x) for x in v}) <= 1),
                )
            )
            if isinstance(value, str) and "\ud800" in value:
                value = value.replace("\ud800", "?")
            if isinstance(value, list) and value and isinstance(value[0], str):
                value = [x.replace("\ud800", "?") for x in value]
            if isinstance(value, int) and not -(2**63) <= value < 2**64:
                value = 0
            if (
                isinstance(value, list)
                and any(isinstance(x, int) and not isinstance(x, bool) and x < 0 for x in value)
                and any(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 2**63 for x in value
                )
            ):
                value = [0]
            out.append(("set", key, value))
        elif op == "rename_key":
            out.append(("rename_key", key, draw(st.sampled_from(seed.keys + ["x", "llama.x", ""]))))
        elif op in ("delete", "bad_utf8_key", "bad_utf8_value"):
            out.append((op, key))
        elif op == "tensor_type":
            out.append((op, i, draw(st.sampled_from(TYPES))))
        elif op == "tensor_name":
            names = [t["name"] for t in seed.tensors]
            out.append((op, i, draw(st.sampled_from(names + ["blk.99.attn_q.weight", "x", ""]))))
        elif op == "swap_tensors":
            out.append((op, i, draw(st.integers(0, len(seed.tensors) - 1))))
        else:
            out.append((op, i))
    return out


@st.composite
def mutated_gguf_case(draw, seeds):
    seed = draw(st.sampled_from(seeds))
    return seed, draw(gguf_mutations(seed))


def _set_value_type_error(seed, muts, path) -> bool:
    try:
        mutated_gguf(seed, path, muts)
    except (TypeError, ValueError, OverflowError, struct_error()):
        return True  # gguf-py cannot write this value (e.g. mixed-type array): not an input
    return False


def struct_error():
    import struct

    return struct.error


def test_fuzz_gguf_info(gguf_seeds, tmp_path):
    """`edge-llm info` (the header check) on mutated headers: a summary or a one-line error."""
    from edge_llm import validate

    @FUZZ
    @given(mutated_gguf_case(gguf_seeds))
    def run(case):
        seed, muts = case
        p = tmp_path / "m.gguf"
        if _set_value_type_error(seed, muts, p):
            return
        info = verdict("gguf-info", validate.check, p)
        if info is not None:
            json.dumps(info.summary())

    run()


@pytest.fixture(scope="module")
def adapter_seed(tmp_path_factory):
    """(a LoRA adapter GGUF made from a PEFT folder by convert/lora.py, its base's header)."""
    pytest.importorskip("peft")
    from convert.lora import write_gguf_adapter
    from edge_llm import gguf_info
    from tests.fixtures.lora import random_peft, tiny_base

    d = tmp_path_factory.mktemp("adapter-seed")
    hf, base, model = tiny_base(d / "base")
    peft_dir, _ = random_peft(model, d / "peft", seed=1, r=2)
    adapter = write_gguf_adapter(peft_dir, hf, d / "adapter.gguf").path
    return Seed.read(adapter), gguf_info.read(base)


def test_fuzz_adapter_header(adapter_seed, tmp_path):
    """The adapter check (`edge_llm.adapters.check`, what `--adapter` and `add_adapter` run
    before llama.cpp) on mutated adapter headers: an AdapterInfo or a one-line error."""
    from edge_llm import adapters

    seed, base = adapter_seed

    @FUZZ
    @given(gguf_mutations(seed))
    def run(muts):
        p = tmp_path / "a.gguf"
        if _set_value_type_error(seed, muts, p):
            return
        info = verdict("adapter-header", adapters.check, p, base)
        if info is not None:
            json.dumps(info.summary())

    run()


def test_fuzz_gguf_load(gguf_seeds, tmp_path):
    """`edge_llm.load` on mutated headers, in a child: the checks refuse it, or llama.cpp loads
    it (or refuses it with an error); llama.cpp never crashes or hangs on a file the checks
    passed."""
    worker = LoadWorker()

    @FUZZ
    @given(mutated_gguf_case(gguf_seeds[:1]))  # the tiny seed: llama.cpp loads it in milliseconds
    def run(case):
        seed, muts = case
        p = tmp_path / "m.gguf"
        if _set_value_type_error(seed, muts, p):
            return
        STATS["gguf-load"]["inputs"] += 1
        if STATS["gguf-load"]["inputs"] % 500 == 0:
            write_report()
        r = worker.load(p)
        assert "crash" not in r, f"llama.cpp crashed ({r['crash']}) on {muts}: {r.get('stderr')}"
        assert "hang" not in r, f"loading hung on {muts}"
        assert "error" not in r, f"{r['error']} on {muts}"
        if r["ok"]:
            STATS["gguf-load"]["loaded"] += 1
        elif r.get("checked"):
            STATS["gguf-load"]["passed checks, llama.cpp refused"] += 1
            assert "\n" not in r["refused"]
        else:
            STATS["gguf-load"]["refused by checks"] += 1

    try:
        run()
    finally:
        worker.close()


# --- Hugging Face checkpoints: safetensors headers, index, config.json, tokenizer.json --------


@pytest.fixture(scope="module")
def hf_seed(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("hf-seed") / "tiny")


@pytest.fixture(scope="module")
def hf_sharded_seed(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("hf-sharded") / "tiny", shards=2)


def _copy(seed: Path, tmp: Path) -> Path:
    dst = tmp / "src"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(seed, dst)
    return dst


def _dump(doc) -> str:
    return json.dumps(doc, allow_nan=True)


def test_fuzz_safetensors_header(hf_seed, tmp_path):
    from convert.hf_to_gguf import check_source
    from tests.fixtures.fuzzing import read_safetensors_header, write_safetensors_header

    header, data = read_safetensors_header(hf_seed / "model.safetensors")

    @FUZZ
    @given(st.data())
    def run(d):
        src = _copy(hf_seed, tmp_path)
        h = mutate_doc(d.draw, header)
        write_safetensors_header(src / "model.safetensors", h, data)
        verdict("safetensors-header", check_source, src)

    run()


def test_fuzz_index_file(hf_sharded_seed, tmp_path):
    from convert.hf_to_gguf import check_source

    index = json.loads((hf_sharded_seed / "model.safetensors.index.json").read_text())

    @FUZZ
    @given(st.data())
    def run(d):
        src = _copy(hf_sharded_seed, tmp_path)
        (src / "model.safetensors.index.json").write_text(_dump(mutate_doc(d.draw, index)))
        verdict("index", check_source, src)

    run()


def test_fuzz_config_json(hf_seed, tmp_path):
    """A config that passes the checks must convert into a GGUF llama.cpp loads."""
    from convert.hf_to_gguf import check_source, convert

    config = json.loads((hf_seed / "config.json").read_text())
    worker = LoadWorker()

    @FUZZ
    @given(st.data())
    def run(d):
        src = _copy(hf_seed, tmp_path)
        (src / "config.json").write_text(_dump(mutate_doc(d.draw, config)))
        if verdict("config", check_source, src) is None:
            return
        out = tmp_path / "out.gguf"
        out.unlink(missing_ok=True)
        with within():
            convert(src, out, type="F32")
        r = worker.load(out)
        assert r["ok"], f"converted a GGUF llama.cpp refuses: {r}"
        STATS["config"]["converted and loaded"] += 1

    try:
        run()
    finally:
        worker.close()


def test_fuzz_tokenizer_json(hf_seed, tmp_path):
    from convert.hf_to_gguf import check_source

    tj = json.loads((hf_seed / "tokenizer.json").read_text())

    @FUZZ
    @given(st.data())
    def run(d):
        src = _copy(hf_seed, tmp_path)
        (src / "tokenizer.json").write_text(_dump(mutate_doc(d.draw, tj)))
        verdict("tokenizer-json", check_source, src)

    run()


# --- TOML inputs: recipes, device profiles, bench suites ------------------------------------


def _toml_or_bytes(draw, doc) -> bytes:
    """A mutated document as TOML, or (sometimes) its TOML text with bytes flipped."""
    doc = mutate_doc(draw, doc)
    try:
        text = tomli_w.dumps(doc).encode()
    except (TypeError, ValueError, AttributeError):  # not a table at the top: any bytes then
        text = draw(st.binary(max_size=64))
    if draw(st.integers(0, 9)) == 0 and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.binary(min_size=1, max_size=4)) + text[i + 1 :]
    return text


def _toml_seeds(folder: Path, pattern: str = "*.toml") -> list[dict]:
    return [tomllib.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


def test_fuzz_recipes(tmp_path, smollm2_path):
    from convert.quant import recipes
    from edge_llm import gguf_info

    presets = REPO / "convert" / "quant" / "recipes"
    seeds = [d for d in _toml_seeds(presets) if "rules" in d or "default" in d]
    seeds = seeds or _toml_seeds(presets)
    info = gguf_info.read(smollm2_path)
    shapes = [(t.name, tuple(reversed(t.shape))) for t in info.tensors]

    def load_and_resolve(path):
        rec = recipes.load(path)
        return recipes.resolve(rec, shapes, 30)

    @FUZZ
    @given(st.data())
    def run(d):
        p = tmp_path / "r.toml"
        p.write_bytes(_toml_or_bytes(d.draw, d.draw(st.sampled_from(seeds))))
        verdict("recipes", load_and_resolve, p)

    run()


def test_fuzz_device_profiles(tmp_path):
    from edge_llm.devices import profile

    seeds = _toml_seeds(REPO / "edge_llm" / "devices" / "profiles")

    @FUZZ
    @given(st.data())
    def run(d):
        p = tmp_path / "device.toml"
        p.write_bytes(_toml_or_bytes(d.draw, d.draw(st.sampled_from(seeds))))
        verdict("device-profiles", profile.load_file, p)

    run()


def test_fuzz_bench_suites(tmp_path):
    from bench import suites

    seeds = _toml_seeds(REPO / "bench" / "suites")

    @FUZZ
    @given(st.data())
    def run(d):
        p = tmp_path / "suite.toml"
        p.write_bytes(_toml_or_bytes(d.draw, d.draw(st.sampled_from(seeds))))
        verdict("bench-suites", suites.load, str(p))

    run()


# --- server request bodies ------------------------------------------------------------------

BODIES = [
    {"model": "fuzz", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    {
        "model": "fuzz",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a color."},
        ],
        "max_tokens": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 1,
        "stop": ["\n"],
    },
    {
        "model": "fuzz",
        "messages": [{"role": "user", "content": "Count"}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    {"model": "fuzz", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0},
    {"model": "fuzz", "prompt": "Once", "max_tokens": 2, "stream": True, "logprobs": None},
    # lm-evaluation-harness's log-likelihood request, and the tokenizer routes' bodies
    {"model": "fuzz", "prompt": [[1, 2, 3], [4, 5]], "echo": True, "logprobs": 1, "max_tokens": 1},
    {"prompt": "Hi there", "echo": True, "logprobs": 2, "max_tokens": 0},
    {"content": "Hi <|im_end|>", "add_special": True, "with_pieces": True},
    {"prompt": "Hi", "add_special_tokens": False},
    {"tokens": [1, 2, 3]},
]
RAW = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'{"messages": "\\ud800"}',
    b"\xff\xfe",
    b'{"model": 1e999}',
    b'{"prompt": "\\udc00x", "max_tokens": 2}',
    b'{"model":"fuzz","prompt":"a","max_tokens":NaN}',
]


@pytest.fixture(scope="module")
def server_client(gguf_seeds):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import edge_llm
    from edge_llm.server import create_app

    model = edge_llm.load(gguf_seeds[0].path, n_ctx=128, threads=1)
    with TestClient(create_app(model, model_id="fuzz"), raise_server_exceptions=False) as c:
        yield c
    model.close()


def test_fuzz_server_bodies(server_client):
    """Mutated request bodies: never a 5xx; every 4xx is an OpenAI-shaped error."""

    @FUZZ
    @given(st.data())
    def run(d):
        url = d.draw(
            st.sampled_from(["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"])
        )
        if d.draw(st.integers(0, 9)) == 0:
            body = d.draw(st.sampled_from(RAW + [d.draw(st.binary(max_size=64))]))
        else:
            doc = mutate_doc(d.draw, d.draw(st.sampled_from(BODIES)))
            body = json.dumps(doc, allow_nan=True).encode()
        STATS["server-bodies"]["inputs"] += 1
        if STATS["server-bodies"]["inputs"] % 500 == 0:
            write_report()
        with within():
            r = server_client.post(url, content=body, headers={"content-type": "application/json"})
            text = r.text
        assert r.status_code < 500, f"{r.status_code} for {body[:300]!r}: {text[:300]}"
        STATS["server-bodies"][f"http {r.status_code // 100}xx"] += 1
        if r.status_code >= 400:
            err = r.json().get("error")
            assert isinstance(err, dict) and isinstance(err.get("message"), str), text[:300]

    run()


def test_fuzz_router_files(tmp_path):
    """A cascade's router file (edge_llm.cascade.router): loaded, scored and asked for a rate's
    threshold, or refused in one line."""
    import numpy as np

    from edge_llm.cascade.router import Router, Signals, fit

    rng = np.random.default_rng(0)
    rows = [
        Signals(float(a), float(a - abs(b)), float(-abs(c)), 5)
        for a, b, c in rng.normal(size=(40, 3))
    ]
    good = tmp_path / "seed.json"
    fit(rows, rng.random(40) > 0.5, rate=0.3, model_sha256="ab" * 32).save(good)
    seed = json.loads(good.read_text())

    def use(p: Path) -> None:
        r = Router.load(p, "ab" * 32)
        r.score(rows[0])
        r.threshold_for_rate(0.3)

    @FUZZ
    @given(st.data())
    def run(d):
        doc = mutate_doc(d.draw, seed)
        text = json.dumps(doc).encode()
        if d.draw(st.integers(0, 9)) == 0:
            i = d.draw(st.integers(0, len(text) - 1))
            text = text[:i] + d.draw(st.binary(min_size=1, max_size=4)) + text[i + 1 :]
        p = tmp_path / "router.json"
        p.write_bytes(text)
        verdict("router-files", use, p)

    run()


def test_fuzz_cloud_responses():
    """What a cascade's cloud sends back (edge_llm.cascade.cloud), whole and streamed: a mutated
    OpenAI answer, or its bytes flipped, gives an answer or a CloudError, never another error."""
    import httpx

    from edge_llm.cascade.cloud import CloudClient, CloudConfig, CloudError

    whole = {
        "choices": [{"message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    event = {"choices": [{"delta": {"content": "4"}, "finish_reason": None}], "usage": None}

    def client(status: int, body: bytes) -> CloudClient:
        transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
        cfg = CloudConfig("http://127.0.0.1:9/v1", "m", retries=0, max_body=4096, timeout_s=5)
        return CloudClient(cfg, transport=transport, sleep=lambda s: None)

    def call(status: int, body: bytes, stream: bool) -> None:
        c = client(status, body)
        try:
            if stream:
                list(c.stream(c.body(messages=[{"role": "user", "content": "2+2?"}])))
            else:
                c.complete(c.body(prompt="2+2="))
        except CloudError as e:
            assert str(e) and "\n" not in str(e)

    @FUZZ
    @given(st.data())
    def run(d):
        stream = d.draw(st.booleans())
        doc = mutate_doc(d.draw, event if stream else whole)
        text = json.dumps(doc).encode()
        if stream:
            text = b"data: " + text + b"\n\ndata: [DONE]\n\n"
        if d.draw(st.integers(0, 4)) == 0:
            i = d.draw(st.integers(0, len(text) - 1))
            text = text[:i] + d.draw(st.binary(min_size=1, max_size=8)) + text[i + 1 :]
        status = d.draw(st.sampled_from([200, 200, 200, 400, 429, 500, 302]))
        STATS["cloud-responses"]["inputs"] += 1
        with within():
            call(status, text, stream)

    run()
