//! `signet verify` and `signet verify-signature` as a user runs them: against an honest dev
//! gateway, through men in the middle, and against fake Intel and NVIDIA services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use bytes::Bytes;
use common::*;

fn dev_gateway(upstream: &Upstream) -> Gateway {
    Gateway::start_with_attestation(&upstream.url(), "    mode: dev\n    gpu: dev\n", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_dev_gateway_passes_with_allow_dev_only() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let url = format!("http://{}", gateway.addr);
    let (ok, checklist) =
        verify_json(vec!["--url".into(), url.clone(), "--allow-dev".into()]).await;
    assert!(ok, "{checklist:#}");
    for name in [
        "report.fetch",
        "report.mode",
        "report.nonce",
        "key.address",
        "quote.structure",
        "quote.report_data",
        "gpu.evidence",
        "completion.stream",
        "signature.fetch",
        "signature.text",
        "signature.signer",
        "signature.inband",
        // signet is an ACI service too: its keyset, statement and quote, then the receipt
        // of the same completion.
        "aci.report",
        "aci.keyset_digest",
        "aci.statement",
        "aci.quote",
        "aci.gpu",
        "aci.expiry",
        "aci.receipt.fetch",
        "aci.receipt.signature",
        "aci.receipt.hashes",
    ] {
        assert_eq!(
            check_status(&checklist, name),
            "pass",
            "{name}: {checklist:#}"
        );
    }
    assert_eq!(
        check_status(&checklist, "tls.binding"),
        "skip",
        "cleartext: nothing to bind"
    );
    assert_eq!(check_status(&checklist, "aci.tls"), "skip");
    assert_eq!(
        check_status(&checklist, "aci.quote_chain"),
        "skip",
        "a dev quote has no chain"
    );
    assert!(
        checklist["aci_keyset_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        checklist["signing_address"],
        gateway.signing_address().await.as_str()
    );

    let (ok, checklist) = verify_json(vec!["--url".into(), url.clone()]).await;
    assert!(!ok);
    assert_eq!(check_status(&checklist, "report.mode"), "fail");

    // The readable checklist says the same, line by line.
    let (ok, text, _) =
        tokio::task::spawn_blocking(move || run_signet(&["verify", "--url", &url, "--allow-dev"]))
            .await
            .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("PASS  signature.signer"), "{text}");
    assert!(text.contains("VERDICT: PASS"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_who_alters_one_byte_of_the_completion_is_caught() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let mitm = FakeHttp::man_in_the_middle(
        gateway.addr,
        |path| path.to_owned(),
        |path, body| {
            if path == "/v1/chat/completions" {
                let text = String::from_utf8_lossy(&body).replacen("tok1", "tok7", 1);
                Bytes::from(text)
            } else {
                body
            }
        },
    )
    .await;
    let (ok, checklist) = verify_json(vec!["--url".into(), mitm.url(), "--allow-dev".into()]).await;
    assert!(!ok);
    assert_eq!(
        check_status(&checklist, "signature.text"),
        "fail",
        "{checklist:#}"
    );
    assert_eq!(check_status(&checklist, "quote.report_data"), "pass");
    // The receipt, found by the response id (the relay drops X-Receipt-Id), verifies but
    // does not cover the bytes the client received.
    assert_eq!(check_status(&checklist, "aci.receipt.signature"), "pass");
    assert_eq!(
        check_status(&checklist, "aci.receipt.hashes"),
        "fail",
        "{checklist:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_for_another_nonce_fails() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let mitm = FakeHttp::man_in_the_middle(
        gateway.addr,
        |path| match path.split_once("nonce=") {
            // Replay: ask the gateway for a report with a nonce the verifier did not choose.
            Some((head, _)) => format!("{head}nonce={}", "00".repeat(32)),
            None => path.to_owned(),
        },
        |_, body| body,
    )
    .await;
    let (ok, checklist) = verify_json(vec!["--url".into(), mitm.url(), "--allow-dev".into()]).await;
    assert!(!ok);
    assert_eq!(
        check_status(&checklist, "report.nonce"),
        "fail",
        "{checklist:#}"
    );
    assert_eq!(check_status(&checklist, "quote.report_data"), "fail");
    assert_eq!(check_status(&checklist, "gpu.evidence"), "fail");
    // The ACI report for another nonce: the statement does not rebuild.
    assert_eq!(check_status(&checklist, "aci.keyset_digest"), "pass");
    assert_eq!(
        check_status(&checklist, "aci.statement"),
        "fail",
        "{checklist:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_from_another_key_fails() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let mitm = FakeHttp::man_in_the_middle(
        gateway.addr,
        |path| path.to_owned(),
        |path, body| {
            if !path.starts_with("/v1/signature/") {
                return body;
            }
            let mut receipt: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let other = signet_core::signing::Signer::from_secret_bytes(&[7; 32]).unwrap();
            let forged = other
                .sign_message(receipt["text"].as_str().unwrap().as_bytes())
                .unwrap();
            receipt["signature"] = serde_json::Value::from(forged.to_hex());
            Bytes::from(receipt.to_string())
        },
    )
    .await;
    let (ok, checklist) = verify_json(vec!["--url".into(), mitm.url(), "--allow-dev".into()]).await;
    assert!(!ok);
    assert_eq!(
        check_status(&checklist, "signature.signer"),
        "fail",
        "{checklist:#}"
    );
    assert_eq!(check_status(&checklist, "signature.text"), "pass");
}

/// A gateway that serves a real, recorded TDX quote (so its report_data binds nothing of
/// ours), to exercise verification against Intel's roots.
async fn gateway_with_the_recorded_quote() -> FakeHttp {
    let quote = std::fs::read(fixtures_dir().join("tdx/quote.bin")).unwrap();
    gateway_serving(base64::engine::general_purpose::STANDARD.encode(&quote)).await
}

/// A gateway whose reports carry `intel_quote` exactly as given.
async fn gateway_serving(intel_quote: String) -> FakeHttp {
    let intel_quote = std::sync::Arc::new(intel_quote);
    FakeHttp::start(move |seen: Seen| {
        let intel_quote = intel_quote.clone();
        async move {
            let nonce = seen
                .path_and_query
                .split_once("nonce=")
                .map(|(_, n)| n.split('&').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let signer = signet_core::signing::Signer::from_secret_bytes(&[9; 32]).unwrap();
            if seen.path_and_query.starts_with("/v1/attestation/report") {
                Answer::json(
                    200,
                    &serde_json::json!({
                        "signing_address": signer.address().to_checksum(),
                        "signing_algo": "ecdsa",
                        "signing_public_key": hex::encode(signer.public_key()),
                        "request_nonce": nonce,
                        "intel_quote": intel_quote.as_str(),
                        "nvidia_payload": serde_json::json!({"nonce": nonce, "evidence_list": [], "arch": "HOPPER"}).to_string(),
                        "mode": "tdx",
                        "gpu_evidence": "none",
                    }),
                )
            } else {
                Answer::json(404, &serde_json::json!({"error": {"message": "no"}}))
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_v4_and_v5_quotes_verify_whether_served_as_base64_hex_or_0x_hex() {
    // tests/fixtures/tdx/real/README.md: which collateral, and the instant it is valid at.
    let real = fixtures_dir().join("tdx/real");
    let cases = [
        (
            "v4_quote.bin",
            "v4_collateral.json",
            "2025-06-19T11:16:03Z",
            "v4",
        ),
        (
            "v5_quote.bin",
            "v5_collateral.json",
            "2026-02-18T11:58:51Z",
            "v5",
        ),
        (
            "v5_no_tcb_level.bin",
            "v5_collateral.json",
            "2026-02-18T11:58:51Z",
            "v5",
        ),
    ];
    for (quote, collateral, at, version) in cases {
        let bytes = std::fs::read(real.join(quote)).unwrap();
        for (encoding, text) in [
            (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(&bytes),
            ),
            ("hex", hex::encode(&bytes)),
            ("0x-hex", format!("0x{}", hex::encode(&bytes))),
        ] {
            let fake = gateway_serving(text).await;
            let (ok, checklist) = verify_json(vec![
                "--url".into(),
                fake.url(),
                "--collateral".into(),
                real.join(collateral).display().to_string(),
                "--at".into(),
                at.into(),
                "--allow-no-gpu".into(),
            ])
            .await;
            assert!(!ok, "these quotes bind someone else's key and nonce");
            let detail = |name: &str| {
                checklist["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == name)
                    .unwrap()["detail"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let case = format!("{quote} as {encoding}: {checklist:#}");
            assert_eq!(
                check_status(&checklist, "quote.structure"),
                "pass",
                "{case}"
            );
            let structure = detail("quote.structure");
            assert!(
                structure.starts_with(&format!("TDX quote {version}, "))
                    && structure.contains(&format!("({encoding};")),
                "{case}"
            );
            if quote == "v5_no_tcb_level.bin" {
                assert_eq!(
                    check_status(&checklist, "quote.intel_chain"),
                    "fail",
                    "{case}"
                );
                assert!(
                    detail("quote.intel_chain").contains("No matching TCB level"),
                    "{case}"
                );
            } else {
                assert_eq!(
                    check_status(&checklist, "quote.intel_chain"),
                    "pass",
                    "{case}"
                );
                assert!(detail("quote.intel_chain").contains("UpToDate"), "{case}");
            }
            assert_eq!(
                check_status(&checklist, "quote.report_data"),
                "fail",
                "{case}"
            );
        }
    }
}

fn collateral_window_start() -> u64 {
    let collateral: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("tdx/collateral.json")).unwrap())
            .unwrap();
    let tcb: serde_json::Value =
        serde_json::from_str(collateral["tcb_info"].as_str().unwrap()).unwrap();
    signet_verify::parse_rfc3339(tcb["issueDate"].as_str().unwrap()).unwrap() + 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_quote_verifies_offline_against_intels_roots() {
    let fake = gateway_with_the_recorded_quote().await;
    let collateral = fixtures_dir()
        .join("tdx/collateral.json")
        .display()
        .to_string();
    let at = collateral_window_start().to_string();
    let (ok, checklist) = verify_json(vec![
        "--url".into(),
        fake.url(),
        "--collateral".into(),
        collateral.clone(),
        "--at".into(),
        at,
        "--allow-no-gpu".into(),
    ])
    .await;
    assert!(!ok, "the recorded quote binds someone else's key and nonce");
    let chain = checklist["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "quote.intel_chain")
        .unwrap();
    assert_eq!(chain["status"], "pass", "{checklist:#}");
    assert!(chain["detail"].as_str().unwrap().contains("UpToDate"));
    assert!(chain["required"].as_bool().unwrap());
    assert_eq!(check_status(&checklist, "quote.report_data"), "fail");

    // Outside the collateral's validity the chain does not verify.
    let (_, checklist) = verify_json(vec![
        "--url".into(),
        fake.url(),
        "--collateral".into(),
        collateral,
        "--allow-no-gpu".into(),
    ])
    .await;
    assert_eq!(check_status(&checklist, "quote.intel_chain"), "fail");
}

/// A PCCS serving the recorded collateral piece by piece, as Intel's API v4 does.
async fn fake_pccs() -> FakeHttp {
    FakeHttp::start(|seen: Seen| async move {
        let collateral: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures_dir().join("tdx/collateral.json")).unwrap(),
        )
        .unwrap();
        let field = |name: &str| collateral[name].as_str().unwrap().to_owned();
        let bytes = |name: &str| -> Vec<u8> {
            match &collateral[name] {
                serde_json::Value::String(s) => {
                    hex::decode(s).unwrap_or_else(|_| s.as_bytes().to_vec())
                }
                serde_json::Value::Array(a) => {
                    a.iter().map(|b| b.as_u64().unwrap() as u8).collect()
                }
                other => panic!("unexpected {name}: {other}"),
            }
        };
        let chain = |name: &str| urlencoding::encode(&field(name)).into_owned();
        let path = seen.path_and_query.as_str();
        if path.starts_with("/sgx/certification/v4/pckcrl") {
            Answer {
                status: 200,
                headers: vec![(
                    "SGX-PCK-CRL-Issuer-Chain".into(),
                    chain("pck_crl_issuer_chain"),
                )],
                body: Bytes::from(bytes("pck_crl")),
            }
        } else if path.starts_with("/tdx/certification/v4/tcb") {
            let body = format!(
                "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
                field("tcb_info"),
                hex::encode(bytes("tcb_info_signature"))
            );
            Answer {
                status: 200,
                headers: vec![(
                    "TCB-Info-Issuer-Chain".into(),
                    chain("tcb_info_issuer_chain"),
                )],
                body: Bytes::from(body),
            }
        } else if path.starts_with("/tdx/certification/v4/qe/identity") {
            let body = format!(
                "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
                field("qe_identity"),
                hex::encode(bytes("qe_identity_signature"))
            );
            Answer {
                status: 200,
                headers: vec![(
                    "SGX-Enclave-Identity-Issuer-Chain".into(),
                    chain("qe_identity_issuer_chain"),
                )],
                body: Bytes::from(body),
            }
        } else if path.starts_with("/sgx/certification/v4/rootcacrl") {
            Answer {
                status: 200,
                headers: vec![],
                body: Bytes::from(hex::encode(bytes("root_ca_crl"))),
            }
        } else {
            Answer {
                status: 404,
                headers: vec![],
                body: Bytes::new(),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collateral_is_fetched_from_a_pccs() {
    let fake = gateway_with_the_recorded_quote().await;
    let pccs = fake_pccs().await;
    let (_, checklist) = verify_json(vec![
        "--url".into(),
        fake.url(),
        "--pccs-url".into(),
        pccs.url(),
        "--at".into(),
        collateral_window_start().to_string(),
        "--allow-no-gpu".into(),
    ])
    .await;
    assert_eq!(
        check_status(&checklist, "quote.intel_chain"),
        "pass",
        "{checklist:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_quote_never_chains_to_intel() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let (ok, checklist) = verify_json(vec![
        "--url".into(),
        format!("http://{}", gateway.addr),
        "--allow-dev".into(),
        "--collateral".into(),
        fixtures_dir()
            .join("tdx/collateral.json")
            .display()
            .to_string(),
        "--at".into(),
        collateral_window_start().to_string(),
    ])
    .await;
    let chain = checklist["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "quote.intel_chain")
        .unwrap();
    assert_eq!(chain["status"], "fail", "{checklist:#}");
    assert_eq!(chain["required"], false, "informational in dev mode");
    assert!(
        ok,
        "dev is accepted by --allow-dev even though its chain fails"
    );
}

fn nras_token(overall: bool, nonce: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::json!({"x-nvidia-overall-att-result": overall, "eat_nonce": nonce});
    format!(
        "{}.{}.c2ln",
        b64.encode(br#"{"alg":"ES384"}"#),
        b64.encode(claims.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nras_judges_the_gpu_evidence() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    for (overall, expected) in [(true, "pass"), (false, "fail")] {
        let nras = FakeHttp::start(move |seen: Seen| async move {
            assert_eq!(seen.method, "POST");
            assert_eq!(seen.path_and_query, "/v3/attest/gpu");
            let payload: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
            let nonce = payload["nonce"].as_str().unwrap().to_owned();
            assert_eq!(payload["arch"], "HOPPER");
            assert!(!payload["evidence_list"].as_array().unwrap().is_empty());
            Answer::json(200, &serde_json::json!([["JWT", nras_token(overall, &nonce)], {"GPU-0": nras_token(overall, &nonce)}]))
        })
        .await;
        let (_, checklist) = verify_json(vec![
            "--url".into(),
            format!("http://{}", gateway.addr),
            "--allow-dev".into(),
            "--nras-url".into(),
            format!("{}/v3/attest/gpu", nras.url()),
        ])
        .await;
        assert_eq!(
            check_status(&checklist, "gpu.nras"),
            expected,
            "{checklist:#}"
        );
    }
}

#[test]
fn verify_signature_recovers_and_checks_the_signer() {
    let signer = signet_core::signing::Signer::from_secret_bytes(&[5; 32]).unwrap();
    let text = format!("{}:{}", "ab".repeat(32), "cd".repeat(32));
    let sig = signer.sign_message(text.as_bytes()).unwrap().to_hex();
    let address = signer.address().to_checksum();

    let (ok, stdout, _) = run_signet(&["verify-signature", "--text", &text, "--signature", &sig]);
    assert!(ok);
    assert_eq!(stdout.trim(), address);
    let bare = sig.trim_start_matches("0x");
    let (ok, stdout, _) = run_signet(&[
        "verify-signature",
        "--text",
        &text,
        "--signature",
        bare,
        "--address",
        &address,
    ]);
    assert!(ok, "without 0x too");
    assert_eq!(stdout.trim(), address);
    let lower = address.to_lowercase();
    assert!(
        run_signet(&[
            "verify-signature",
            "--text",
            &text,
            "--signature",
            &sig,
            "--address",
            &lower
        ])
        .0
    );

    let other = signet_core::signing::Signer::from_secret_bytes(&[6; 32])
        .unwrap()
        .address()
        .to_checksum();
    let (ok, _, stderr) = run_signet(&[
        "verify-signature",
        "--text",
        &text,
        "--signature",
        &sig,
        "--address",
        &other,
    ]);
    assert!(!ok);
    assert!(stderr.contains("not by"), "{stderr}");
    let (ok, _, _) = run_signet(&[
        "verify-signature",
        "--text",
        &format!("{text}x"),
        "--signature",
        &sig,
        "--address",
        &address,
    ]);
    assert!(!ok, "another text recovers another address");
    let (ok, _, stderr) =
        run_signet(&["verify-signature", "--text", &text, "--signature", "0x1234"]);
    assert!(!ok);
    assert!(stderr.contains("65 bytes"), "{stderr}");
}
