"""edge_llm.Cascade: the device answers, the cloud gets what the device is unsure of.

Judges: llama-cpp-python's own logits (the signals), the cloud's own answer through the official
openai client (escalation), a loopback server that misbehaves on purpose and records what it
received (faults, retries, Retry-After, the key sent), a bare listening socket (local-only),
hand-computed cases (thresholds, the circuit breaker) and scipy's optimizer (the router's fit).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import edge_llm
from edge_llm.cascade import BROKE_OFF, Cascade, CloudConfig
from edge_llm.cascade.cloud import Breaker
from edge_llm.cascade.router import (
    Router,
    Signals,
    fit,
    threshold_for_accuracy,
    threshold_for_rate,
)
from edge_llm.errors import ConfigError
from edge_llm.server import create_app
from tests.conftest import cli
from tests.fixtures.server import Running

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"
N = 8  # tokens per answer: enough for signals, quick on two cores
KEY = "sk-edge-llm-test-7f3a9c1e5b"
KEY_ENV = "EDGE_LLM_TEST_CLOUD_KEY"
ALWAYS, NEVER = math.inf, -math.inf  # thresholds: every answer escalates / none does


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def device(smollm2_path):
    m = edge_llm.load(smollm2_path, n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="module")
def cloud(gemma_path):
    """The real cloud: `edge-llm serve`'s app over another GGUF (Gemma 3 270M, a base model:
    /v1/completions) on loopback."""
    m = edge_llm.load(gemma_path, n_ctx=1024)
    s = Running(create_app(m, model_id="gemma3-270m"), as_serve=True)
    yield s
    s.stop()
    m.close()


@pytest.fixture(scope="module")
def chat_cloud(smollm2_path):
    """A cloud that chats: `edge-llm serve`'s app over its own instance of SmolLM2 (the only
    chat model installed; Gemma 3 270M base has no chat template)."""
    m = edge_llm.load(smollm2_path, n_ctx=1024)
    s = Running(create_app(m, model_id="smollm2-cloud"), as_serve=True)
    yield s
    s.stop()
    m.close()


class Misbehaving:
    """A loopback HTTP server that answers each request with the next of ``modes`` (the last
    repeats) and records every request: arrival time, headers, body."""

    def __init__(self, *modes: str, retry_after: str = "1", sleep_s: float = 3.0):
        self.modes, self.retry_after, self.sleep_s = list(modes), retry_after, sleep_s
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                i = len(outer.requests)
                outer.requests.append(
                    {"t": time.monotonic(), "headers": dict(self.headers), "body": body}
                )
                mode = outer.modes[min(i, len(outer.modes) - 1)]
                outer.respond(self, mode, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def respond(self, h: BaseHTTPRequestHandler, mode: str, body: dict) -> None:
        def send(status: int, data: bytes, headers: dict | None = None, length: bool = True):
            h.send_response(status)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            if length:
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        if mode == "ok":
            if body.get("stream"):
                events = [
                    {"choices": [{"delta": {"content": p}, "finish_reason": None}]}
                    for p in ("CLOUD ", "ANSWER")
                ]
                events.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
                data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                send(200, data.encode(), {"Content-Type": "text/event-stream"})
            else:
                reply = {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": "CLOUD ANSWER"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                }
                send(200, json.dumps(reply).encode(), {"Content-Type": "application/json"})
        elif mode == "sleep":
            time.sleep(self.sleep_s)
            send(200, b"{}")
        elif mode in ("429", "500", "503"):
            send(int(mode), b'{"error": {"message": "busy"}}', {"Retry-After": self.retry_after})
        elif mode == "malformed":
            send(200, b"this is not json {", {"Content-Type": "application/json"})
        elif mode == "wrong-shape":
            send(200, b'{"choices": [{"message": {"content": 42}}]}')
        elif mode == "oversized":  # no Content-Length: the body ends when the connection does
            send(200, b'{"choices": "' + b"a" * 200_000 + b'"}', length=False)
        elif mode == "oversized-declared":
            send(200, b'{"x": "' + b"a" * 200_000 + b'"}')
        elif mode == "echo-key":  # a server that quotes the key back in its error
            auth = h.headers.get("Authorization", "")
            send(401, json.dumps({"error": {"message": f"invalid key {auth}"}}).encode())
        elif mode == "break-stream":
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            e = {"choices": [{"delta": {"content": "PARTIAL"}, "finish_reason": None}]}
            h.wfile.write(f"data: {json.dumps(e)}\n\n".encode())
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)  # cut off mid-answer
        else:
            raise AssertionError(mode)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def misbehaving():
    made: list[Misbehaving] = []

    def make(*modes: str, **kw) -> Misbehaving:
        made.append(Misbehaving(*modes, **kw))
        return made[-1]

    yield make
    for m in made:
        m.stop()


def config(url: str, model: str = "cloud-model", **kw) -> CloudConfig:
    defaults = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.05, "api_key_env": KEY_ENV}
    return CloudConfig(url, model, **{**defaults, **kw})


# --- signals ----------------------------------------------------------------------------------
def test_signals_are_the_answer_tokens_logprobs_under_llama_cpp(device, smollm2_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    c = Cascade(device, threshold=NEVER).generate(PROMPT, max_tokens=N, temperature=0)
    assert c.answered_by == "device" and c.signals.n_tokens == len(c.tokens) > 0
    # flash attention on, as edge_llm runs it (its rounding differs by ~0.1 nats from without)
    judge = llama_cpp.Llama(
        str(smollm2_path), n_ctx=256, n_threads=2, logits_all=True, flash_attn=True, verbose=False
    )
    try:
        prompt = judge.tokenize(PROMPT.encode(), add_bos=True, special=True)
        judge.reset()
        judge.eval(prompt + c.tokens)
        lps, ents = [], []
        for i, tok in enumerate(c.tokens):
            x = np.array(judge.scores[len(prompt) + i - 1], dtype=np.float64)
            lp = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
            lps.append(lp[tok])
            ents.append(-(np.exp(lp) * lp).sum())
    finally:
        judge.close()
    assert c.signals.mean_logprob == pytest.approx(np.mean(lps), abs=1e-3)
    assert c.signals.min_logprob == pytest.approx(np.min(lps), abs=1e-3)
    assert c.signals.neg_entropy == pytest.approx(-np.mean(ents), abs=1e-3)


def test_agreement_of_sampled_answers(device):
    # Greedy sampling k times: every "sample" is the answer itself, so agreement is 1.
    c = Cascade(device, signal="agreement", threshold=0.5, k_samples=2, sample_temperature=0.0)
    r = c.generate(PROMPT, max_tokens=N, temperature=0)
    assert r.signals.agreement == 1.0 and r.answered_by == "device" and not r.escalate


# --- thresholds (hand-computed) ---------------------------------------------------------------
SCORES = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0]
# device right/wrong per score: wrong at 0.1, 0.3 and 0.5; device accuracy 7/10
RIGHT = [s not in (0.1, 0.3, 0.5) for s in SCORES]


def test_threshold_for_a_30_percent_rate():
    t = threshold_for_rate(SCORES, 0.3)  # the 3 lowest (0.1, 0.2, 0.3): halfway to 0.4
    assert t.value == pytest.approx(0.35) and t.rate == 0.3
    assert sum(s < t.value for s in SCORES) == 3
    assert threshold_for_rate(SCORES, 0.0).value == -math.inf
    assert threshold_for_rate(SCORES, 1.0).value == math.inf
    # ties cannot be split: 0.2 three times, 40% asks for 2 -> the nearest cut escalates 1
    t = threshold_for_rate([0.1, 0.2, 0.2, 0.2, 0.5], 0.4)
    assert t.value == pytest.approx(0.15) and t.rate == 0.2


def test_threshold_for_a_target_accuracy():
    # cloud always right: escalating 0.1 (wrong), 0.2 (right), 0.3 (wrong) gives 9/10
    t = threshold_for_accuracy(SCORES, RIGHT, 0.9)
    assert (t.value, t.rate, t.accuracy, t.reached) == (pytest.approx(0.35), 0.3, 0.9, True)
    t = threshold_for_accuracy(SCORES, RIGHT, 1.0)  # also 0.4 and 0.5: 5 escalated
    assert (t.value, t.rate, t.accuracy) == (pytest.approx(0.55), 0.5, 1.0)
    assert threshold_for_accuracy(SCORES, RIGHT, 0.7).value == -math.inf  # the device alone
    # the cloud wrong on the item scored 0.3: 0.9 needs 0.5 escalated too; 1.0 is out of reach
    cloud = [s != 0.3 for s in SCORES]
    t = threshold_for_accuracy(SCORES, RIGHT, 0.9, cloud)
    assert (t.value, t.rate, t.accuracy) == (pytest.approx(0.55), 0.5, 0.9)
    t = threshold_for_accuracy(SCORES, RIGHT, 1.0, cloud)
    assert (t.value, t.accuracy, t.reached) == (pytest.approx(0.55), 0.9, False)


def test_router_fit_is_the_penalized_logistic_regression_scipy_finds(tmp_path):
    scipy_opt = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    n = 200
    rows = [
        Signals(float(a), float(a - abs(b)), float(-abs(c)), 5)
        for a, b, c in rng.normal(size=(n, 3))
    ]
    x = np.array([[r.mean_logprob, r.min_logprob, r.neg_entropy] for r in rows])
    y = (x @ [1.5, -0.5, 1.0] + rng.normal(size=n) > 0).astype(float)
    r = fit(rows, y.astype(bool), rate=0.3, model_sha256="ab" * 32, model_name="tiny")
    z = (x - x.mean(0)) / x.std(0)
    zb = np.hstack([z, np.ones((n, 1))])

    def loss(w):
        s = zb @ w
        return np.sum(np.logaddexp(0, s) - y * s) + 0.5 * 1e-2 * n * np.sum(w[:3] ** 2)

    w = scipy_opt.minimize(loss, np.zeros(4), method="BFGS", options={"gtol": 1e-8}).x
    assert np.allclose(r.weights + [r.bias], w, atol=1e-4)
    scores = [r.score(s) for s in rows]
    assert np.mean(np.array(scores) < r.threshold) == pytest.approx(0.3, abs=0.01)
    assert r.threshold_for_rate(0.3) == pytest.approx(np.percentile(scores, 30))
    path = tmp_path / "router.json"
    r.save(path)
    assert Router.load(path, "ab" * 32).score(rows[0]) == pytest.approx(scores[0])
    with pytest.raises(ConfigError, match="fitted for tiny"):
        Router.load(path, "cd" * 32)
    path.write_text('{"format": 1, "features": ["mean_logprob"], "weights": [1e999]}')
    with pytest.raises(ConfigError, match="malformed"):
        Router.load(path)


# --- escalation against a real loopback cloud -------------------------------------------------
def test_escalation_and_its_absence(device, cloud, chat_cloud):
    judge = cloud.client().completions.create(
        model="gemma3-270m", prompt=PROMPT, max_tokens=N, temperature=0
    )
    own = device.generate(PROMPT, max_tokens=N, temperature=0)
    up = Cascade(device, config(cloud.url + "/v1", "gemma3-270m"), threshold=ALWAYS).generate(
        PROMPT, max_tokens=N, temperature=0
    )
    assert up.answered_by == "cloud" and up.escalate and up.cloud_error is None
    assert up.text == judge.choices[0].text and up.text != own.text
    assert up.usage.completion_tokens == judge.usage.completion_tokens
    assert up.device.text == own.text  # the device answered first
    stay = Cascade(device, config(cloud.url + "/v1", "gemma3-270m"), threshold=NEVER).generate(
        PROMPT, max_tokens=N, temperature=0
    )
    assert stay.answered_by == "device" and not stay.escalate and stay.text == own.text
    # chat goes to the cloud's chat endpoint
    said = chat_cloud.client().chat.completions.create(
        model="smollm2-cloud", messages=QUESTION, max_tokens=N, temperature=0
    )
    up = Cascade(device, config(chat_cloud.url + "/v1", "smollm2-cloud"), threshold=ALWAYS).chat(
        QUESTION, max_tokens=N, temperature=0
    )
    assert up.answered_by == "cloud" and up.text == said.choices[0].message.content
    # a real threshold between two answers' confidences: the less sure one escalates
    hi = Cascade(device, threshold=NEVER).generate(PROMPT, max_tokens=N, temperature=0)
    lo = Cascade(device, threshold=NEVER).generate("zx qv wq", max_tokens=N, temperature=0)
    assert lo.confidence < hi.confidence
    mid = (lo.confidence + hi.confidence) / 2
    c = Cascade(device, config(cloud.url + "/v1", "gemma3-270m"), threshold=mid)
    assert c.generate(PROMPT, max_tokens=N, temperature=0).answered_by == "device"
    assert c.generate("zx qv wq", max_tokens=N, temperature=0).answered_by == "cloud"


def test_streaming_carries_the_marker(device, cloud, chat_cloud):
    c = Cascade(device, config(cloud.url + "/v1", "gemma3-270m"), threshold=ALWAYS)
    s = c.stream(PROMPT, max_tokens=N, temperature=0)
    assert s.answered_by is None  # not known before the cloud's first piece
    pieces = list(s)
    assert s.answered_by == "cloud" and len(pieces) >= 2
    assert "".join(pieces) == s.result.text == c.generate(PROMPT, max_tokens=N, temperature=0).text
    c = Cascade(device, config(chat_cloud.url + "/v1", "smollm2-cloud"), threshold=ALWAYS)
    s = c.chat_stream(QUESTION, max_tokens=N, temperature=0)
    assert "".join(s) == s.result.text == c.chat(QUESTION, max_tokens=N, temperature=0).text
    assert s.answered_by == "cloud"
    s = Cascade(device, config(cloud.url + "/v1", "gemma3-270m"), threshold=NEVER).stream(
        PROMPT, max_tokens=N, temperature=0
    )
    assert s.answered_by == "device"  # known at once: nothing to wait for
    assert "".join(s) == s.result.text == device.generate(PROMPT, max_tokens=N, temperature=0).text


@pytest.fixture(scope="module")
def cascade_server(device, cloud, chat_cloud):
    """`edge-llm serve --cloud`'s app: cascades over the device, escalating everything (one to
    the completion cloud, one to the chat cloud)."""
    servers = [
        Running(
            create_app(
                Cascade(device, config(c.url + "/v1", name), threshold=ALWAYS), model_id="dev"
            ),
            as_serve=True,
        )
        for c, name in ((cloud, "gemma3-270m"), (chat_cloud, "smollm2-cloud"))
    ]
    yield servers
    for s in servers:
        s.stop()


def test_served_cascade_through_the_openai_client(cascade_server, cloud, chat_cloud):
    to_gemma, to_smollm2 = (s.client() for s in cascade_server)
    judge = cloud.client().completions.create(
        model="gemma3-270m", prompt=PROMPT, max_tokens=N, temperature=0
    )
    r = to_gemma.completions.create(model="dev", prompt=PROMPT, max_tokens=N, temperature=0)
    assert r.model_extra["answered_by"] == "cloud" and r.choices[0].text == judge.choices[0].text
    assert r.model_extra["cascade"]["signals"]["n_tokens"] > 0
    chunks = list(
        to_gemma.completions.create(
            model="dev", prompt=PROMPT, max_tokens=N, temperature=0, stream=True
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == judge.choices[0].text
    assert all(ch.model_extra["answered_by"] == "cloud" for ch in chunks)
    assert chunks[-1].model_extra["cascade"]["answered_by"] == "cloud"
    # chat, whole and streamed
    said = (
        chat_cloud.client()
        .chat.completions.create(
            model="smollm2-cloud", messages=QUESTION, max_tokens=N, temperature=0
        )
        .choices[0]
        .message.content
    )
    r = to_smollm2.chat.completions.create(
        model="dev", messages=QUESTION, max_tokens=N, temperature=0
    )
    assert r.model_extra["answered_by"] == "cloud" and r.choices[0].message.content == said
    chunks = list(
        to_smollm2.chat.completions.create(
            model="dev", messages=QUESTION, max_tokens=N, temperature=0, stream=True
        )
    )
    content = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(ch.choices[0].delta.content for ch in content) == said
    assert content and all(ch.model_extra["answered_by"] == "cloud" for ch in content)
    # local_only per request keeps the device's answer
    local = to_smollm2.chat.completions.create(
        model="dev", messages=QUESTION, max_tokens=N, temperature=0, extra_body={"local_only": True}
    )
    assert local.model_extra["answered_by"] == "device"
    assert local.model_extra["cascade"]["not_sent"] == "local_only"


# --- faults: the device's answer, flagged, within the timeout ---------------------------------
FAULTS = {
    "sleep": "timeout",
    "429": "rate_limited",
    "500": "server_error",
    "503": "server_error",
    "malformed": "malformed",
    "wrong-shape": "malformed",
    "oversized": "oversized",
    "oversized-declared": "oversized",
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("mode", list(FAULTS))
def test_every_fault_yields_the_devices_answer_flagged(device, misbehaving, mode, stream):
    bad = misbehaving(mode, retry_after="0")
    timeout = 1.5
    c = Cascade(device, config(bad.url, timeout_s=timeout, max_body=8192), threshold=ALWAYS)
    own = device.chat(QUESTION, max_tokens=N, temperature=0)
    t0 = time.monotonic()
    if stream:
        s = c.chat_stream(QUESTION, max_tokens=N, temperature=0)
        text = "".join(s)
        r = s.result
        assert text == r.text
    else:
        r = c.chat(QUESTION, max_tokens=N, temperature=0)
    took = time.monotonic() - t0
    assert r.answered_by == "device" and r.text == own.text
    assert r.cloud_error.split(":")[0] == FAULTS[mode]
    device_s = r.timings.ttft_s + r.timings.decode_s  # this call's own device generation
    assert took - device_s < timeout + 1.0  # slack: a loaded 2-core host schedules late
    retried = FAULTS[mode] in ("rate_limited", "server_error")
    assert len(bad.requests) == (3 if retried else 1)  # 1 + 2 retries; the rest are not retried


def test_connection_refused_is_the_devices_answer(device):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    c = Cascade(device, config(f"http://127.0.0.1:{port}/v1", timeout_s=1.0), threshold=ALWAYS)
    r = c.chat(QUESTION, max_tokens=N, temperature=0)
    assert r.answered_by == "device" and r.cloud_error.startswith("connection")


def test_retries_are_bounded_with_backoff_and_honour_retry_after(device, misbehaving):
    bad = misbehaving("500")
    r = Cascade(device, config(bad.url, backoff_s=0.2), threshold=ALWAYS).chat(
        QUESTION, max_tokens=N
    )
    gaps = np.diff([q["t"] for q in bad.requests])
    assert r.cloud_error.startswith("server_error") and len(bad.requests) == 3  # 1 + 2 retries
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # doubled
    good = misbehaving("429", "ok", retry_after="1")
    r = Cascade(device, config(good.url, backoff_s=0.01), threshold=ALWAYS).chat(
        QUESTION, max_tokens=N
    )
    assert r.answered_by == "cloud" and r.text == "CLOUD ANSWER" and len(good.requests) == 2
    assert good.requests[1]["t"] - good.requests[0]["t"] >= 0.95  # Retry-After: 1
    far = misbehaving("429", "ok", retry_after="120")  # beyond max_retry_after_s: no retry
    r = Cascade(device, config(far.url), threshold=ALWAYS).chat(QUESTION, max_tokens=N)
    assert r.cloud_error.startswith("rate_limited") and "120 s" in r.cloud_error
    assert len(far.requests) == 1


def test_a_stream_cut_off_midway_keeps_what_was_shown_and_adds_the_devices_answer(
    device, misbehaving
):
    bad = misbehaving("break-stream")
    own = device.chat(QUESTION, max_tokens=N, temperature=0)
    s = Cascade(device, config(bad.url, timeout_s=2.0), threshold=ALWAYS).chat_stream(
        QUESTION, max_tokens=N, temperature=0
    )
    text = "".join(s)
    assert text == "PARTIAL" + BROKE_OFF + own.text == s.result.text
    assert s.result.answered_by == "device" and s.result.cloud_error


# --- the circuit breaker ----------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_breaker_opens_after_n_failures_and_closes_after_the_cooldown(caplog):
    clock = Clock()
    b = Breaker(failures=3, cooldown_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="edge_llm.cascade"):
        b.failure(), b.failure()
        assert b.allow()
        b.failure()
        assert not b.allow()
        clock.now += 9.9
        assert not b.allow()
        clock.now += 0.2
        assert b.allow()  # half-open: one try
        b.failure()
        assert not b.allow()  # failed again: open for another cooldown
        clock.now += 10.1
        b.success()
        assert b.allow() and b.in_a_row == 0
    opened = [r for r in caplog.records if "failed 3 times" in r.getMessage()]
    assert len(opened) == 1  # said once
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_cascade_stops_calling_a_failing_cloud(device, misbehaving, caplog):
    bad = misbehaving("500")
    clock = Clock()
    cfg = config(bad.url, retries=0, breaker_failures=2, breaker_cooldown_s=30)
    c = Cascade(device, cfg, threshold=ALWAYS, clock=clock, sleep=clock.sleep)
    with caplog.at_level(logging.WARNING, logger="edge_llm.cascade"):
        errors = [c.chat(QUESTION, max_tokens=4).cloud_error for _ in range(4)]
    assert [e.split(":")[0] for e in errors] == ["server_error"] * 2 + ["circuit_open"] * 2
    assert len(bad.requests) == 2  # the open circuit sent nothing
    assert sum("failed 2 times" in r.getMessage() for r in caplog.records) == 1
    clock.now += 31
    assert c.chat(QUESTION, max_tokens=4).cloud_error.startswith("server_error")
    assert len(bad.requests) == 3


# --- privacy: local-only, and the key --------------------------------------------------------
@pytest.fixture
def listener():
    """A listening socket standing in for the cloud: it records every connection attempt."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.5)
    yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


