//! What a client (or a lying upstream) must not be able to bend, against the live binary:
//! other spellings of a signed route never reach the upstream around the signing, and an
//! upstream cannot hand the client a signature of its own making.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Model servers decode `%XX` and normalise paths before routing; each of these reached the
/// completion handler unsigned, unchecked and without a slot before signet refused them.
#[tokio::test]
async fn other_spellings_of_a_signed_route_are_refused_and_never_forwarded() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    for path in [
        "/v1/chat%2Fcompletions",
        "/v1/chat%2fcompletions",
        "/v1/chat/c%6Fmpletions",
        "/%761/chat/completions",
        "/v1/chat%252Fcompletions",
        "//v1/chat/completions",
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/v1/chat/completions/",
        "/v1/completions;v=1",
        "/V1/Chat/Completions",
        "/v1/attestation%2Freport",
    ] {
        // Malformed JSON, so a forwarded request would also show the body went unchecked.
        let reply = gateway.post(path, &[], b"{not json").await;
        reply.assert_envelope(400, "ambiguous_path");
    }
    let stats = upstream.stats().await;
    assert_eq!(stats["requests"], serde_json::json!([]), "{stats}");
    assert_eq!(stats["incomplete"], 0, "{stats}");
    // The exact spelling still works.
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-replay", "seed-response.sse")],
            SEED_REQUEST,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(gateway.signature(SEED_ID).await.json()["text"], SEED_TEXT);
}

/// An upstream's `x-signet-*` headers never reach the client, on any route: only signet
/// speaks for signet.
#[tokio::test]
async fn an_upstream_cannot_supply_signet_headers() {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream.url());
    let address = gateway.signing_address().await;
    let forged = ("x-mock-header", "X-Signet-Signature: 0xforged");
    let models = request(gateway.addr, "GET", "/v1/models", &[forged], Vec::new()).await;
    assert_eq!(models.status, 200);
    assert!(models.headers.get("x-signet-signature").is_none());

    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let streamed = gateway.post("/v1/chat/completions", &[forged], body).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.headers.get("x-signet-signature").is_none());

    // In-band JSON: the one signature header is signet's, and it recovers to its address.
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
    let inband = gateway
        .post(
            "/v1/chat/completions",
            &[
                forged,
                ("x-signet-signature", "in-band"),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    assert_eq!(inband.status, 200);
    let values: Vec<_> = inband
        .headers
        .get_all("x-signet-signature")
        .iter()
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
    let text = inband.headers["x-signet-text"].to_str().unwrap();
    assert_eq!(
        recover(text, values[0].to_str().unwrap()),
        address,
        "the signature is signet's"
    );
}
