//! The soak in its short form (the full one is `scripts/soak.sh`): a few thousand requests
//! through the real binary with client aborts and upstream faults, checked by `signet-load`'s soak (run in-process):
//! every completed response signed over exactly the bytes received, no aborted or failed one
//! signed, nothing hung, RSS back near its baseline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn a_short_soak_with_aborts_and_faults_keeps_the_books_exact() {
    let upstream = Upstream::start();
    let admin = free_port();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!("  admin:\n    listen: \"127.0.0.1:{admin}\"\n"),
    );
    let gateway_addr = gateway.addr.to_string();
    let admin_addr = format!("127.0.0.1:{admin}");
    let pid = gateway.pid().to_string();
    let log = gateway.log_path.display().to_string();
    let report = signet_testkit::load::soak_in_process([
        "--target",
        gateway_addr.as_str(),
        "--admin",
        admin_addr.as_str(),
        "--pid",
        pid.as_str(),
        "--log",
        log.as_str(),
        "--requests",
        "3000",
        "--concurrency",
        "32",
        // Higher fault rates than the full soak, so a short run still meets every case often.
        "--abort-rate",
        "0.15",
        "--fault-rate",
        "0.10",
    ])
    .expect("the soak ran");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(report["hung"], 0);
    assert_eq!(report["wrongly_signed"], 0);
    for outcome in [
        "client_abort:client_left",
        "upstream_cut:cut_mid_body",
        "upstream_5xx:upstream_error_passed_through",
        "stream:completed",
        "json:completed",
    ] {
        assert!(
            report["outcomes"][outcome].as_u64().unwrap_or(0) > 20,
            "{outcome} too rare: {report}"
        );
    }
    let completed = report["outcomes"]["stream:completed"].as_u64().unwrap()
        + report["outcomes"]["json:completed"].as_u64().unwrap();
    assert_eq!(
        report["completed_and_verified"].as_u64().unwrap(),
        completed
    );
    // signet-load recovers signatures with signet's own code: a sample is recovered by
    // eth-account too.
    let address = report["signing_address"].as_str().unwrap();
    let sample: Vec<(String, String)> = report["receipt_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["text"].as_str().unwrap().to_owned(),
                r["signature"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(sample.len(), 25, "{report}");
    for recovered in recover_independently_many(&sample) {
        assert_eq!(recovered, address);
    }
}
