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

/// An ES384 signing key in the role of NVIDIA's (or of a forger's), published as a JWK
/// whose `x5c` holds its certificate, as NVIDIA's set does.
struct Es384Key {
    pair: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl Es384Key {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["nras.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        Es384Key {
            pair,
            cert_der: cert.der().to_vec(),
        }
    }

    fn jwks(&self, kid: &str) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-384", "alg": "ES384", "kid": kid,
            "x5c": [b64.encode(&self.cert_der)]}]})
    }

    fn token(&self, kid: &str, claims: &serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({"alg": "ES384", "kid": kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64.encode(signature.as_ref()))
    }
}

/// What the fake NRAS was asked: (method, path, the nonce of a posted payload).
type NrasLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Option<String>)>>>;

/// A fake NRAS whose tokens are signed by `signer` under `kid` and which publishes
/// `published` (if any) at /.well-known/jwks.json. `claims` makes the overall token's claims
/// from the posted nonce. It only records what it was asked; the test asserts on that.
async fn fake_nras(
    signer: std::sync::Arc<Es384Key>,
    published: Option<serde_json::Value>,
    claims: fn(&str) -> serde_json::Value,
) -> (FakeHttp, NrasLog) {
    let log = NrasLog::default();
    let seen_log = log.clone();
    let server = FakeHttp::start(move |seen: Seen| {
        let (signer, published, log) = (signer.clone(), published.clone(), seen_log.clone());
        async move {
            let payload: Option<serde_json::Value> = serde_json::from_slice(&seen.body).ok();
            let nonce = payload
                .as_ref()
                .and_then(|p| p["nonce"].as_str())
                .map(str::to_owned);
            log.lock().unwrap().push((
                seen.method.clone(),
                seen.path_and_query.clone(),
                nonce.clone(),
            ));
            match (seen.method.as_str(), seen.path_and_query.as_str(), published) {
                ("GET", "/.well-known/jwks.json", Some(set)) => Answer::json(200, &set),
                ("POST", "/v3/attest/gpu", _) => {
                    let nonce = nonce.unwrap_or_default();
                    let gpu = serde_json::json!({"x-nvidia-gpu-attestation-report-nonce-match": true, "eat_nonce": nonce});
                    Answer::json(
                        200,
                        &serde_json::json!([
                            ["JWT", signer.token("nv-key-1", &claims(&nonce))],
                            {"GPU-0": signer.token("nv-key-1", &gpu)}
                        ]),
                    )
                }
                _ => Answer::json(404, &serde_json::json!({"error": "not found"})),
            }
        }
    })
    .await;
    (server, log)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn overall(result: bool, nonce: &str) -> serde_json::Value {
    serde_json::json!({"x-nvidia-overall-att-result": result, "eat_nonce": nonce,
        "iss": "https://nras.attestation.nvidia.com", "iat": now_secs(), "nbf": now_secs(),
        "exp": now_secs() + 3600})
}

/// `signet verify --nras-url`: NRAS's tokens count only if NVIDIA's published keys verify
/// them and the overall token's `eat_nonce` is the nonce sent. A forged token (good claims,
/// the right key id, another key) fails; `--nras-jwks FILE` checks offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nras_tokens_are_checked_against_nvidias_published_keys() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let nvidia = std::sync::Arc::new(Es384Key::new());
    let forger = std::sync::Arc::new(Es384Key::new());
    let published = nvidia.jwks("nv-key-1");
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("jwks.json");
    std::fs::write(&saved, published.to_string()).unwrap();

    struct Case {
        name: &'static str,
        signer: std::sync::Arc<Es384Key>,
        publish: bool,
        offline: bool,
        claims: fn(&str) -> serde_json::Value,
        expected: &'static str,
        detail: &'static str,
    }
    let cases = [
        Case {
            name: "signed by NVIDIA",
            signer: nvidia.clone(),
            publish: true,
            offline: false,
            claims: |n| overall(true, n),
            expected: "pass",
            detail: "signed by NVIDIA's keys",
        },
        Case {
            name: "NVIDIA says no",
            signer: nvidia.clone(),
            publish: true,
            offline: false,
            claims: |n| overall(false, n),
            expected: "fail",
            detail: "result false",
        },
        Case {
            name: "forged",
            signer: forger.clone(),
            publish: true,
            offline: false,
            claims: |n| overall(true, n),
            expected: "fail",
            detail: "does not verify",
        },
        Case {
            name: "another nonce",
            signer: nvidia.clone(),
            publish: true,
            offline: false,
            claims: |_| overall(true, &"00".repeat(32)),
            expected: "fail",
            detail: "not this one",
        },
        Case {
            name: "no nonce",
            signer: nvidia.clone(),
            publish: true,
            offline: false,
            claims: |_| serde_json::json!({"x-nvidia-overall-att-result": true}),
            expected: "fail",
            detail: "no eat_nonce",
        },
        Case {
            name: "offline keys",
            signer: nvidia.clone(),
            publish: false,
            offline: true,
            claims: |n| overall(true, n),
            expected: "pass",
            detail: "signed by NVIDIA's keys",
        },
        Case {
            name: "forged, offline",
            signer: forger.clone(),
            publish: false,
            offline: true,
            claims: |n| overall(true, n),
            expected: "fail",
            detail: "does not verify",
        },
        Case {
            name: "no keys to check with",
            signer: nvidia.clone(),
            publish: false,
            offline: false,
            claims: |n| overall(true, n),
            expected: "fail",
            detail: "jwks.json",
        },
    ];
    for case in cases {
        let (nras, log) = fake_nras(
            case.signer.clone(),
            case.publish.then(|| published.clone()),
            case.claims,
        )
        .await;
        let mut args = vec![
            "--url".to_owned(),
            format!("http://{}", gateway.addr),
            "--allow-dev".to_owned(),
            "--nras-url".to_owned(),
            format!("{}/v3/attest/gpu", nras.url()),
        ];
        if case.offline {
            args.extend(["--nras-jwks".to_owned(), saved.display().to_string()]);
        }
        let (ok, checklist) = verify_json(args).await;
        let check = checklist["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "gpu.nras")
            .unwrap()
            .clone();
        assert_eq!(check["status"], case.expected, "{}: {check}", case.name);
        assert!(
            check["detail"].as_str().unwrap().contains(case.detail),
            "{}: {check}",
            case.name
        );
        assert_eq!(ok, case.expected == "pass", "{}: {checklist:#}", case.name);

        // What NRAS was asked, checked here rather than inside the fake (where a failed
        // assertion would only break the connection).
        let asked = log.lock().unwrap().clone();
        let posts: Vec<_> = asked.iter().filter(|(m, _, _)| m == "POST").collect();
        assert_eq!(posts.len(), 1, "{}: {asked:?}", case.name);
        assert_eq!(posts[0].1, "/v3/attest/gpu");
        let nonce = posts[0].2.as_deref().expect("a payload with a nonce");
        assert_eq!(nonce.len(), 64, "{}", case.name);
        let fetched_keys = asked
            .iter()
            .any(|(m, p, _)| m == "GET" && p == "/.well-known/jwks.json");
        assert_eq!(fetched_keys, !case.offline, "{}: {asked:?}", case.name);
    }
}

/// The payload posted to NRAS is the gateway's `nvidia_payload`, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nras_gets_the_gateways_payload_unchanged() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let nvidia = std::sync::Arc::new(Es384Key::new());
    let bodies: std::sync::Arc<std::sync::Mutex<Vec<Bytes>>> = Default::default();
    let kept = bodies.clone();
    let published = nvidia.jwks("nv-key-1");
    let signer = nvidia.clone();
    let nras = FakeHttp::start(move |seen: Seen| {
        let (kept, published, signer) = (kept.clone(), published.clone(), signer.clone());
        async move {
            if seen.method == "GET" {
                return Answer::json(200, &published);
            }
            kept.lock().unwrap().push(seen.body.clone());
            let payload: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
            let nonce = payload["nonce"].as_str().unwrap_or_default();
            Answer::json(
                200,
                &serde_json::json!([["JWT", signer.token("nv-key-1", &overall(true, nonce))]]),
            )
        }
    })
    .await;
    let (ok, checklist) = verify_json(vec![
        "--url".into(),
        format!("http://{}", gateway.addr),
        "--allow-dev".into(),
        "--nras-url".into(),
        format!("{}/v3/attest/gpu", nras.url()),
    ])
    .await;
    assert!(ok, "{checklist:#}");
    let posted = bodies.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    let payload: serde_json::Value = serde_json::from_slice(&posted[0]).unwrap();
    assert_eq!(payload["arch"], "HOPPER");
    assert!(!payload["evidence_list"].as_array().unwrap().is_empty());
    let nonce = payload["nonce"].as_str().unwrap();
    // The same payload the gateway serves for that nonce.
    let report = request(
        gateway.addr,
        "GET",
        &format!("/v1/attestation/report?nonce={nonce}"),
        &[],
        Vec::new(),
    )
    .await
    .json();
    let served: serde_json::Value =
        serde_json::from_str(report["nvidia_payload"].as_str().unwrap()).unwrap();
    assert_eq!(served["evidence_list"], payload["evidence_list"]);
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

/// An archived ACI receipt and report from a live gateway, written to files: (dir, receipt
/// file, report file).
async fn archived_aci(gateway: &Gateway) -> (tempfile::TempDir, String, String) {
    let reply = gateway
        .post(
            "/v1/chat/completions",
            &[("x-mock-id", "verify-archived")],
            br#"{"model":"m","stream":false}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    let receipt_id = reply.headers["x-receipt-id"].to_str().unwrap().to_owned();
    let receipt = request(
        gateway.addr,
        "GET",
        &format!("/v1/aci/receipts/{receipt_id}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(receipt.status, 200);
    let nonce = "07".repeat(32);
    let report = request(
        gateway.addr,
        "GET",
        &format!("/v1/aci/attestation?nonce={nonce}"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(report.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let receipt_file = dir.path().join("receipt.json");
    let report_file = dir.path().join("report.json");
    std::fs::write(&receipt_file, &receipt.body).unwrap();
    std::fs::write(&report_file, &report.body).unwrap();
    (
        dir,
        receipt_file.display().to_string(),
        report_file.display().to_string(),
    )
}

fn verify_receipt_json(args: &[&str]) -> (bool, serde_json::Value) {
    let mut all = vec!["verify-receipt", "--json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run_signet(&all);
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify-receipt printed no JSON ({e}): {stdout}\n{stderr}"));
    assert_eq!(ok, value["verdict"] == "pass", "{value}");
    (ok, value)
}

fn check_detail(checklist: &serde_json::Value, name: &str) -> String {
    checklist["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .and_then(|c| c["detail"].as_str())
        .unwrap_or_else(|| panic!("no check {name} in {checklist}"))
        .to_owned()
}

/// `--expect-commit`, `--expect-image-digest`, `--expect-repo`: the ACI report's
/// `source_provenance` must name them, live and offline; a different or null field fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_provenance_is_judged_when_asked() {
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    let upstream = Upstream::start();
    let gateway = Gateway::start_with_attestation(
        &upstream.url(),
        "    mode: dev\n    gpu: dev\n",
        &format!(
            "  aci:\n    source_provenance:\n      repo_url: \"https://github.com/example/signet\"\n      repo_commit: \"{COMMIT}\"\n"
        ),
    );
    let (_dir, receipt, report) = archived_aci(&gateway).await;
    let offline = |extra: &[&str]| {
        let mut args = vec![receipt.as_str(), "--report", report.as_str(), "--allow-dev"];
        args.extend_from_slice(extra);
        verify_receipt_json(&args)
    };
    // Not asked: shown, not deciding.
    let (ok, list) = offline(&[]);
    assert!(ok, "{list:#}");
    assert_eq!(check_status(&list, "aci.provenance"), "skip");
    assert!(check_detail(&list, "aci.provenance").contains(COMMIT));
    // Asked and matching (a commit in capitals is the same commit).
    let (ok, list) = offline(&[
        "--expect-commit",
        &COMMIT.to_uppercase(),
        "--expect-repo",
        "https://github.com/example/signet/",
    ]);
    assert!(ok, "{list:#}");
    assert_eq!(check_status(&list, "aci.provenance"), "pass");
    // Another commit, or an image digest the report leaves null: a failed check, named.
    let other = "f".repeat(40);
    let (ok, list) = offline(&["--expect-commit", &other]);
    assert!(!ok);
    assert_eq!(check_status(&list, "aci.provenance"), "fail");
    let detail = check_detail(&list, "aci.provenance");
    assert!(
        detail.contains(COMMIT) && detail.contains(&other),
        "{detail}"
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (ok, list) = offline(&["--expect-image-digest", &digest]);
    assert!(!ok);
    assert!(
        check_detail(&list, "aci.provenance").contains("null"),
        "{list:#}"
    );

    // Live: the same judgement in `signet verify`.
    let url = format!("http://{}", gateway.addr);
    let (ok, list) = verify_json(vec![
        "--url".into(),
        url.clone(),
        "--allow-dev".into(),
        "--expect-commit".into(),
        COMMIT.into(),
    ])
    .await;
    assert!(ok, "{list:#}");
    assert_eq!(check_status(&list, "aci.provenance"), "pass");
    let (ok, list) = verify_json(vec![
        "--url".into(),
        url,
        "--allow-dev".into(),
        "--expect-commit".into(),
        other,
    ])
    .await;
    assert!(!ok);
    assert_eq!(check_status(&list, "aci.provenance"), "fail");
    // A gateway without provenance: null fails when asked.
    let bare = dev_gateway(&upstream);
    let (ok, list) = verify_json(vec![
        "--url".into(),
        format!("http://{}", bare.addr),
        "--allow-dev".into(),
        "--expect-commit".into(),
        COMMIT.into(),
    ])
    .await;
    assert!(!ok);
    assert!(
        check_detail(&list, "aci.provenance").contains("null"),
        "{list:#}"
    );
}

/// `verify-receipt --collateral`: the archived report's quote is checked against Intel's
/// roots offline, as `signet verify --collateral` does. Real quotes with their real
/// collateral (tests/fixtures/tdx/real) chain, as of the instant their CRLs are valid; not
/// after, not with the other quote's collateral; a dev quote never chains (shown, not
/// deciding, under --allow-dev).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_receipt_checks_the_quote_against_intel_collateral_offline() {
    let upstream = Upstream::start();
    let gateway = dev_gateway(&upstream);
    let (dir, receipt, report) = archived_aci(&gateway).await;
    let real = fixtures_dir().join("tdx/real");
    let v4_collateral = real.join("v4_collateral.json").display().to_string();
    let v5_collateral = real.join("v5_collateral.json").display().to_string();

    // The dev report as served: its mock quote never chains to Intel.
    let (ok, list) = verify_receipt_json(&[
        &receipt,
        "--report",
        &report,
        "--allow-dev",
        "--collateral",
        &v4_collateral,
        "--at",
        "2025-06-19T11:16:03Z",
    ]);
    assert!(ok, "the chain of a dev quote does not decide: {list:#}");
    assert_eq!(check_status(&list, "aci.quote_chain"), "fail");
    assert!(check_detail(&list, "aci.quote_chain").contains("does not chain"));
    // Without --collateral: not asked.
    let (_, list) = verify_receipt_json(&[&receipt, "--report", &report, "--allow-dev"]);
    assert_eq!(check_status(&list, "aci.quote_chain"), "skip");

    // The same report carrying a real TDX quote (which binds someone else's report data).
    let mut real_report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let evidence = &mut real_report["attestation"]["evidence"];
    evidence["quote"] = hex::encode(std::fs::read(real.join("v4_quote.bin")).unwrap()).into();
    evidence["attestation_mode"] = "tdx".into();
    let real_file = dir.path().join("real-report.json").display().to_string();
    std::fs::write(&real_file, real_report.to_string()).unwrap();
    let judge = |collateral: &str, at: &str| {
        verify_receipt_json(&[
            &receipt,
            "--report",
            &real_file,
            "--collateral",
            collateral,
            "--at",
            at,
        ])
    };
    let (ok, list) = judge(&v4_collateral, "2025-06-19T11:16:03Z");
    assert_eq!(check_status(&list, "aci.quote_chain"), "pass", "{list:#}");
    assert!(check_detail(&list, "aci.quote_chain").contains("UpToDate"));
    assert!(!ok, "its report_data is not this keyset's statement");
    assert_eq!(check_status(&list, "aci.quote"), "fail");
    // After the CRLs expire, or with another quote's collateral: no chain, and it decides.
    for (collateral, at) in [
        (&v4_collateral, "2030-01-01T00:00:00Z"),
        (&v5_collateral, "2026-02-18T11:58:51Z"),
    ] {
        let (ok, list) = judge(collateral, at);
        assert!(!ok);
        assert_eq!(
            check_status(&list, "aci.quote_chain"),
            "fail",
            "{collateral} at {at}: {list:#}"
        );
    }
}

/// `aci.key_custody`: a report whose keys come from the dstack KMS must show the receipt
/// key vouched for by the KMS-derived key; a report that names another key, or a link made
/// for another role, fails. Random keys are shown, not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_key_custody_is_checked() {
    let upstream = Upstream::start();
    let agent_dir = tempfile::tempdir().unwrap();
    let socket = fake_kms_agent(agent_dir.path()).await;
    let gateway = Gateway::start_with_attestation(
        &upstream.url(),
        &format!(
            "    mode: dev\n    gpu: dev\n    dstack_socket: {}\n",
            socket.display()
        ),
        "  signing:\n    key_source: dstack\n",
    );
    let (ok, list) = verify_json(vec![
        "--url".into(),
        format!("http://{}", gateway.addr),
        "--allow-dev".into(),
    ])
    .await;
    assert!(ok, "{list:#}");
    assert_eq!(check_status(&list, "aci.key_custody"), "pass", "{list:#}");
    assert!(check_detail(&list, "aci.key_custody").contains("signet/v1/aci-receipt"));

    // Offline, and with the custody claim tampered with (it is evidence, outside the
    // statement: only this check can catch it).
    let (dir, receipt, report) = archived_aci(&gateway).await;
    let (ok, list) = verify_receipt_json(&[&receipt, "--report", &report, "--allow-dev"]);
    assert!(ok, "{list:#}");
    assert_eq!(check_status(&list, "aci.key_custody"), "pass");
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let entries = original["attestation"]["evidence"]["key_custody"]["keys"]
        .as_array()
        .unwrap()
        .clone();
    let position = |role: &str| entries.iter().position(|e| e["role"] == role).unwrap();
    let (receipt_at, legacy_at) = (position("aci-receipt"), position("legacy-ed25519"));
    for what in ["another key", "another role's link"] {
        let mut forged = original.clone();
        let keys = &mut forged["attestation"]["evidence"]["key_custody"]["keys"];
        if what == "another key" {
            keys[receipt_at]["public_key"] = "11".repeat(32).into();
        } else {
            keys[receipt_at]["link_signature"] = keys[legacy_at]["link_signature"].clone();
        }
        let file = dir.path().join("forged.json");
        std::fs::write(&file, forged.to_string()).unwrap();
        let (ok, list) =
            verify_receipt_json(&[&receipt, "--report", file.to_str().unwrap(), "--allow-dev"]);
        assert!(!ok, "{what}: {list:#}");
        assert_eq!(check_status(&list, "aci.key_custody"), "fail", "{what}");
    }

    // Random keys: shown, not deciding.
    let random = dev_gateway(&upstream);
    let (ok, list) = verify_json(vec![
        "--url".into(),
        format!("http://{}", random.addr),
        "--allow-dev".into(),
    ])
    .await;
    assert!(ok, "{list:#}");
    assert_eq!(check_status(&list, "aci.key_custody"), "skip");
}
