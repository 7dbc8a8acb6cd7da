"""Every prompt API signed, driven by the real SDKs: OpenAI's Responses API and Anthropic's
Messages API against llama-server (which serves both), embeddings against signet's mock
upstream; every signature recovered with eth-account over the exact bytes on the wire."""

import httpx2
from anthropic import Anthropic

from test_llama import Recorder, check_receipt, receipt, sdk

PROMPT = [{"role": "user", "content": "Name three colours."}]


def anthropic(base_url, transport):
    return Anthropic(
        base_url=base_url,
        api_key="unused",
        max_retries=0,
        http_client=httpx2.Client(transport=transport, timeout=120),
    )


def test_responses_api_is_signed_stream_and_not(signet, attested_address):
    recorder = Recorder()
    client = sdk(signet, recorder)
    response = client.responses.create(model="smollm2", input="Name three colours.", max_output_tokens=16)
    assert response.output_text
    exchange = recorder.exchanges[-1]
    assert exchange["path"] == "/v1/responses"
    check_receipt(receipt(signet, response.id), exchange["request"], exchange["response"], attested_address)

    response_id, text = None, ""
    for event in client.responses.create(
        model="smollm2", input="Name three colours.", max_output_tokens=16, stream=True
    ):
        if event.type == "response.created":
            response_id = event.response.id
        elif event.type == "response.output_text.delta":
            text += event.delta
    assert response_id and text
    exchange = recorder.exchanges[-1]
    assert b"event: response.created" in bytes(exchange["response"])
    check_receipt(receipt(signet, response_id), exchange["request"], exchange["response"], attested_address)


def test_anthropic_messages_api_is_signed_create_and_stream(signet, attested_address):
    recorder = Recorder()
    client = anthropic(signet, recorder)
    message = client.messages.create(model="smollm2", max_tokens=16, messages=PROMPT)
    assert message.content[0].text
    exchange = recorder.exchanges[-1]
    assert exchange["path"] == "/v1/messages"
    check_receipt(receipt(signet, message.id), exchange["request"], exchange["response"], attested_address)

    with client.messages.stream(model="smollm2", max_tokens=16, messages=PROMPT) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    exchange = recorder.exchanges[-1]
    assert b"event: message_start" in bytes(exchange["response"])
    check_receipt(receipt(signet, final.id), exchange["request"], exchange["response"], attested_address)


def test_embeddings_are_signed_under_the_id_signet_returns(mock_signet):
    recorder = Recorder()
    raw = sdk(mock_signet, recorder).embeddings.with_raw_response.create(model="m", input="hello")
    embedding = raw.parse()
    assert embedding.data[0].embedding
    completion_id = raw.headers["x-signet-completion-id"]
    assert completion_id.startswith("signet-")
    exchange = recorder.exchanges[-1]
    address = httpx2.get(f"{mock_signet}/health", timeout=10).json()["signing_address"]
    check_receipt(receipt(mock_signet, completion_id), exchange["request"], exchange["response"], address)
