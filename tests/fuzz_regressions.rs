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

// Each replay must have replayed something: an empty or misnamed directory is a failure,
// not a pass.

#[test]
fn sse_id_regressions() {
    assert!(replay("sse_id", checks::sse_id) > 0);
}

#[test]
fn request_body_regressions() {
    assert!(replay("request_body", checks::request_body) > 0);
}

#[test]
fn config_regressions() {
    assert!(replay("config", checks::config) > 0);
}

#[test]
fn wire_ids_regressions() {
    assert!(replay("wire_ids", checks::wire_ids) > 0);
}

/// The config check holds the parser to its word: real refusals name a place in the input
/// (nested, indexed and dotted keys), and a key that is not in the input is caught.
#[test]
fn the_config_check_tells_a_place_in_the_input_from_a_stranger() {
    for input in ["dotted-unknown-key", "no-upstream", "bad-second-token"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/config")
            .join(input);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(signet::config::parse(&text).is_err(), "{input} is refused");
        checks::config(text.as_bytes());
    }
    let document: serde_yaml::Value =
        serde_yaml::from_str("signet:\n  limits: {a.b: 1}\n  upstreams: [x, y]\n").unwrap();
    for place in ["signet", "signet.limits.a.b", "signet.upstreams[1]"] {
        assert!(checks::names_a_place(&document, place, false), "{place}");
    }
    for stranger in [
        "signet.limit",
        "signet.limits.a",
        "signet.upstreams[2]",
        "tls.cert",
    ] {
        assert!(
            !checks::names_a_place(&document, stranger, false),
            "{stranger}"
        );
    }
    assert!(
        checks::names_a_place(&document, "signet.listen", true),
        "missing, allowed"
    );
    assert!(
        !checks::names_a_place(&document, "signet.tls.cert", true),
        "no parent"
    );
}
