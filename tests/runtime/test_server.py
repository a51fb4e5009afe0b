"""`edge-llm serve`: a real uvicorn server on a loopback port, driven by the official OpenAI client
(and httpx for what the client hides): chat and completions, streamed and not, the same text as
the Model API, OpenAI-style errors, API keys, 8 clients at once, and clients that hang up."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import edge_llm
from edge_llm.server import _listen, create_app
from tests.fixtures.judges import llama_cpp_chat, llama_cpp_greedy
from tests.fixtures.server import Running

MODEL_ID = "smollm2-135m-instruct"
N_CTX = 1024
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
FRANCE = "The capital of France is"


@pytest.fixture(scope="module")
def paris(smollm2_path, llama_judge):
    """The judge of completions: llama-cpp-python's own greedy decode of FRANCE, same file, 14
    tokens (the 15th is a near-tie the host's CPU kernels decide, tests/runtime/test_generate.py)."""
    g = llama_cpp_greedy(llama_judge(smollm2_path), FRANCE, 14)
    assert g.text.startswith(" Paris") and g.finish_reason == "length"
    return g


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = edge_llm.load(smollm2_path, n_ctx=N_CTX)
    yield m
    m.close()


@pytest.fixture(scope="module")
def server(model):
    s = Running(create_app(model, model_id=MODEL_ID))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def secured(model):
    s = Running(create_app(model, model_id=MODEL_ID, api_key="secret"))
    yield s
    s.stop()


def records(server):
    return list(server.app.state.generations)


# --- answers ----------------------------------------------------------------------------------
def test_health_and_models(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    assert server.client().models.retrieve(MODEL_ID).id == MODEL_ID


def test_chat_completion_is_the_models_own_reply(server, model, smollm2_path, llama_judge):
    r = server.client().chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=24, temperature=0
    )
    direct = model.chat(QUESTION, max_tokens=24, temperature=0)
    # the judge: llama-cpp-python renders the GGUF's template and decodes greedily itself
    want = llama_cpp_chat(llama_judge(smollm2_path), QUESTION, 24)
    assert (direct.text, direct.finish_reason) == (want.text, want.finish_reason)
    assert (direct.usage.prompt_tokens, direct.usage.completion_tokens) == (
        want.prompt_tokens,
        want.completion_tokens,
    )
    assert r.object == "chat.completion" and r.model == MODEL_ID
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == direct.text and direct.text.strip()
    assert choice.finish_reason == direct.finish_reason
    assert r.usage.prompt_tokens == direct.usage.prompt_tokens
    assert r.usage.completion_tokens == direct.usage.completion_tokens
    assert r.usage.total_tokens == direct.usage.total_tokens


def test_streamed_chat_equals_the_whole_reply(server):
    client = server.client()
    whole = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_completion_tokens=24, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_completion(server, paris):
    r = server.client().completions.create(
        model=MODEL_ID, prompt=FRANCE, max_tokens=14, temperature=0
    )
    assert r.object == "text_completion"
    assert r.choices[0].text == paris.text
    assert r.choices[0].finish_reason == paris.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        paris.prompt_tokens,
        paris.completion_tokens,
        paris.prompt_tokens + paris.completion_tokens,
    )


def test_streamed_completion(server, paris):
    chunks = list(
        server.client().completions.create(
            model=MODEL_ID,
            prompt=FRANCE,
            max_tokens=14,
            temperature=0,
            stream=True,
        )
    )
    assert len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == paris.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_and_sampling_extras(server, smollm2_path, llama_judge):
    r = server.client().completions.create(
        model=MODEL_ID,
        prompt=FRANCE,
        max_tokens=16,
        temperature=0,
        stop="\n",
        extra_body={"top_k": 1, "min_p": 0.0, "repeat_penalty": 1.0, "unknown_field": 1},
    )
    want = llama_cpp_greedy(llama_judge(smollm2_path), FRANCE, 16, stop=["\n"])
    assert want.finish_reason == "stop" and want.text.startswith(" Paris")
    assert r.choices[0].text == want.text and r.choices[0].finish_reason == "stop"


