"""The server's parity with llama-server and Ollama's OpenAI API, judged by the official openai
client and by independent references: llama-cpp-python's own high-level ``Llama`` (embeddings,
log-probabilities), the ``jsonschema`` library (JSON output, tool-call arguments) and Jinja2
rendering the tool template directly (the prompt a tool round trip sends)."""

from __future__ import annotations

import json
import re
import shutil

import jinja2
import jsonschema
import numpy as np
import openai
import pytest
from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

import edge_llm
from edge_llm.server import create_app
from tests.fixtures.server import Running

MODEL_ID = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TAGS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = edge_llm.load(smollm2_path, n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="module")
def log_lines():
    return []


@pytest.fixture(scope="module")
def server(model, log_lines):
    s = Running(create_app(model, model_id=MODEL_ID, request_log=log_lines.append))
    yield s
    s.stop()


# --- embeddings -------------------------------------------------------------------------------
TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply on Monday."]


def test_embeddings_are_mean_pooled_and_normalized_as_llama_cpp_makes_them(server, smollm2_path):
    client = server.client()
    r = client.embeddings.create(model=MODEL_ID, input=TEXTS)  # the client asks for base64
    floats = client.embeddings.create(model=MODEL_ID, input=TEXTS, encoding_format="float")
    judge = Llama(
        str(smollm2_path),
        embedding=True,
        pooling_type=LLAMA_POOLING_TYPE_MEAN,
        n_ctx=512,
        verbose=False,
    )
    try:
        expected = [np.array(judge.embed(t, normalize=True)) for t in TEXTS]
        n_tokens = sum(len(judge.tokenize(t.encode())) for t in TEXTS)
    finally:
        judge.close()
    assert [d.index for d in r.data] == [0, 1]
    for got, again, want in zip(r.data, floats.data, expected):
        v = np.array(got.embedding)
        assert v.shape == want.shape
        assert np.allclose(v, np.array(again.embedding), atol=1e-6)
        assert abs(np.linalg.norm(v) - 1) < 1e-4
        assert np.allclose(v, want, atol=1e-5), np.abs(v - want).max()
    assert r.usage.prompt_tokens == r.usage.total_tokens == n_tokens


def test_embedding_leaves_the_chat_cache_alone(server, model):
    before = server.client().chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=12, temperature=0
    )
    server.client().embeddings.create(model=MODEL_ID, input="anything at all")
    after = server.client().chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=12, temperature=0
    )
    assert after.choices[0].message.content == before.choices[0].message.content
    assert after.usage.prompt_tokens_details.cached_tokens > 0  # its KV cache was reused


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"input": []}, "input is empty"),
        ({"input": ["a", "  "]}, "input[1] is empty"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "dimensions": 3}, "dimensions must be this model's 576"),
    ],
)
def test_bad_embedding_requests(server, body, says):
    with pytest.raises(openai.BadRequestError, match=re.escape(says)):
        server.client().post("/embeddings", body=body, cast_to=object)


# --- logprobs ---------------------------------------------------------------------------------
def _reference_logprobs(path, prompt_tokens, generated):
    """log-softmax of llama-cpp-python's own logits at each generated position."""
    # flash attention on, as llama.cpp picks it for the server's context on this CPU
    judge = Llama(str(path), n_ctx=512, logits_all=True, flash_attn=True, verbose=False)
    try:
        judge.eval(prompt_tokens + generated[:-1])
        scores = np.array(
            judge.scores[len(prompt_tokens) - 1 : len(prompt_tokens) - 1 + len(generated)]
        )
    finally:
        judge.close()
    m = scores.max(axis=1, keepdims=True)
    return scores - (m + np.log(np.exp(scores - m).sum(axis=1, keepdims=True)))