def assert_no_connection(sock: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = sock.accept()
        conn.close()


def test_local_only_sends_nothing(device, listener):
    sock, url = listener
    c = Cascade(device, config(url), threshold=ALWAYS, local_only=True)
    r = c.chat(QUESTION, max_tokens=N)
    assert r.answered_by == "device" and r.escalate and r.not_sent == "local_only"
    s = Cascade(device, config(url), threshold=ALWAYS).chat_stream(
        QUESTION, max_tokens=N, local_only=True
    )
    assert "".join(s) and s.result.not_sent == "local_only"
    assert_no_connection(sock)
    # the CLI: --local-only with a cloud that would get everything (--escalate-rate 1)
    out = cli(
        "run",
        "-p",
        PROMPT,
        "-n",
        "4",
        "--json",
        "--cloud",
        url,
        "--cloud-model",
        "m",
        "--escalate-rate",
        "1",
        "--local-only",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["answered_by"] == "device"
    assert_no_connection(sock)
    # ... and the control: without it the same command does connect
    cli(
        "run",
        "-p",
        PROMPT,
        "-n",
        "4",
        "--cloud",
        url,
        "--cloud-model",
        "m",
        "--escalate-rate",
        "1",
        "--cloud-timeout",
        "1",
    )
    conn, _ = sock.accept()
    conn.close()


def test_the_key_appears_nowhere(device, misbehaving, caplog, capfd, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    bad = misbehaving("echo-key", "500", "echo-key")
    with caplog.at_level(logging.DEBUG):  # every logger, httpx's included
        c = Cascade(device, config(bad.url, retries=0, breaker_failures=1), threshold=ALWAYS)
        results = [c.chat(QUESTION, max_tokens=4) for _ in range(3)]
        s = Cascade(device, config(bad.url, retries=0), threshold=ALWAYS).chat_stream(
            QUESTION, max_tokens=4
        )
        results.append((list(s), s.result)[1])
    lines: list[str] = []
    fresh = Cascade(device, config(bad.url, retries=0), threshold=ALWAYS)
    served = Running(create_app(fresh, model_id="x", request_log=lines.append))
    try:
        r = served.client().chat.completions.create(model="x", messages=QUESTION, max_tokens=4)
        records = [repr(g) for g in served.app.state.generations]
    finally:
        served.stop()
    # the server did get the key (so finding it below would be possible)
    assert bad.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert "invalid key Bearer ***" in results[0].cloud_error
    out = cli(
        "run",
        "-p",
        PROMPT,
        "-n",
        "4",
        "--json",
        "--cloud",
        bad.url,
        "--cloud-model",
        "m",
        "--cloud-key-env",
        KEY_ENV,
        "--escalate-rate",
        "1",
        env={KEY_ENV: KEY},
    )
    assert out.returncode == 0
    written = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *capfd.readouterr(),
        out.stdout,
        out.stderr,
        *(json.dumps(x.to_dict()) for x in results),
        r.model_dump_json(),
        *lines,
        *records,
        *(repr(x) for x in results),
        repr(c),
        repr(c.cloud_config),
    ]
    assert "HTTP Request: POST" in caplog.text  # httpx's own log lines were captured
    assert any("/v1/chat/completions" in x for x in lines)  # the server logged the request
    assert all(KEY not in w for w in written)
    assert json.loads(out.stdout)["cascade"]["cloud_error"]  # the CLI's answer was flagged


def test_bad_cloud_options_are_one_line_errors(listener):
    _, url = listener
    for args, words in [
        (["--cloud", url], "--cloud-model"),
        (["--cloud", "ftp://x", "--cloud-model", "m"], "http://"),
        (["--cloud-model", "m"], "need --cloud"),
        (["--cloud", url, "--cloud-model", "m", "--cloud-key-env", "sk-abc def"], "NAME"),
        (["--cloud", url, "--cloud-model", "m", "--router", "/nonexistent.json"], "router"),
    ]:
        out = cli("run", "-p", PROMPT, "-n", "2", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert "Traceback" not in out.stderr


def test_serve_with_cloud_from_the_command_line(cloud, tmp_path):
    """`edge-llm serve --cloud URL --cloud-model NAME --escalate-rate 1` in a subprocess, driven
    by the openai client: the answer is the cloud's and says so."""
    import re
    import subprocess
    import sys

    import openai

    log = tmp_path / "serve.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_llm",
                "serve",
                "--port",
                "0",
                "--ctx",
                "512",
                "--cloud",
                cloud.url + "/v1",
                "--cloud-model",
                "gemma3-270m",
                "--escalate-rate",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=f,
        )
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"at (http://\S+/v1)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "escalating to gemma3-270m" in log.read_text()
        client = openai.OpenAI(base_url=m.group(1), api_key="none", max_retries=0, timeout=60)
        r = client.completions.create(
            model="smollm2-135m-instruct", prompt=PROMPT, max_tokens=N, temperature=0
        )
        judge = cloud.client().completions.create(
            model="gemma3-270m", prompt=PROMPT, max_tokens=N, temperature=0
        )
        assert (
            r.model_extra["answered_by"] == "cloud" and r.choices[0].text == judge.choices[0].text
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_chat_marks_cloud_answers(misbehaving):
    good = misbehaving("ok")
    args = ["--cloud", good.url, "--cloud-model", "m", "--escalate-rate", "1", "-n", "4"]
    out = cli("chat", *args, input="What is 12*7?\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CLOUD ANSWER"  # piped: the replies alone on stdout
    assert "[cloud]" in out.stderr
    bad = misbehaving("500")
    out = cli("chat", *args[:1], bad.url, *args[2:], "--cloud-timeout", "2", input="Hi\n")
    assert out.returncode == 0 and out.stdout.strip() and "CLOUD" not in out.stdout
    assert "the cloud failed: server_error" in out.stderr and "[cloud]" not in out.stderr
