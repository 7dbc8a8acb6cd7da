//! The SSE id scanner and the JSON id reader on hostile bytes: no panic, and the answer for
//! the stream cut into pieces is the answer for the whole stream.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::sse_id(data));