# --- errors -----------------------------------------------------------------------------------
def test_api_key(secured):
    assert httpx.get(f"{secured.url}/health").json() == {"status": "ok"}
    with pytest.raises(openai.AuthenticationError):
        secured.client("wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        secured.client("wrong").chat.completions.create(
            model=MODEL_ID, messages=QUESTION, max_tokens=2
        )
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
        r = httpx.post(f"{secured.url}/v1/chat/completions", headers=headers, content=b"{bad")
        assert r.status_code == 401, headers  # before the body is even read
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and "API key" in err["message"]
    client = secured.client("secret")
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    r = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=2)
    assert r.usage.completion_tokens <= 2


CHAT = {"messages": QUESTION}
BAD_REQUESTS = [
    ("chat/completions", b'{"messages": [', "not valid JSON", None),
    ("chat/completions", {**CHAT, "temperature": "hot"}, "temperature", "temperature"),
    ("chat/completions", {"max_tokens": 4}, "'messages' is required", "messages"),
    ("chat/completions", {**CHAT, "max_tokens": 0}, "max_tokens must be at least 1", "max_tokens"),
    ("chat/completions", {**CHAT, "max_tokens": 5000}, "context, 1024 tokens", "max_tokens"),
    ("chat/completions", {"messages": []}, "non-empty list", "messages"),
    (
        "chat/completions",
        {"messages": [{"role": "bot", "content": "hi"}]},
        "role 'bot'",
        "messages",
    ),
    ("chat/completions", {**CHAT, "stop": ["a", 5]}, "a string or a list of strings", "stop"),
    ("chat/completions", [1, 2], "must be a JSON object", None),
    ("completions", {"max_tokens": 4}, "'prompt' is required", "prompt"),
    ("completions", {"prompt": "word " * 5000, "max_tokens": 4}, "context holds 1024", "prompt"),
    ("completions", {"prompt": "   ", "max_tokens": 4}, "prompt is empty", "prompt"),
    ("completions", {"prompt": "Hi", "top_p": 0}, "top_p must be in (0, 1]", "top_p"),
]


