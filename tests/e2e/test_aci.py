"""ACI receipts from a live signet in front of a real model server, checked by code that is not
signet's: a hand-written RFC 8785 canonicalization for the shapes ACI uses (objects, arrays,
strings, integers, null) and Ed25519 from Python's `cryptography`."""

import hashlib
import json
import os
import time

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from test_llama import PROMPT, Recorder, sdk, stream_text


def jcs(value) -> str:
    """RFC 8785 for ACI's documents: members sorted by UTF-16 code units, no whitespace,
    strings as JSON.stringify writes them, integers as themselves."""
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v) for k, v in members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, float):
        raise ValueError("ACI documents carry no fractions")
    return json.dumps(value, ensure_ascii=False)


def sha256_prefixed(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def established_keyset(signet):
    """The keyset of a report for a fresh nonce, with its binding recomputed (ACI 9.1 step 2)."""
    nonce = os.urandom(32).hex()
    report = httpx2.get(f"{signet}/v1/aci/attestation", params={"nonce": nonce}, timeout=60).json()
    assert report["api_version"] == "aci/1"
    keyset = report["attestation"]["workload_keyset"]
    digest = sha256_prefixed(jcs(keyset).encode())
    assert digest == report["workload_keyset_digest"]
    statement = jcs({"keyset_digest": digest, "nonce": nonce, "purpose": "aci.report_data.v1"})
    assert statement.startswith('{"keyset_digest":"sha256:')
    report_data = hashlib.sha256(statement.encode()).hexdigest()
    assert report_data == report["attestation"]["report_data"]
    # A dev quote is a v4 TDX quote: report_data at bytes 568..632, the digest then zeros.
    quote = bytes.fromhex(report["attestation"]["evidence"]["quote"])
    assert quote[568:632] == bytes.fromhex(report_data) + bytes(32)
    return keyset, digest


# The SDK's API key: the receipt is bound to the credential that made the request (ACI 7.6).
CREDENTIAL = {"Authorization": "Bearer unused"}


def fetch_receipt(signet, lookup_id):
    """The receipt, once the exchange has sealed (a stream's client may read `[DONE]` a moment
    before signet sees the upstream's end of body)."""
    deadline = time.monotonic() + 5
    while True:
        answer = httpx2.get(f"{signet}/v1/aci/receipts/{lookup_id}", headers=CREDENTIAL, timeout=10)
        if answer.status_code != 404 or time.monotonic() > deadline:
            assert answer.status_code == 200, answer.text
            return answer.json()
        time.sleep(0.05)


def check_receipt(receipt, keyset, digest, request_bytes, response_bytes):
    assert receipt["api_version"] == "aci/1"
    assert receipt["workload_keyset_digest"] == digest
    (key,) = [k for k in keyset["receipt_signing_keys"] if k["key_id"] == receipt["key_id"]]
    assert key["algo"] == "ed25519"
    unsigned = {name: value for name, value in receipt.items() if name != "signature"}
    public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["public_key"]))
    public_key.verify(bytes.fromhex(receipt["signature"]), jcs(unsigned).encode())  # raises if not
    events = {event["type"]: event for event in receipt["event_log"]}
    assert receipt["event_log"][0]["type"] == "request.received"
    assert events["request.received"]["body_hash"] == sha256_prefixed(request_bytes)
    assert events["request.forwarded"]["body_hash"] == sha256_prefixed(request_bytes)
    assert events["response.returned"]["body_hash"] == sha256_prefixed(bytes(response_bytes))


def test_a_streamed_and_a_plain_completion_have_receipts_an_independent_verifier_accepts(signet):
    keyset, digest = established_keyset(signet)
    recorder = Recorder()
    client = sdk(signet, recorder)
    completion_id, text = stream_text(client)
    assert text
    plain = client.chat.completions.create(model="smollm2", messages=PROMPT, temperature=0, max_tokens=24)
    for exchange, chat_id in zip(recorder.exchanges, [completion_id, plain.id]):
        headers = exchange["headers"]
        assert headers["x-aci-version"] == "aci/1"
        assert headers["x-aci-keyset-digest"] == digest
        receipt_id = headers["x-receipt-id"]
        receipt = fetch_receipt(signet, receipt_id)
        assert receipt["receipt_id"] == receipt_id
        assert receipt["chat_id"] == chat_id
        assert receipt["model"] == "smollm2"
        check_receipt(receipt, keyset, digest, exchange["request"], exchange["response"])
        # The response id finds the same receipt; another credential finds nothing.
        assert fetch_receipt(signet, chat_id) == receipt
        other = httpx2.get(
            f"{signet}/v1/aci/receipts/{receipt_id}", headers={"Authorization": "Bearer other"}, timeout=10
        )
        assert (other.status_code, other.json()["error"]["type"]) == (404, "not_found")
        anonymous = httpx2.get(f"{signet}/v1/aci/receipts/{receipt_id}", timeout=10)
        assert (anonymous.status_code, anonymous.json()["error"]["type"]) == (401, "unauthorized")

    # One byte off and the receipt does not cover it.
    tampered = bytearray(recorder.exchanges[0]["response"])
    tampered[10] ^= 1
    receipt = fetch_receipt(signet, completion_id)
    try:
        check_receipt(receipt, keyset, digest, recorder.exchanges[0]["request"], tampered)
    except AssertionError:
        pass
    else:
        raise AssertionError("a receipt must not cover bytes the client did not receive")


def test_the_hand_written_jcs_reproduces_the_published_vector():
    # shared/refs/aci/test-vectors.md §1: the keyset's JCS form and digest.
    keyset = {
        "subject": "dstack-app://example-app",
        "not_after": 1800000000,
        "tls_public_keys": [{"spki_sha256": "c0" * 32, "domain": "api.example.com"}],
        "receipt_signing_keys": [
            {"key_id": "receipt-1", "algo": "ed25519",
             "public_key": "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"}
        ],
        "e2ee_public_keys": [
            {"key_id": "e2ee-1", "algo": "x25519-aes-256-gcm-hkdf-sha256",
             "public_key": "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22"}
        ],
    }
    assert sha256_prefixed(jcs(keyset).encode()) == (
        "sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371"
    )
