//! The checks behind each fuzz target, shared with `tests/fuzz_regressions.rs`, which replays
//! every input kept under `fuzz/regressions/<target>/` through the same check.

#![allow(dead_code)]

use signet_core::ids::{CompletionId, Nonce, client_request_id, validate_id_bytes};
use signet_core::query::{check_signing_algo, query_param};
use signet_core::route::Route;
use signet_core::sse::{IdSearch, SseIdScanner, id_of_json_object};
use signet_core::transcript::RequestCapture;

/// The SSE id scanner and the JSON id reader on hostile bytes: no panic, and the answer for
/// the stream cut into pieces is the answer for the whole stream.
pub fn sse_id(data: &[u8]) {
    // The first two bytes choose the scan limit and the piece size; the rest is the stream.
    let (limit, piece, stream) = match data {
        [a, b, rest @ ..] => (usize::from(*a) * 16, usize::from(*b % 31) + 1, rest),
        _ => return,
    };
    let whole = scan(std::iter::once(stream), limit);
    let cut = scan(stream.chunks(piece), limit);
    assert_eq!(whole, cut, "the answer depends on how the stream is cut");
    if let IdSearch::Found(id) = &whole {
        assert!(signet_core::ids::validate_id_bytes(id.as_str().as_bytes()).is_ok());
    }
    let _ = id_of_json_object(stream);
}

fn scan<'a>(pieces: impl Iterator<Item = &'a [u8]>, limit: usize) -> IdSearch {
    let mut scanner = SseIdScanner::new(limit);
    for piece in pieces {
        scanner.feed(piece);
    }
    scanner.finish()
}

/// The request body check on hostile bytes: no panic, the same verdict however the body is
/// cut, and a body that is accepted is handed on byte for byte.
pub fn request_body(data: &[u8]) {
    let (limit, piece, body) = match data {
        [a, b, rest @ ..] => (usize::from(*a) * 8, usize::from(*b % 17) + 1, rest),
        _ => return,
    };
    let whole = capture(std::iter::once(body), limit);
    let cut = capture(body.chunks(piece), limit);
    assert_eq!(whole, cut, "the verdict depends on how the body is cut");
    if whole.0.starts_with("ok ") {
        assert_eq!(whole.0, format!("ok {}", body.len()));
    }
}

fn capture<'a>(pieces: impl Iterator<Item = &'a [u8]>, limit: usize) -> (String, Option<bool>) {
    let mut capture = RequestCapture::new(limit);
    for piece in pieces {
        if let Err(e) = capture.push(piece) {
            return (format!("push: {e:?}"), None);
        }
    }
    match capture.finish() {
        Ok(body) => {
            assert!(capture.sha256().is_some());
            (format!("ok {}", body.len()), capture.stream())
        }
        Err(e) => (format!("finish: {e:?}"), None),
    }
}

/// The configuration loader on hostile YAML: never a panic, and every refusal names where
/// the problem is. A configuration that loads has a `signet:` mapping; a refusal's message
/// shows its key, and that key is a place in the input: each part of its dotted path but the
/// last is a key of the input there, and the last is too unless the message says it is
/// missing. Only a file that is not a YAML mapping is refused as a whole.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let document = serde_yaml::from_str::<serde_yaml::Value>(text);
    match signet::config::parse(text) {
        Ok(_) => {
            let document = document.expect("a configuration that loads is YAML");
            assert!(
                document
                    .get("signet")
                    .is_some_and(serde_yaml::Value::is_mapping),
                "loaded without a signet: mapping"
            );
        }
        Err(e) => {
            assert!(
                e.to_string().contains(&e.key),
                "the message {e} does not show its key {}",
                e.key
            );
            match (e.key.as_str(), document) {
                ("(file)", document) => assert!(
                    !matches!(document, Ok(serde_yaml::Value::Mapping(_))),
                    "a YAML mapping refused as a whole: {e}"
                ),
                ("(pingora)" | "(top level)", _) => {}
                (_, Err(_)) => panic!("{e}: a key named in a file that is not YAML"),
                (key, Ok(document)) => {
                    let missing = e.message.contains("missing");
                    assert!(
                        names_a_place(&document, key, missing),
                        "{key} is not a place in the input: {e}"
                    );
                }
            }
        }
    }
}

/// Whether the dotted key `path` (`signet.upstreams[0]`, or `a.b` for a key that contains a
/// dot) leads through `value`: at each mapping some key of it starts the rest of the path,
/// at each sequence an index `[i]` does. The last part may be absent if `missing_allowed`.
pub fn names_a_place(value: &serde_yaml::Value, path: &str, missing_allowed: bool) -> bool {
    if path.is_empty() {
        return true;
    }
    if path == "(non-text key)" {
        return value
            .as_mapping()
            .is_some_and(|m| m.keys().any(|k| !k.is_string()));
    }
    let last_part = !path.chars().skip(1).any(|c| c == '.' || c == '[');
    if let Some(rest) = path.strip_prefix('[') {
        let Some((index, after)) = rest.split_once(']') else {
            return false;
        };
        let child = index
            .parse::<usize>()
            .ok()
            .and_then(|i| value.as_sequence().and_then(|s| s.get(i)));
        return match child {
            Some(child) => names_a_place(
                child,
                after.strip_prefix('.').unwrap_or(after),
                missing_allowed,
            ),
            None => missing_allowed && after.is_empty(),
        };
    }
    let Some(mapping) = value.as_mapping() else {
        return false;
    };
    let found = mapping.iter().any(|(key, child)| {
        let Some(key) = key.as_str() else {
            return false;
        };
        match path.strip_prefix(key) {
            Some("") => true,
            Some(rest) if rest.starts_with('[') => names_a_place(child, rest, missing_allowed),
            Some(rest) => rest
                .strip_prefix('.')
                .is_some_and(|rest| names_a_place(child, rest, missing_allowed)),
            None => false,
        }
    });
    found || (missing_allowed && last_part)
}

/// Everything that parses identifiers off the wire: completion ids (the signature route's
/// path), attestation nonces and query strings, request ids, route classification.
pub fn wire_ids(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = CompletionId::parse(&text) {
        assert_eq!(id.as_str(), text);
        assert!(id.as_str().len() <= signet_core::ids::MAX_COMPLETION_ID_LEN);
        assert!(!id.as_str().contains(['/', '%', ' ', '\n', '\r']));
    }
    assert_eq!(
        validate_id_bytes(data).is_ok(),
        CompletionId::parse(&text).is_ok() && text.as_bytes() == data
    );
    if let Ok(nonce) = Nonce::parse(&text) {
        assert_eq!(nonce.to_hex(), text.to_ascii_lowercase());
    }
    let _ = query_param(Some(&text), "nonce");
    let _ = check_signing_algo(Some(&text));
    let _ = Route::classify(&text);
    // A client's request id is kept only when it is safe to log: exactly its own bytes.
    if let Some(rid) = client_request_id(Some(data)) {
        assert_eq!(rid.as_bytes(), data);
        assert!(rid.len() <= signet_core::ids::MAX_REQUEST_ID_LEN);
        assert!(validate_id_bytes(rid.as_bytes()).is_ok());
    }
}