@pytest.mark.parametrize(("endpoint", "body", "says", "param"), BAD_REQUESTS)
def test_bad_requests_get_400_saying_what_is_wrong(server, endpoint, body, says, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(
        f"{server.url}/v1/{endpoint}",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert says in err["message"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] is None


def test_bad_request_through_the_openai_client(server):
    with pytest.raises(openai.BadRequestError, match="max_tokens must be at least 1"):
        server.client().chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=0)


def test_unknown_url_is_an_openai_style_404(server):
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and "unknown URL" in r.json()["error"]["message"]


# --- concurrency ------------------------------------------------------------------------------
def test_eight_clients_at_once_all_get_answers(server):
    client = server.client()
    before = len(records(server))

    def ask(i: int) -> str:
        r = client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": f"Tell me a fact about the number {i}."}],
            max_tokens=16,
            seed=i,
        )
        return r.choices[0].message.content

    hold = {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with ThreadPoolExecutor(8) as pool, httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{server.url}/v1/completions", json=hold) as r:
            lines = r.iter_lines()  # kept: a dropped line iterator closes the connection
            next(lines)  # this stream holds the model now
            futures = [pool.submit(ask, i) for i in range(8)]
            time.sleep(0.3)
            # The event loop stays free while the model is busy: /health is answered while
            # all eight generations wait their turn.
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
            assert not any(f.done() for f in futures)
        answers = [f.result() for f in futures]  # hanging up let them run
    assert all(a.strip() for a in answers)
    done = [r for r in records(server)[before:] if r.finish_reason != "cancelled"]
    assert len(done) == 8 and all(r.finish_reason in ("stop", "length") for r in done)


def test_requests_take_turns_in_arrival_order(server):
    client = server.client()
    before = len(records(server))
    first = {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=30) as http, ThreadPoolExecutor(4) as pool:
        with http.stream("POST", f"{server.url}/v1/completions", json=first) as r:
            lines = r.iter_lines()  # kept: a dropped line iterator closes the connection
            next(lines)  # it holds the model now
            futures = []
            for n in (1, 2, 3, 4):  # then four requests queue up, in this order
                futures.append(
                    pool.submit(
                        client.completions.create,
                        model=MODEL_ID,
                        prompt=f"Count to {n}:",
                        max_tokens=n,
                        extra_body={"ignore_eos": True},
                    )
                )
                time.sleep(0.2)
        # hanging up lets the queue go
        assert [f.result().usage.completion_tokens for f in futures] == [1, 2, 3, 4]
    done = records(server)[before:]
    assert [g.completion_tokens for g in done[1:]] == [1, 2, 3, 4]
    assert done[0].finish_reason == "cancelled"


def _cancelled(server, before: int):
    return [r for r in records(server)[before:] if r.finish_reason == "cancelled"]


def test_a_client_that_hangs_up_mid_stream_stops_its_generation(server, paris):
    before = len(records(server))
    body = {
        "prompt": "Once upon a time",
        "max_tokens": 1000,
        "temperature": 0,
        "ignore_eos": True,  # or it might end by itself
        "stream": True,
    }
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{server.url}/v1/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break  # one piece of text, then hang up
    # The model is free again at once: the next request runs after a generation stopped early
    # (far short of its 1000 tokens).
    r = server.client().completions.create(
        model=MODEL_ID, prompt=FRANCE, max_tokens=14, temperature=0
    )
    assert r.choices[0].text == paris.text
    (gone,) = _cancelled(server, before)
    assert gone.endpoint == "completions" and gone.stream
    assert 1 <= gone.completion_tokens < 100


def test_a_client_that_hangs_up_while_waiting_stops_its_generation(server):
    before = len(records(server))
    body = {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.5)
    r = server.client().completions.create(
        model=MODEL_ID, prompt=FRANCE, max_tokens=4, temperature=0
    )
    assert r.choices[0].text
    (gone,) = _cancelled(server, before)
    assert not gone.stream and gone.completion_tokens < 200


# --- serving ----------------------------------------------------------------------------------
def test_a_busy_port_is_a_config_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(edge_llm.ConfigError, match="pick another --port"):
            _listen("127.0.0.1", port)


def test_serve_without_its_extra_says_how_to_install_it():
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.argv = ['edge-llm', 'serve']\n"
        "from edge_llm.cli import main; main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: the server needs its extra: pip install 'edge-llm[serve]'"


def test_stopping_the_server_ends_its_streams_at_once(model):
    s = Running(create_app(model, model_id=MODEL_ID), as_serve=True)
    body = {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    events = []
    with httpx.stream("POST", f"{s.url}/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 3:
                    s.server.should_exit = True
    s.thread.join(timeout=10)
    assert not s.thread.is_alive()
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["message"] == "the server is shutting down"
    (stopped,) = [g for g in s.app.state.generations if g.finish_reason == "cancelled"]
    assert stopped.completion_tokens < 200


def test_stopping_the_server_ends_queued_requests_too(model):
    s = Running(create_app(model, model_id=MODEL_ID), as_serve=True)
    hold = {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    queued = {"prompt": "Count to ten:", "max_tokens": 200, "ignore_eos": True}
    with ThreadPoolExecutor(4) as pool, httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{s.url}/v1/completions", json=hold) as r:
            lines = r.iter_lines()
            next(lines)  # this stream holds the model; the next four wait their turn
            futures = [
                pool.submit(
                    httpx.post,
                    f"{s.url}/v1/completions",
                    json={**queued, "stream": i % 2 == 1},
                    timeout=30,
                )
                for i in range(4)
            ]
            for _ in range(600):  # until all four are queued (at most 30 s)
                if len(s.app.state.jobs) == 5:
                    break
                time.sleep(0.05)
            assert len(s.app.state.jobs) == 5
            s.server.should_exit = True
            for _ in lines:  # it ends with the shutdown's error event
                pass
        answers = [f.result() for f in futures]
    s.thread.join(timeout=10)
    assert not s.thread.is_alive()
    for a in answers:  # none of them ran: each says why, in OpenAI's shape
        assert a.status_code == 503, a.text
        assert a.json()["error"]["message"] == "the server is shutting down"
    stopped = [g for g in s.app.state.generations if g.finish_reason == "cancelled"]
    assert len(stopped) == 5 and sum(g.completion_tokens for g in stopped[1:]) == 0
