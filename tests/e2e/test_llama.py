"""signet in front of a real model server (llama.cpp's llama-server, and vLLM on CPU when
SIGNET_E2E_VLLM=1; both serve SmolLM2-135M), driven by the official OpenAI SDKs, with every
signature checked by implementations that are not signet's (eth-account here, ethers in
sdk.mjs)."""

import hashlib
import json
import subprocess
from pathlib import Path

import httpx2
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from openai import OpenAI

from conftest import REPO, SIGNET

PROMPT = [{"role": "user", "content": "Name three colours."}]


class Recorder(httpx2.HTTPTransport):
    """An HTTP transport that keeps the exact request and response bytes of every exchange."""

    def __init__(self):
        super().__init__()
        self.exchanges = []

    def handle_request(self, request):
        record = {"path": request.url.path, "request": request.read(), "response": bytearray()}
        self.exchanges.append(record)
        response = super().handle_request(request)
        record["headers"] = response.headers
        inner = response.stream

        chunks = iter(inner)

        class Tee(httpx2.SyncByteStream):
            def __iter__(self):
                for chunk in chunks:
                    record["response"] += chunk
                    yield chunk

            def close(self):
                # The OpenAI SDK stops reading at `data: [DONE]` and closes the response; the
                # in-band signature comes after it, so a verifying client reads to the end of
                # the body, and so does this recorder (otherwise what it saw is a race).
                for chunk in chunks:
                    record["response"] += chunk
                inner.close()

        response.stream = Tee()
        return response


def sdk(base_url, transport=None):
    http_client = httpx2.Client(transport=transport, timeout=120) if transport else None
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, http_client=http_client)


