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


# --- NEAR's format, with a client written here from its description (no signet code) -------

import os  # noqa: E402
import struct  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

P = 2**255 - 19


def ed25519_public_to_x25519(public: bytes) -> bytes:
    """RFC 7748's birational map: u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, P - 2, P) % P).to_bytes(32, "little")


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """The XChaCha20 subkey (draft-irtf-cfrg-xchacha §2.2), written out."""
    def rotl(v, c):
        return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))

    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key), *struct.unpack("<4I", nonce16)]

    def quarter(a, b, c, d):
        state[a] = (state[a] + state[b]) & 0xFFFFFFFF; state[d] = rotl(state[d] ^ state[a], 16)  # noqa: E702
        state[c] = (state[c] + state[d]) & 0xFFFFFFFF; state[b] = rotl(state[b] ^ state[c], 12)  # noqa: E702
        state[a] = (state[a] + state[b]) & 0xFFFFFFFF; state[d] = rotl(state[d] ^ state[a], 8)  # noqa: E702
        state[c] = (state[c] + state[d]) & 0xFFFFFFFF; state[b] = rotl(state[b] ^ state[c], 7)  # noqa: E702

    for _ in range(10):
        quarter(0, 4, 8, 12); quarter(1, 5, 9, 13); quarter(2, 6, 10, 14); quarter(3, 7, 11, 15)  # noqa: E702
        quarter(0, 5, 10, 15); quarter(1, 6, 11, 12); quarter(2, 7, 8, 13); quarter(3, 4, 9, 14)  # noqa: E702
    return struct.pack("<8I", *state[0:4], *state[12:16])


def xchacha(key: bytes, nonce24: bytes) -> tuple:
    return ChaCha20Poly1305(hchacha20(key, nonce24[:16])), bytes(4) + nonce24[16:]


def near_key(suite: str, shared: bytes) -> bytes:
    info = b"ecdsa_encryption" if suite == "ecdsa" else b"ed25519_encryption"
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


class NearClient:
    def __init__(self, suite: str, service_hex: str):
        self.suite = suite
        if suite == "ecdsa":
            self.private = ec.generate_private_key(ec.SECP256K1())
            self.public_hex = self.private.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()
            raw = bytes.fromhex(service_hex)
            self.service = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), b"\x04" + raw if len(raw) == 64 else raw)
        else:
            signing = ed25519.Ed25519PrivateKey.generate()
            seed = signing.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
            scalar = bytearray(hashlib.sha512(seed).digest()[:32])
            scalar[0] &= 248; scalar[31] &= 127; scalar[31] |= 64  # noqa: E702
            self.private = x25519.X25519PrivateKey.from_private_bytes(bytes(scalar))
            self.public_hex = signing.public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw).hex()
            self.service = x25519.X25519PublicKey.from_public_bytes(ed25519_public_to_x25519(bytes.fromhex(service_hex)))

    def headers(self) -> dict:
        headers = {"X-Signing-Algo": self.suite, "X-Client-Pub-Key": self.public_hex}
        if self.suite == "ed25519":
            headers["X-Encryption-Version"] = "2"
        return headers

    def encrypt(self, text: str) -> str:
        if self.suite == "ecdsa":
            ephemeral = ec.generate_private_key(ec.SECP256K1())
            key = near_key("ecdsa", ephemeral.exchange(ec.ECDH(), self.service))
            nonce = os.urandom(12)
            head = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                       serialization.PublicFormat.UncompressedPoint)
            return (head + nonce + AESGCM(key).encrypt(nonce, text.encode(), None)).hex()
        ephemeral = x25519.X25519PrivateKey.generate()
        key = near_key("ed25519", ephemeral.exchange(self.service))
        nonce = os.urandom(24)
        cipher, inner = xchacha(key, nonce)
        head = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return (head + nonce + cipher.encrypt(inner, text.encode(), None)).hex()

    def decrypt(self, field: str) -> str:
        data = bytes.fromhex(field)
        if self.suite == "ecdsa":
            ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data[:65])
            key = near_key("ecdsa", self.private.exchange(ec.ECDH(), ephemeral))
            return AESGCM(key).decrypt(data[65:77], data[77:], None).decode()
        key = near_key("ed25519", self.private.exchange(x25519.X25519PublicKey.from_public_bytes(data[:32])))
        cipher, inner = xchacha(key, data[32:56])
        return cipher.decrypt(inner, data[56:], None).decode()


def test_hchacha20_matches_the_xchacha_draft_vector():
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert hchacha20(key, nonce).hex() == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"


@pytest.mark.parametrize("suite", ["ecdsa", "ed25519"])
def test_nears_format_round_trips_through_the_real_model(signet, llama, attested_address, suite):
    report = httpx2.get(f"{signet}/v1/attestation/report", params={"signing_algo": suite}, timeout=60).json()
    client = NearClient(suite, report["signing_public_key"])
    messages = [dict(m, content=client.encrypt(m["content"])) for m in PROMPT]
    recorder = Recorder()
    completion_id, text = None, ""
    for chunk in sdk(signet, recorder).chat.completions.create(
        messages=messages, stream=True, extra_headers=client.headers(), **OPTIONS
    ):
        completion_id = completion_id or chunk.id
        for choice in chunk.choices:
            if choice.delta.content is not None:
                text += client.decrypt(choice.delta.content)
    assert text == direct_text(llama, stream=True)
    exchange = recorder.exchanges[-1]
    assert exchange["headers"]["x-e2ee-algo"] == suite
    check_receipt(receipt(signet, completion_id), exchange["request"], exchange["response"], attested_address)
