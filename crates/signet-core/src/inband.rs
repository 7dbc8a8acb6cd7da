//! Signatures delivered in the response itself, for clients that ask with the request header
//! `x-signet-signature: in-band` (no second round trip to `/v1/signature/{id}`, which could
//! land on another replica or after expiry).
//!
//! - Streamed responses: after the upstream's last byte (`data: [DONE]` and its blank line),
//!   signet appends one SSE comment, `: signet-signature {json}` and a blank line. SSE parsers
//!   (the OpenAI SDKs included) ignore comments. The signature covers every byte **before**
//!   that comment, exactly what the client would have received without it.
//! - Non-streamed responses: the signature travels in response headers; signet holds the
//!   JSON body (up to `limits.json_response_bytes`) until it is signed, then sends head and
//!   body. The body is unchanged.
//!
//! This module builds and parses those forms; it knows nothing of Pingora.

use serde::{Deserialize, Serialize};

/// The request header that asks for an in-band signature, and its value.
pub const REQUEST_HEADER: &str = "x-signet-signature";
/// The value of [`REQUEST_HEADER`] that asks for it.
pub const REQUEST_VALUE: &str = "in-band";
/// Start of the SSE comment line carrying the signature.
pub const COMMENT_PREFIX: &[u8] = b": signet-signature ";

/// Response headers of a non-streamed in-band signature.
pub mod headers {
    /// `0x` + r ‖ s ‖ v.
    pub const SIGNATURE: &str = "x-signet-signature";
    /// `<sha256(request)>:<sha256(response)>`.
    pub const TEXT: &str = "x-signet-text";
    /// The EIP-55 signing address.
    pub const SIGNING_ADDRESS: &str = "x-signet-signing-address";
    /// The completion id the signature is filed under.
    pub const COMPLETION_ID: &str = "x-signet-completion-id";
}

/// What an in-band signature says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InbandSignature {
    /// The completion id.
    pub id: String,
    /// `<sha256(request)>:<sha256(response)>`.
    pub text: String,
    /// `0x` + 130 hex chars.
    pub signature: String,
    /// The EIP-55 signing address.
    pub signing_address: String,
    /// Always `ecdsa`.
    pub signing_algo: String,
}

/// Whether a request header value asks for an in-band signature.
pub fn requested(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| {
        v.trim_ascii()
            .eq_ignore_ascii_case(REQUEST_VALUE.as_bytes())
    })
}

/// The bytes signet appends to a signed stream.
pub fn stream_trailer(signature: &InbandSignature) -> Vec<u8> {
    let json = serde_json::to_vec(signature).unwrap_or_default();
    let mut out = Vec::with_capacity(COMMENT_PREFIX.len() + json.len() + 2);
    out.extend_from_slice(COMMENT_PREFIX);
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    out
}

/// Splits a received stream into the bytes the signature covers and the in-band signature,
/// if the stream ends with one. The comment must be the very last thing in the stream and
/// start on a line of its own.
pub fn split_stream(body: &[u8]) -> (&[u8], Option<InbandSignature>) {
    let Some(rest) = body.strip_suffix(b"\n\n") else {
        return (body, None);
    };
    let Some(start) = rest
        .windows(COMMENT_PREFIX.len())
        .rposition(|w| w == COMMENT_PREFIX)
    else {
        return (body, None);
    };
    let at_line_start = start == 0 || rest.get(start.wrapping_sub(1)) == Some(&b'\n');
    let json = &rest[start + COMMENT_PREFIX.len()..];
    if !at_line_start || json.contains(&b'\n') {
        return (body, None);
    }
    match serde_json::from_slice(json) {
        Ok(signature) => (&body[..start], Some(signature)),
        Err(_) => (body, None),
    }
}

/// Start of any comment line that speaks for signet (`: signet-signature …`).
const SIGNET_COMMENT: &[u8] = b": signet-";
/// What such a line from the upstream becomes: a comment that no longer speaks for signet.
const NEUTRALISED: &[u8] = b": upstream-said signet-";

/// Makes the in-band trailer impossible to forge from upstream bytes: every line of an
/// upstream stream that starts like one of signet's comments (`: signet-`) is rewritten to
/// `: upstream-said signet-`, so the only `: signet-signature` line a client can ever see
/// is the one signet appends. Lines may be split across chunks anywhere: a partial match
/// at the end of a chunk (at most 8 bytes) is held until the next one decides it.
#[derive(Debug)]
pub struct TrailerGuard {
    at_line_start: bool,
    partial: Vec<u8>,
}

