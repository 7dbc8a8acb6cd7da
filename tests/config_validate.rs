//! `signet serve -t -c FILE` on good and bad files: exit status and a message that names
//! the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signet.yaml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(common::signet_bin())
        .args(["serve", "-t", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

const GOOD: &str = "version: 1\nthreads: 2\nsignet:\n  listen: \"127.0.0.1:8000\"\n  upstream: \"http://127.0.0.1:8001\"\n  attestation:\n    mode: dev\n    gpu: none\n";

#[test]
fn every_shipped_config_is_valid() {
    let conf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(conf_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (ok, text) = check(&std::fs::read_to_string(&path).unwrap());
            assert!(ok, "{}: {text}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn a_good_config_passes() {
    let (ok, text) = check(GOOD);
    assert!(ok, "{text}");
    assert!(text.contains("is valid"), "{text}");
}

#[test]
fn bad_configs_fail_naming_the_key() {
    let cases = [
        (
            GOOD.replace("gpu: none", "gpu: none\n    colour: blue"),
            "signet.attestation.colour",
        ),
        (
            GOOD.replace("mode: dev", "mode: sgx"),
            "signet.attestation.mode",
        ),
        (GOOD.replace("    mode: dev\n", ""), "signet.attestation"),
        (GOOD.replace("threads: 2", "thread: 2"), "thread"),
        (GOOD.replace("threads: 2", "threads: lots"), "threads"),
        (
            format!("{GOOD}  signatures:\n    ttl: 0s\n"),
            "signet.signatures.ttl",
        ),
        (
            format!("{GOOD}  signatures:\n    max_entries: -1\n"),
            "signet.signatures.max_entries",
        ),
        (
            GOOD.replace("http://127.0.0.1:8001", "127.0.0.1:8001"),
            "signet.upstream",
        ),
        (
            GOOD.replace("\"127.0.0.1:8000\"", "\"somewhere\""),
            "signet.listen",
        ),
        (
            format!("{GOOD}  signatures:\n    backend: redis\n"),
            "signet.signatures.redis",
        ),
        (
            format!("{GOOD}  signatures:\n    backend: redis\n    redis:\n      url: http://x\n"),
            "signet.signatures.redis.url",
        ),
        (
            format!("{GOOD}  signatures:\n    redis:\n      url: redis://127.0.0.1:6379\n"),
            "signet.signatures.redis",
        ),
        (
            format!("{GOOD}  admin:\n    listen: \"127.0.0.1:8000\"\n"),
            "signet.admin.listen",
        ),
        ("version: 1\n".to_owned(), "signet"),
        ("- just\n- a list\n".to_owned(), "(file)"),
    ];
    for (config, key) in cases {
        let (ok, text) = check(&config);
        assert!(!ok, "accepted a bad config for {key}:\n{config}");
        assert!(
            text.contains(&format!("{key}:")),
            "message must name {key}: {text}"
        );
    }
}

#[test]
fn a_missing_file_is_reported() {
    let output = Command::new(common::signet_bin())
        .args(["serve", "-t", "-c", "/nonexistent/signet.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/signet.yaml"));
}

#[test]
fn serve_without_a_config_file_is_an_error() {
    let output = Command::new(common::signet_bin())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("-c FILE"));
}
