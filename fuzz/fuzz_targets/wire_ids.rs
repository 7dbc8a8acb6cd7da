//! Everything that parses identifiers off the wire: completion ids (the signature route's
//! path), attestation nonces and query strings, request ids, route classification.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::wire_ids(data));
