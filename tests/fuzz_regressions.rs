//! Replays every input kept under `fuzz/regressions/<target>/` (inputs that once broke a
//! fuzz target, plus hand-written edge cases) through the same checks the fuzz targets run,
//! so a fixed bug stays fixed without a fuzzing toolchain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        eprintln!("{target}: {}", path.display());
        check(&input);
        count += 1;
    }
    count
}

#[test]
fn sse_id_regressions() {
    assert!(replay("sse_id", checks::sse_id) > 0);
}

#[test]
fn request_body_regressions() {
    replay("request_body", checks::request_body);
}

#[test]
fn config_regressions() {
    replay("config", checks::config);
}

#[test]
fn wire_ids_regressions() {
    replay("wire_ids", checks::wire_ids);
}
