"""The official `openai` Python client against `cohort sim`: streaming and not,
chat and completions, usage with cached prompt tokens, and error mapping.

Usage: python3 tests/sim/openai_client.py http://127.0.0.1:PORT/v1
Needs `pip install openai` (tested with 1.109.1). Exits non-zero on the first failure.
"""

import sys

import openai
from openai import OpenAI


def main(base_url: str) -> None:
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    checks = 0

    models = client.models.list()
    model = models.data[0].id
    assert model == "llama-3.1-8b", model
    checks += 1

    messages = [{"role": "user", "content": "plan the prefill and decode pools of one rack of nodes so that every request of the job is served fast and well"}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=8)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.completion_tokens == len(r.choices[0].message.content.split()) or r.choices[0].finish_reason == "stop"
    checks += 1

    def stream_once():
        text, usage, finishes, roles = [], None, [], []
        for chunk in client.chat.completions.create(
            model=model, messages=messages, max_tokens=8, stream=True,
            stream_options={"include_usage": True},
        ):
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                assert chunk.choices == []
                usage = chunk.usage
                continue
            delta = chunk.choices[0].delta
            if delta.role:
                roles.append(delta.role)
            if delta.content:
                text.append(delta.content)
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
        return "".join(text), usage, finishes, roles

    t1, u1, f1, roles = stream_once()
    assert roles == ["assistant"], roles
    assert len(f1) == 1, f1
    assert u1 is not None and u1.total_tokens == u1.prompt_tokens + u1.completion_tokens
    t2, u2, _, _ = stream_once()
    assert t1 == t2, "same request, same tokens"
    assert u2.prompt_tokens_details.cached_tokens > 0, u2
    checks += 2

    c = client.completions.create(model=model, prompt=["the rack", "a node"], max_tokens=4,
                                  extra_body={"ignore_eos": True})
    assert [ch.index for ch in c.choices] == [0, 1]
    assert c.usage.completion_tokens == 8, c.usage
    checks += 1

    pieces = list(client.completions.create(model=model, prompt=[1, 2, 3, 4], max_tokens=5,
                                            stream=True, extra_body={"ignore_eos": True}))
    assert len(pieces) == 5, len(pieces)
    assert pieces[-1].choices[0].finish_reason == "length"
    checks += 1

    try:
        client.completions.create(model="no-such-model", prompt="a")
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert "does not exist" in str(e)
    try:
        client.completions.create(model=model, prompt="a", max_tokens=10**9)
        raise AssertionError("context overflow accepted")
    except openai.BadRequestError as e:
        assert "maximum context length" in str(e)
    checks += 2

    print(f"{checks} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