def test_completion_logprobs_are_the_models_own(server, model, smollm2_path):
    prompt = "The capital of France is"
    r = server.client().completions.create(
        model=MODEL_ID, prompt=prompt, max_tokens=8, temperature=0, logprobs=3
    )
    lp = r.choices[0].logprobs
    direct = model.generate(prompt, max_tokens=8, temperature=0)
    ref = _reference_logprobs(smollm2_path, model.tokenize(prompt), direct.tokens)
    assert "".join(lp.tokens) == r.choices[0].text == direct.text
    assert len(lp.token_logprobs) == 8
    for i, tok in enumerate(direct.tokens):
        assert lp.token_logprobs[i] == pytest.approx(ref[i, tok], abs=0.01)
        top = lp.top_logprobs[i]
        assert len(top) == 3 and max(top.values()) == pytest.approx(lp.token_logprobs[i])
        best = np.sort(ref[i])[::-1][:3]
        got = np.array(sorted(top.values(), reverse=True))
        assert np.allclose(got, best, atol=0.01), (i, got, best)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]


def test_chat_logprobs_streamed_and_whole(server):
    client = server.client()
    whole = client.chat.completions.create(
        model=MODEL_ID,
        messages=QUESTION,
        max_tokens=10,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = whole.choices[0].logprobs.content
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes).decode("utf-8", "replace") == t.token
        assert len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=QUESTION,
            max_tokens=10,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
            stream=True,
        )
    )
    streamed = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [
        (t.token, round(t.logprob, 4)) for t in content
    ]
    plain = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=4)
    assert plain.choices[0].logprobs is None


# --- response_format --------------------------------------------------------------------------
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "enum": ["Paris", "Rome", "Tokyo"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_parses_and_validates(server, seed):
    r = server.client().chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Invent a person who lives in a big city."}],
        max_tokens=120,
        temperature=1.0,
        seed=seed,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON},
        },
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_json_object_output_is_an_object(server):
    r = server.client().chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        max_tokens=200,
        temperature=0,
        response_format={"type": "json_object"},
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # cut by max_tokens: still the start of an object
        assert r.choices[0].message.content.lstrip().startswith("{")


def test_response_format_errors(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="response_format.type must be"):
        client.chat.completions.create(
            model=MODEL_ID, messages=QUESTION, response_format={"type": "yaml"}
        )
    with pytest.raises(openai.BadRequestError, match="cannot be turned into a grammar"):
        client.chat.completions.create(
            model=MODEL_ID,
            messages=QUESTION,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}},
            },
        )


