//! The response side as bytes: a JSON answer is read whole (bounded), sealed and written
//! compactly; an event stream is cut into events, and each `data:` event is sealed,
//! re-serialized and let go as soon as its blank line arrives (never held longer). An event
//! that cannot be sealed (its data is not JSON) ends the stream: an in-protocol error event
//! goes out in its place, nothing after it, and the exchange is not signed.

use super::fields::ResponseSealer;
use serde_json::Value;

/// Largest JSON answer, or single event, held to be sealed.
pub const MAX_HELD_BYTES: usize = 8 * 1024 * 1024;

/// The error event (or body) that replaces what could not be sealed.
pub const FAILURE_BODY: &[u8] = br#"{"error":{"message":"the response could not be encrypted to the client key","type":"e2ee_encryption_failed","param":null,"code":"e2ee_encryption_failed"}}"#;

/// Turns plaintext response bytes into the bytes sent.
#[derive(Debug)]
pub struct ResponseEncryptor {
    sealer: ResponseSealer,
    event_stream: bool,
    pending: Vec<u8>,
    failed: bool,
}

impl ResponseEncryptor {
    /// An encryptor for an event stream (`event_stream`) or a JSON answer.
    pub fn new(sealer: ResponseSealer, event_stream: bool) -> Self {
        Self {
            sealer,
            event_stream,
            pending: Vec::new(),
            failed: false,
        }
    }

    /// Whether something could not be sealed (the response is then not signed).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Takes a piece of the upstream's body; returns the bytes to send now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.failed {
            return Vec::new();
        }
        self.pending.extend_from_slice(chunk);
        if !self.event_stream {
            if self.pending.len() > MAX_HELD_BYTES {
                return self.fail();
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        while let Some((end, next)) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..next).collect();
            match self.seal_event(&event[..end]) {
                Some(sealed) => out.extend(sealed),
                None => {
                    out.extend(self.fail());
                    return out;
                }
            }
        }
        if self.pending.len() > MAX_HELD_BYTES {
            out.extend(self.fail());
        }
        out
    }

    /// The body's end: what is left to send.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.failed {
            return Vec::new();
        }
        let rest = std::mem::take(&mut self.pending);
        if self.event_stream {
            if rest.iter().all(|b| b.is_ascii_whitespace()) {
                return rest;
            }
            return self.seal_event(&rest).unwrap_or_else(|| self.fail());
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(&rest) else {
            return self.fail();
        };
        self.sealer.seal(&mut value, false);
        serde_json::to_vec(&value).unwrap_or_else(|_| self.fail())
    }

    fn fail(&mut self) -> Vec<u8> {
        self.failed = true;
        self.pending.clear();
        if !self.event_stream {
            return FAILURE_BODY.to_vec();
        }
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(FAILURE_BODY);
        event.extend_from_slice(b"\n\n");
        event
    }

    /// One event (without its blank line) sealed, with its blank line; `None` when its
    /// data is not JSON.
    fn seal_event(&self, event: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(event).ok()?;
        let mut others: Vec<&str> = Vec::new();
        let mut data: Vec<&str> = Vec::new();
        let mut data_at = None;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(value) = line.strip_prefix("data:") {
                data_at.get_or_insert(others.len());
                data.push(value.strip_prefix(' ').unwrap_or(value));
            } else if !line.is_empty() {
                others.push(line);
            }
        }
        let mut out = String::with_capacity(event.len() * 3 + 2);
        let sealed_data = match data_at {
            None => None,
            Some(_) => {
                let joined = data.join("\n");
                if joined.trim() == "[DONE]" {
                    Some("data: [DONE]".to_owned())
                } else {
                    let mut value: Value = serde_json::from_str(&joined).ok()?;
                    self.sealer.seal(&mut value, true);
                    Some(format!("data: {}", serde_json::to_string(&value).ok()?))
                }
            }
        };
        for (i, line) in others.iter().enumerate() {
            if Some(i) == data_at
                && let Some(data) = &sealed_data
            {
                out.push_str(data);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
        if data_at == Some(others.len())
            && let Some(data) = &sealed_data
        {
            out.push_str(data);
            out.push('\n');
        }
        out.push('\n');
        Some(out.into_bytes())
    }
}

/// Where the first complete event ends: (end of its last line, start of what follows).
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buffer.len() {
        if buffer[i] == b'\n' {
            if buffer[i + 1] == b'\n' {
                return Some((i, i + 2));
            }
            if buffer[i + 1] == b'\r' && buffer.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}
