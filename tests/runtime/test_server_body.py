"""Every client hears why `serve` refused its body (issue 32).

A body over the limit gets its 413 even through Python's http.client, which writes the whole
body before it reads the answer (the server used to close while it was still sending, so it saw
a connection reset); a body that is not sent as JSON gets a 415, as OpenAI's API answers. The
judges: http.client itself (the standard library), and the official openai client, whose
requests must still pass.
"""

from __future__ import annotations

import http.client
import json

import pytest

from edge_llm.server import create_app
from tests.fixtures.server import Running

MODEL_ID = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server(smollm2):
    s = Running(create_app(smollm2, model_id=MODEL_ID, body_idle_s=2.0))
    yield s
    s.stop()


def send(server, body, headers: dict[str, str], path="/v1/completions", **kw):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers, **kw)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        conn.close()


def openai_error(status_type_body, status: int, says: str) -> dict:
    status_got, ctype, body = status_type_body
    assert status_got == status, body[:300]
    assert ctype.startswith("application/json")
    err = json.loads(body)["error"]
    assert says in err["message"] and "\n" not in err["message"], err
    assert err["type"] == "invalid_request_error"
    return err


def test_a_20_mb_body_gets_its_413_through_http_client(server):
    body = json.dumps({"prompt": "word " * 4_000_000, "max_tokens": 1}).encode()
    assert len(body) > 20_000_000
    got = send(server, body, {"Content-Type": "application/json"})
    openai_error(got, 413, "larger than the server's limit")


def test_a_chunked_body_over_the_limit_gets_its_413_through_http_client(server):
    pieces = (b"x" * 65536 for _ in range(20_000_000 // 65536))
    got = send(
        server,
        pieces,
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    openai_error(got, 413, "--max-body")


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {}, {"Content-Type": "application/x-www-form-urlencoded"}],
)
def test_a_body_not_sent_as_json_gets_a_415(server, headers):
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    err = openai_error(send(server, body, headers), 415, "Content-Type: application/json")
    assert headers.get("Content-Type", "none") in err["message"]


def test_json_content_types_pass_and_the_openai_client_is_served(server):
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        status, _, text = send(server, body, {"Content-Type": ctype})
        assert status == 200, (ctype, text[:300])
    r = server.client().completions.create(model=MODEL_ID, prompt="Hi", max_tokens=1)
    assert r.usage.completion_tokens <= 1
