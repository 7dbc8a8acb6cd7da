//! The request body check on hostile bytes: no panic, the same verdict however the body is
//! cut, and a body that is accepted is handed on byte for byte.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_body(data));