impl Default for TrailerGuard {
    fn default() -> Self {
        Self {
            at_line_start: true,
            partial: Vec::new(),
        }
    }
}

impl TrailerGuard {
    /// The bytes to send in place of `chunk` (held bytes from before included, a partial
    /// match at its end held back).
    pub fn filter(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.partial.len());
        for &byte in chunk {
            if self.at_line_start || !self.partial.is_empty() {
                if SIGNET_COMMENT.get(self.partial.len()) == Some(&byte) {
                    self.partial.push(byte);
                    if self.partial.len() == SIGNET_COMMENT.len() {
                        out.extend_from_slice(NEUTRALISED);
                        self.partial.clear();
                        self.at_line_start = false;
                    }
                    continue;
                }
                out.append(&mut self.partial);
            }
            out.push(byte);
            self.at_line_start = byte == b'\n' || byte == b'\r';
        }
        out
    }

    /// The bytes still held at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InbandSignature {
        InbandSignature {
            id: "chatcmpl-1".to_owned(),
            text: format!("{}:{}", "aa".repeat(32), "bb".repeat(32)),
            signature: format!("0x{}", "cc".repeat(65)),
            signing_address: "0x0000000000000000000000000000000000000001".to_owned(),
            signing_algo: "ecdsa".to_owned(),
        }
    }

    #[test]
    fn a_trailer_round_trips_and_covers_exactly_the_bytes_before_it() {
        let stream = b"data: {\"id\":\"chatcmpl-1\"}\n\ndata: [DONE]\n\n".to_vec();
        let mut received = stream.clone();
        received.extend(stream_trailer(&sample()));
        let (covered, signature) = split_stream(&received);
        assert_eq!(covered, &stream[..]);
        assert_eq!(signature, Some(sample()));
    }

    #[test]
    fn streams_without_a_trailer_are_left_whole() {
        let stream = b"data: [DONE]\n\n";
        assert_eq!(split_stream(stream), (&stream[..], None));
        let fake = b"data: [DONE]\n\n: signet-signature not-json\n\n";
        assert_eq!(split_stream(fake).1, None);
        let mid_line = b"data: x: signet-signature {}\n\n";
        assert_eq!(split_stream(mid_line).1, None);
    }

    #[test]
    fn the_request_header_is_read_leniently() {
        assert!(requested(Some(b"in-band")));
        assert!(requested(Some(b" In-Band ")));
        assert!(!requested(Some(b"yes")));
        assert!(!requested(None));
    }

    #[test]
    fn upstream_lines_that_look_like_signets_comments_are_neutralised_however_split() {
        let forged = b"data: {\"id\":\"x\"}\n\n: signet-signature {\"fake\":1}\n\ndata: a : signet-x\n\n: signet-signature {\"fake\":2}\n\n";
        let expected = b"data: {\"id\":\"x\"}\n\n: upstream-said signet-signature {\"fake\":1}\n\ndata: a : signet-x\n\n: upstream-said signet-signature {\"fake\":2}\n\n";
        for split in 0..=forged.len() {
            let mut guard = TrailerGuard::default();
            let mut out = guard.filter(&forged[..split]);
            out.extend(guard.filter(&forged[split..]));
            out.extend(guard.finish());
            assert_eq!(out, expected.to_vec(), "split at {split}");
        }
        // Byte by byte, and a stream that starts with one; a prefix left at the end is kept.
        let mut guard = TrailerGuard::default();
        let mut out = Vec::new();
        for byte in b": signet-x\r: sig" {
            out.extend(guard.filter(&[*byte]));
        }
        out.extend(guard.finish());
        assert_eq!(out, b": upstream-said signet-x\r: sig".to_vec());
        // Nothing else changes.
        let plain = b"data: {\"a\":\": signet-\"}\n\n: keep-alive\n\n";
        assert_eq!(TrailerGuard::default().filter(plain), plain.to_vec());
        // The result never holds a line a client would take for signet's trailer.
        let (_, found) = split_stream(expected);
        assert!(found.is_none());
    }
}
