"""ACI E2EE v2 through a real model server with the real OpenAI SDK, both directions checked by
code that is not signet's: the client (examples/e2ee_chat.py) encrypts and decrypts with Python's
`cryptography` only; the answer must be the model's own (temperature 0, compared with
llama-server asked directly); the EIP-191 signature covers the encrypted wire bytes."""

import hashlib
import json
import sys

import httpx2
import pytest

from conftest import REPO
from test_llama import PROMPT, Recorder, check_receipt, receipt, sdk

sys.path.insert(0, str(REPO / "examples"))
from e2ee_chat import E2eeSession, attested_keyset  # noqa: E402

OPTIONS = {"model": "smollm2", "temperature": 0, "max_tokens": 24}


def direct_text(llama, stream: bool) -> str:
    """What the model answers without signet or encryption."""
    client = sdk(llama)
    if not stream:
        return client.chat.completions.create(messages=PROMPT, **OPTIONS).choices[0].message.content
    return "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(messages=PROMPT, stream=True, **OPTIONS) if c.choices)


@pytest.mark.parametrize("suite", ["x25519", "secp256k1"])
def test_an_encrypted_stream_round_trips_through_the_real_model(signet, llama, attested_address, suite):
    session = E2eeSession(attested_keyset(signet), suite)
    recorder = Recorder()
    messages = session.encrypt_messages("smollm2", PROMPT)
    assert messages[0]["content"] != PROMPT[0]["content"]
    completion_id, text, sealed = None, "", 0
    for chunk in sdk(signet, recorder).chat.completions.create(
        messages=messages, stream=True, extra_headers=session.headers(), **OPTIONS
    ):
        completion_id = completion_id or chunk.id
        for choice in chunk.choices:
            if choice.delta.content is not None:
                field = f"choices.{choice.index}.delta.content"
                text += session.decrypt("smollm2", chunk.id, field, choice.delta.content)
                sealed += 1
    assert sealed > 0 and text
    assert text == direct_text(llama, stream=True)
    exchange = recorder.exchanges[-1]
    assert exchange["headers"]["x-e2ee-applied"] == "true"
    assert exchange["headers"]["x-e2ee-algo"] == session.algo
    # Nothing of the answer travels in the clear.
    longest = max(text.split(), key=len)
    assert len(longest) >= 4 and longest.encode() not in bytes(exchange["response"])
    check_receipt(receipt(signet, completion_id), exchange["request"], exchange["response"], attested_address)


@pytest.mark.parametrize("suite", ["x25519", "secp256k1"])
def test_an_encrypted_json_answer_round_trips_through_the_real_model(signet, llama, attested_address, suite):
    session = E2eeSession(attested_keyset(signet), suite)
    recorder = Recorder()
    completion = sdk(signet, recorder).chat.completions.create(
        messages=session.encrypt_messages("smollm2", PROMPT), extra_headers=session.headers(), **OPTIONS
    )
    text = session.decrypt("smollm2", completion.id, "choices.0.message.content",
                           completion.choices[0].message.content)
    assert text == direct_text(llama, stream=False)
    exchange = recorder.exchanges[-1]
    check_receipt(receipt(signet, completion.id), exchange["request"], exchange["response"], attested_address)


def test_a_replayed_encrypted_request_is_refused(signet):
    session = E2eeSession(attested_keyset(signet), "x25519")
    body = json.dumps({"messages": session.encrypt_messages("smollm2", PROMPT), **OPTIONS}).encode()
    headers = {"content-type": "application/json", **session.headers()}
    first = httpx2.post(f"{signet}/v1/chat/completions", content=body, headers=headers, timeout=120)
    assert first.status_code == 200, first.text
    again = httpx2.post(f"{signet}/v1/chat/completions", content=body, headers=headers, timeout=120)
    assert again.status_code == 400
    assert again.json()["error"]["type"] == "e2ee_replay_detected"
    assert hashlib.sha256(body).hexdigest()
