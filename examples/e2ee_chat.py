#!/usr/bin/env python3
"""An end-to-end encrypted chat with signet (ACI E2EE v2), written only with Python's
`cryptography` and the OpenAI SDK: nothing of signet's code runs on the client.

    python3 examples/e2ee_chat.py http://127.0.0.1:8080 "Name three colours." [--suite secp256k1]

1. Fetch `GET /v1/aci/attestation?nonce=<fresh>` and check that the keyset is the one the
   report binds (its JCS digest, the statement over digest and nonce, the quote's
   report_data). This example does not verify the quote's signature chain itself: run
   `signet verify` (docs/verify.md) or a DCAP verifier on the same report for that.
2. Pick the keyset's E2EE key of the chosen suite (`e2ee_public_keys`, by `algo`).
3. Encrypt each message's content to it (a fresh ephemeral key and nonce per field, the
   field path in the JCS AAD), send with the five `X-E2EE-*` headers, stream the answer and
   decrypt each `delta.content` with the client's own key.
"""

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SUITES = {
    "x25519": ("x25519-aes-256-gcm-hkdf-sha256", b"aci.e2ee.v2.x25519"),
    "secp256k1": ("secp256k1-aes-256-gcm-hkdf-sha256", b"aci.e2ee.v2.secp256k1"),
}


def jcs(value) -> str:
    """RFC 8785 for the shapes ACI and E2EE v2 use (objects, arrays, strings, integers, null)."""
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v) for k, v in members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, float):
        raise ValueError("no fractions here")
    return json.dumps(value, ensure_ascii=False)


def attested_keyset(base_url: str) -> dict:
    """The workload keyset a fresh report binds (ACI 9.1 steps 1-2, the quote's report_data)."""
    nonce = os.urandom(32).hex()
    with urllib.request.urlopen(f"{base_url}/v1/aci/attestation?nonce={nonce}", timeout=60) as answer:
        report = json.load(answer)
    if "2" not in report["service_capabilities"].get("supported_e2ee_versions", []):
        raise SystemExit("this service does not terminate E2EE v2")
    keyset = report["attestation"]["workload_keyset"]
    digest = "sha256:" + hashlib.sha256(jcs(keyset).encode()).hexdigest()
    if digest != report["workload_keyset_digest"]:
        raise SystemExit("the keyset is not the one the report names")
    statement = jcs({"keyset_digest": digest, "nonce": nonce, "purpose": "aci.report_data.v1"})
    report_data = hashlib.sha256(statement.encode()).digest()
    if report_data.hex() != report["attestation"]["report_data"]:
        raise SystemExit("report_data does not bind this keyset and nonce")
    quote = bytes.fromhex(report["attestation"]["evidence"]["quote"])
    if quote[568:632] != report_data + bytes(32):
        raise SystemExit("the quote does not carry this report_data")
    if keyset["not_after"] <= time.time():
        raise SystemExit("the keyset has expired")
    return keyset


class E2eeSession:
    """One request's E2EE v2 state: the client's key pair, the service key, nonce and time."""

    def __init__(self, keyset: dict, suite: str = "x25519"):
        self.algo, self.info = SUITES[suite]
        entry = next((k for k in keyset["e2ee_public_keys"] if k["algo"] == self.algo), None)
        if entry is None:
            raise SystemExit(f"the attested keyset has no {self.algo} key")
        self.service_hex = entry["public_key"]
        self.suite = suite
        self.private = x25519.X25519PrivateKey.generate() if suite == "x25519" else ec.generate_private_key(ec.SECP256K1())
        self.nonce = os.urandom(32).hex()
        self.ts = int(time.time())

    def _public_bytes(self, key) -> bytes:
        if self.suite == "x25519":
            return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

    def _load_public(self, data: bytes):
        if self.suite == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(data)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)

    def _shared(self, private, public) -> bytes:
        # X25519's raw output, or the x-coordinate of the secp256k1 point (what ECDH returns).
        secret = private.exchange(public) if self.suite == "x25519" else private.exchange(ec.ECDH(), public)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self.info).derive(secret)

    def headers(self) -> dict:
        return {
            "X-E2EE-Version": "2",
            "X-Client-Pub-Key": self._public_bytes(self.private.public_key()).hex(),
            "X-Model-Pub-Key": self.service_hex,
            "X-E2EE-Nonce": self.nonce,
            "X-E2EE-Timestamp": str(self.ts),
        }

    def encrypt(self, model: str, field: str, plaintext: str) -> str:
        aad = jcs({"purpose": "aci.e2ee.request.v2", "algo": self.algo, "model": model,
                   "field": field, "nonce": self.nonce, "ts": self.ts}).encode()
        ephemeral = x25519.X25519PrivateKey.generate() if self.suite == "x25519" else ec.generate_private_key(ec.SECP256K1())
        key = self._shared(ephemeral, self._load_public(bytes.fromhex(self.service_hex.removeprefix("0x"))))
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), aad)
        return (self._public_bytes(ephemeral.public_key()) + nonce + sealed).hex()

    def decrypt(self, model: str, response_id: str, field: str, ciphertext: str) -> str:
        aad = jcs({"purpose": "aci.e2ee.response.v2", "algo": self.algo, "model": model, "id": response_id,
                   "field": field, "nonce": self.nonce, "ts": self.ts}).encode()
        data = bytes.fromhex(ciphertext)
        size = 32 if self.suite == "x25519" else 65
        key = self._shared(self.private, self._load_public(data[:size]))
        return AESGCM(key).decrypt(data[size:size + 12], data[size + 12:], aad).decode()

    def encrypt_messages(self, model: str, messages: list) -> list:
        """Each message's string content, encrypted in place of itself."""
        return [dict(m, content=self.encrypt(model, f"messages.{i}.content", m["content"]))
                for i, m in enumerate(messages)]


def main() -> None:
    from openai import OpenAI

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("prompt")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--suite", choices=sorted(SUITES), default="x25519")
    args = parser.parse_args()

    session = E2eeSession(attested_keyset(args.base_url), args.suite)
    client = OpenAI(base_url=f"{args.base_url}/v1", api_key=os.environ.get("OPENAI_API_KEY", "unused"))
    messages = session.encrypt_messages(args.model, [{"role": "user", "content": args.prompt}])
    stream = client.chat.completions.create(model=args.model, messages=messages, stream=True,
                                            extra_headers=session.headers())
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content is not None:
                field = f"choices.{choice.index}.delta.content"
                sys.stdout.write(session.decrypt(args.model, chunk.id, field, choice.delta.content))
                sys.stdout.flush()
    print()


if __name__ == "__main__":
    main()
