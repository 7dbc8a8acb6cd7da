//! The soak in its short form (the full one is `scripts/soak.sh`): a few thousand requests
//! through the real binary with client aborts and upstream faults, checked by `signet-load`:
//! every completed response signed over exactly the bytes received, no aborted or failed one
//! signed, nothing hung, RSS back near its baseline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;

#[test]
fn a_short_soak_with_aborts_and_faults_keeps_the_books_exact() {
    let upstream = Upstream::start();
    let admin = free_port();
    let gateway = Gateway::start_with(
        &upstream.url(),
        &format!("  admin:\n    listen: \"127.0.0.1:{admin}\"\n"),
    );
    let output = Command::new(env!("CARGO_BIN_EXE_signet-load"))
        .args(["soak", "--target"])
        .arg(gateway.addr.to_string())
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--pid")
        .arg(gateway.pid().to_string())
        .arg("--log")
        .arg(&gateway.log_path)
        .args(["--requests", "3000", "--concurrency", "32"])
        // Higher fault rates than the full soak, so a short run still meets every case often.
        .args(["--abort-rate", "0.15", "--fault-rate", "0.10"])
        .output()
        .expect("run signet-load");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "soak failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
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
}
