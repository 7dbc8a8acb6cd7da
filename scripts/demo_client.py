"""Streams one chat completion through signet with the official OpenAI SDK, then fetches its
signature and checks it with eth-account against the attested address."""

import sys

import httpx2
from eth_account import Account
from eth_account.messages import encode_defunct
from openai import OpenAI

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

print("== streamed answer (OpenAI SDK through signet)")
completion_id = None
for chunk in client.chat.completions.create(
    model="smollm2",
    messages=[{"role": "user", "content": "In one sentence, what is a confidential VM?"}],
    stream=True,
    temperature=0,
    max_tokens=64,
):
    completion_id = completion_id or chunk.id
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()

receipt = httpx2.get(f"{base}/v1/signature/{completion_id}").json()
attested = httpx2.get(f"{base}/v1/attestation/report").json()["signing_address"]
signer = Account.recover_message(encode_defunct(text=receipt["text"]), signature=receipt["signature"])
print(f"== signature for {completion_id}")
print(f"   text      {receipt['text']}")
print(f"   signature {receipt['signature']}")
print(f"   signer    {signer} (eth-account) {'==' if signer == attested else '!='} attested {attested}")
sys.exit(0 if signer == attested else 1)
