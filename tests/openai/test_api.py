"""The real `openai` Python package against a running kolmd.

Run by `cargo test -p kolmd --test openai_python` (which starts kolmd with
SmolLM2 artifacts installed and sets KOLMD_BASE_URL), or by hand:

    KOLMD_BASE_URL=http://127.0.0.1:11480/v1 KOLMD_MODEL=smollm2 \
        target/openai-venv/bin/python -m pytest tests/openai
"""

import json
import os

import jsonschema
import openai
import pytest

BASE_URL = os.environ.get("KOLMD_BASE_URL", "http://127.0.0.1:11480/v1")
MODEL = os.environ.get("KOLMD_MODEL", "smollm2")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=os.environ.get("KOLMD_API_KEY", "unused"), max_retries=0)


def test_models_are_listed(client):
    ids = [m.id for m in client.models.list()]
    assert f"{MODEL}:0.1.0" in ids
    assert client.models.retrieve(MODEL).id == f"{MODEL}:0.1.0"


def test_chat_answers(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_deltas_concatenate_to_the_greedy_text(client):
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.object == "text_completion"
    assert r.usage.completion_tokens == 6
    assert r.choices[0].finish_reason == "length"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].text


def test_embeddings(client):
    r = client.embeddings.create(model=MODEL, input=["a cat", "a kitten", "stock market"])
    assert len(r.data) == 3
    vectors = [d.embedding for d in r.data]
    assert all(len(v) == len(vectors[0]) > 0 for v in vectors)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert abs(dot(vectors[0], vectors[0]) - 1.0) < 1e-3
    assert r.usage.prompt_tokens > 0
    floats = client.embeddings.create(model=MODEL, input="a cat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_json_schema_output_parses_and_validates(client):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "country": {"type": "string"},
            "population_millions": {"type": "number"},
        },
        "required": ["city", "country", "population_millions"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        max_tokens=80,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    value = json.loads(r.choices[0].message.content)
    jsonschema.validate(value, schema)


def test_json_object(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'Return the JSON object {"name": "Bob", "age": 30}.'}],
        max_tokens=150,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_stop_sequences_end_generation_and_are_not_emitted(client):
    prompt = "1, 2, 3, 4, 5,"
    free = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0).choices[0].text
    assert " 7" in free, free
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stop=[" 7", "never"])
    assert r.choices[0].finish_reason == "stop"
    assert " 7" not in r.choices[0].text
    assert free.startswith(r.choices[0].text)


def test_max_tokens_limits_the_output(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long poem."}], max_tokens=3, temperature=0
    )
    assert r.usage.completion_tokens == 3
    assert r.choices[0].finish_reason == "length"


def test_seed_reproduces_sampling_at_temperature_0_8(client):
    ask = lambda seed: client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a name for a cat."}],
        max_tokens=20,
        temperature=0.8,
        seed=seed,
    ).choices[0].message.content
    first = ask(1234)
    assert ask(1234) == first
    others = {ask(s) for s in (1, 2, 3, 4)}
    assert len(others | {first}) > 1, "different seeds should sample differently"


def test_errors_have_the_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 800}], max_tokens=4
        )
    assert e.value.body["code"] == "context_length_exceeded"
    # Still serving.
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2).choices