def receipt(signet, completion_id):
    answer = httpx2.get(f"{signet}/v1/signature/{completion_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def check_receipt(rec, request_bytes, response_bytes, attested_address):
    expected = f"{hashlib.sha256(request_bytes).hexdigest()}:{hashlib.sha256(bytes(response_bytes)).hexdigest()}"
    assert rec["text"] == expected
    assert rec["signing_address"] == attested_address
    signer = Account.recover_message(encode_defunct(text=rec["text"]), signature=rec["signature"])
    assert signer == attested_address


def stream_text(client, **extra):
    options = {"model": "smollm2", "messages": PROMPT, "stream": True, "temperature": 0, "max_tokens": 24}
    options.update(extra)
    completion_id, text = None, ""
    for chunk in client.chat.completions.create(**options):
        completion_id = completion_id or chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return completion_id, text


def test_streamed_completion_is_signed_over_the_exact_bytes(signet, attested_address):
    recorder = Recorder()
    completion_id, text = stream_text(sdk(signet, recorder))
    assert text
    exchange = recorder.exchanges[-1]
    assert exchange["path"] == "/v1/chat/completions"
    assert bytes(exchange["response"]).endswith(b"data: [DONE]\n\n")
    check_receipt(receipt(signet, completion_id), exchange["request"], exchange["response"], attested_address)


def test_plain_json_completion_is_signed_over_the_exact_bytes(signet, attested_address):
    recorder = Recorder()
    completion = sdk(signet, recorder).chat.completions.create(
        model="smollm2", messages=PROMPT, temperature=0, max_tokens=24
    )
    assert completion.choices[0].message.content
    exchange = recorder.exchanges[-1]
    check_receipt(receipt(signet, completion.id), exchange["request"], exchange["response"], attested_address)


def test_legacy_completions_are_signed(signet, attested_address):
    recorder = Recorder()
    completion = sdk(signet, recorder).completions.create(
        model="smollm2", prompt="The sky is", temperature=0, max_tokens=8
    )
    exchange = recorder.exchanges[-1]
    check_receipt(receipt(signet, completion.id), exchange["request"], exchange["response"], attested_address)


def test_signet_returns_the_same_text_as_the_model_server(signet, llama):
    _, through_signet = stream_text(sdk(signet))
    _, direct = stream_text(sdk(llama))
    assert through_signet == direct
    plain = [
        sdk(url).chat.completions.create(model="smollm2", messages=PROMPT, temperature=0, max_tokens=24)
        .choices[0].message.content
        for url in (signet, llama)
    ]
    assert plain[0] == plain[1]


def test_two_hundred_sequential_streams_without_an_error(signet, attested_address):
    """llama-server closes its connection after every stream while advertising keep-alive."""
    client = sdk(signet)
    ids = []
    for i in range(200):
        completion_id, _ = stream_text(client, max_tokens=4, seed=i)
        ids.append(completion_id)
    assert len(set(ids)) == 200
    with httpx2.Client(timeout=10) as http:
        for completion_id in ids:
            rec = http.get(f"{signet}/v1/signature/{completion_id}").json()
            signer = Account.recover_message(encode_defunct(text=rec["text"]), signature=rec["signature"])
            assert signer == attested_address


def test_the_node_sdk_and_ethers_agree(signet, attested_address):
    here = Path(__file__).parent
    run = subprocess.run(["node", here / "sdk.mjs", signet], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["attested"] == attested_address
    for kind in ("stream", "plain"):
        assert result[kind]["text"], result
        assert result[kind]["recovered"] == attested_address, result
        assert result[kind]["signing_address"] == attested_address, result
    assert result["inband"]["streamText"] == result["stream"]["text"], "in-band changes nothing for the SDK"
    assert result["inband"]["plainText"] == result["plain"]["text"]
    assert result["inband"]["recovered"] == attested_address


def test_signet_verify_passes_against_the_real_model(signet):
    run = subprocess.run(
        [SIGNET, "verify", "--url", signet, "--allow-dev", "--json"], capture_output=True, text=True, timeout=300
    )
    checklist = json.loads(run.stdout)
    assert run.returncode == 0, json.dumps(checklist, indent=1)
    assert checklist["verdict"] == "pass"


def test_other_routes_pass_through(signet, llama):
    through = httpx2.get(f"{signet}/v1/models", timeout=10)
    direct = httpx2.get(f"{llama}/v1/models", timeout=10)
    assert through.status_code == direct.status_code == 200
    assert through.json()["data"][0]["id"] == direct.json()["data"][0]["id"] == "smollm2"


def test_json_errors_on_streaming_requests_pass_through_unsigned(signet, llama, upstream_kind):
    """vLLM answers errors as JSON even when `stream: true` (an unknown model is a 404)."""
    if upstream_kind != "vllm":
        pytest.skip("llama-server serves whatever model name it is given")
    body = {"model": "no-such-model", "messages": PROMPT, "stream": True}
    through = httpx2.post(f"{signet}/v1/chat/completions", json=body, timeout=30)
    direct = httpx2.post(f"{llama}/v1/chat/completions", json=body, timeout=30)
    assert through.status_code == direct.status_code == 404
    assert through.headers["content-type"].startswith("application/json")
    assert through.json()["error"]["message"] == direct.json()["error"]["message"]


def split_inband(raw: bytes):
    """Covered bytes and the signature comment signet appends to an in-band stream."""
    marker = b": signet-signature "
    start = raw.rindex(marker)
    assert raw.endswith(b"\n\n") and (start == 0 or raw[start - 1 : start] == b"\n")
    return raw[:start], json.loads(raw[start + len(marker) : -2])


def test_in_band_signatures_leave_the_python_sdk_untouched(signet, attested_address):
    recorder = Recorder()
    client = OpenAI(
        base_url=f"{signet}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(transport=recorder, timeout=120),
        default_headers={"x-signet-signature": "in-band"},
    )
    completion_id, text = stream_text(client)
    assert text, "the SDK parsed the stream as usual"
    exchange = recorder.exchanges[-1]
    covered, inband = split_inband(bytes(exchange["response"]))
    assert inband["id"] == completion_id
    check_receipt(inband, exchange["request"], covered, attested_address)
    assert inband["signature"] == receipt(signet, completion_id)["signature"]

    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=PROMPT, temperature=0, max_tokens=24
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    exchange = recorder.exchanges[-1]
    rec = {
        "text": raw.headers["x-signet-text"],
        "signature": raw.headers["x-signet-signature"],
        "signing_address": raw.headers["x-signet-signing-address"],
    }
    assert raw.headers["x-signet-completion-id"] == completion.id
    check_receipt(rec, exchange["request"], exchange["response"], attested_address)