# --- tools ------------------------------------------------------------------------------------
# A Hermes-style tool template (as Qwen 2.5's), on SmolLM2's ChatML tokens.
TOOL_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}You may call one or more functions. Function signatures are within <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
For each function call, return a json object with the function name and arguments within <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.tool_calls %}<|im_start|>assistant
{% for call in message.tool_calls %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def tool_model(smollm2_path, tmp_path_factory):
    """SmolLM2 with a tool-calling chat template written into a copy of its GGUF (by gguf-py's
    own metadata rewriter)."""
    from gguf.scripts import gguf_new_metadata

    out = tmp_path_factory.mktemp("tools") / "smollm2-tools.gguf"
    tpl = out.with_suffix(".jinja")
    tpl.write_text(TOOL_TEMPLATE)
    import sys

    argv = sys.argv
    sys.argv = [
        "gguf_new_metadata",
        str(smollm2_path),
        str(out),
        "--chat-template",
        TOOL_TEMPLATE,
        "--force",
    ]
    try:
        gguf_new_metadata.main()
    finally:
        sys.argv = argv
    m = edge_llm.load(out, n_ctx=1024)
    yield m
    m.close()
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def tool_server(tool_model):
    s = Running(create_app(tool_model, model_id="smollm2-tools"))
    yield s
    s.stop()


def test_a_tool_call_round_trip(tool_server, tool_model):
    client = tool_server.client()
    messages = [{"role": "user", "content": "What is the weather like in Paris?"}]
    r = client.chat.completions.create(
        model="smollm2-tools",
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=80,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    # The client answers the call; the model replies in words.
    result = json.dumps({"temperature": 21, "unit": args["unit"], "sky": "sunny"})
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    r2 = client.chat.completions.create(
        model="smollm2-tools", messages=messages, tools=[WEATHER], max_tokens=40, temperature=0
    )
    assert r2.choices[0].finish_reason in ("stop", "length")
    assert r2.choices[0].message.content and not r2.choices[0].message.tool_calls
    assert not any(tag in r2.choices[0].message.content for tag in TAGS)
    # What the model was shown: the template rendered by Jinja2 itself, with the call's
    # arguments as an object and the tool's answer in <tool_response>.
    shown = [
        {
            **m,
            "tool_calls": [
                {
                    **c,
                    "function": {
                        **c["function"],
                        "arguments": json.loads(c["function"]["arguments"]),
                    },
                }
                for c in m["tool_calls"]
            ],
        }
        if m.get("tool_calls")
        else m
        for m in messages
    ]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
    prompt = env.from_string(TOOL_TEMPLATE).render(
        messages=shown, tools=[WEATHER], add_generation_prompt=True
    )
    assert f"<tool_response>\n{result}\n</tool_response>" in prompt
    assert r2.usage.prompt_tokens == len(tool_model.tokenize(prompt))


def test_a_named_tool_choice_streams_its_call(tool_server):
    chunks = list(
        tool_server.client().chat.completions.create(
            model="smollm2-tools",
            messages=[{"role": "user", "content": "Weather in Tokyo, in fahrenheit?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=80,
            temperature=0,
            stream=True,
        )
    )
    calls = [
        tc
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
    ]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tools_on_a_model_whose_template_has_none_are_refused(server):
    with pytest.raises(openai.BadRequestError, match="does not render tools"):
        server.client().chat.completions.create(
            model=MODEL_ID, messages=QUESTION, tools=[WEATHER], max_tokens=4
        )


# --- model names, base models, the request log -----------------------------------------------
def test_an_unknown_model_is_a_404(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError, match="does not exist") as e:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError, match="is not loaded"):
        client.completions.create(model="gemma3-270m", prompt="Hi", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="Hi")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    # The loaded model answers to its id and its file name.
    assert client.completions.create(
        model="smollm2-135m-instruct", prompt="Hi", max_tokens=1
    ).choices


def test_chat_with_a_base_model_says_it_is_a_completion_model(gemma_path):
    m = edge_llm.load(gemma_path, n_ctx=512)
    s = Running(create_app(m, model_id="gemma3-270m"))
    try:
        client = s.client()
        with pytest.raises(openai.BadRequestError, match="no chat template") as e:
            client.chat.completions.create(model="gemma3-270m", messages=QUESTION, max_tokens=8)
        assert e.value.body["code"] == "model_not_chat"
        assert "\n" not in e.value.body["message"]
        r = client.completions.create(
            model="gemma3-270m", prompt="The capital of France is", max_tokens=8, temperature=0
        )
        assert (
            r.choices[0].text
            == m.generate("The capital of France is", max_tokens=8, temperature=0).text
        )
    finally:
        s.stop()
        m.close()


def test_chat_replies_end_without_template_tags(server):
    r = server.client().chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=200,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop"
    assert not any(tag in r.choices[0].message.content for tag in TAGS)


def test_one_log_line_per_request(server, log_lines):
    client = server.client()
    del log_lines[:]
    r = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, temperature=0)
    list(
        client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=2, stream=True)
    )
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=0)
    client.models.list()
    pattern = re.compile(r"^(GET|POST) (/\S*) (\d{3}) tokens=(\d+|-)\+(\d+) ms=(\d+)$")
    parsed = [pattern.match(line) for line in log_lines]
    assert all(parsed), log_lines
    got = [(p[1], p[2], p[3]) for p in parsed]
    assert got == [
        ("POST", "/v1/completions", "200"),
        ("POST", "/v1/chat/completions", "200"),
        ("POST", "/v1/completions", "400"),
        ("GET", "/v1/models", "200"),
    ]
    assert (int(parsed[0][4]), int(parsed[0][5])) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    assert int(parsed[1][5]) == 2


def test_tool_calls_are_parsed_from_hermes_blocks():
    from edge_llm.server.formats import parse_tool_calls

    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n'
        '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Rome"}),
        ("get_time", {}),
    ]
    assert len({c["id"] for c in calls}) == 2
    assert parse_tool_calls("no calls <tool_call>not json</tool_call>") == (
        "no calls <tool_call>not json</tool_call>",
        [],
    )
