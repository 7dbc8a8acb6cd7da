//! Incremental scanner that finds the completion `id` in a Server-Sent Events stream.
//!
//! It owns one job: given the response bytes in whatever pieces TCP and HTTP chunking
//! deliver them, find the first `data:` event whose payload is a JSON object with a string
//! `id`, following the WHATWG SSE parsing rules (LF, CRLF or lone CR line ends, `data:`
//! with or without the space, comments, multi-line data, a leading BOM). It does not hash,
//! forward or modify anything, and it never imports Pingora.
//!
//! Memory is bounded: bytes are only buffered while the id is still being searched for, and
//! the search gives up after `scan_limit` bytes. Once the id is found, `feed` returns
//! at once, so a long stream costs nothing after its first event.

use crate::ids::{CompletionId, validate_id_bytes};
use std::borrow::Cow;

/// Why no id could be taken from a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFailure {
    /// The body ended without any event or object carrying an `id`.
    NotFound,
    /// The id search ran past its byte budget (a pathological first event or body).
    TooLarge,
    /// An `id` was found but is not a valid completion id (docs/API.md §4).
    Invalid,
}

/// Where the search stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSearch {
    /// Still looking.
    Searching,
    /// Found; later bytes are not examined.
    Found(CompletionId),
    /// Gave up; later bytes are not examined.
    Failed(IdFailure),
}

/// Searches an SSE byte stream for the completion id. See the module docs.
#[derive(Debug)]
pub struct SseIdScanner {
    search: IdSearch,
    /// The current, unterminated line.
    line: Vec<u8>,
    /// The data field of the event being assembled (lines joined with LF).
    data: Vec<u8>,
    /// Whether the current event has had at least one `data` line.
    has_data: bool,
    /// The previous chunk ended in CR, so a leading LF in the next one belongs to it.
    after_cr: bool,
    /// No line has been completed yet (a UTF-8 BOM may precede the first one).
    first_line: bool,
    /// Bytes consumed while searching.
    scanned: usize,
    /// Most bytes consumed before giving up.
    scan_limit: usize,
    /// The `event` field of the event being assembled.
    event_type: Vec<u8>,
    /// Only events of this type carry the id (`None`: any event).
    want_event: Option<String>,
    /// Where the id is in an event's data (a JSON pointer; `/id` by default).
    pointer: String,
}

impl SseIdScanner {
    /// A scanner that takes the top-level `id` of the first event that has one, and gives
    /// up after `scan_limit` bytes without one.
    pub fn new(scan_limit: usize) -> Self {
        Self::with_rule(scan_limit, None, "/id")
    }

    /// A scanner that takes the string at JSON pointer `pointer` in the data of the first
    /// event (of type `event`, when given: the `event:` field, as the Responses and
    /// Anthropic Messages streams name theirs) that has one.
    pub fn with_rule(scan_limit: usize, event: Option<&str>, pointer: &str) -> Self {
        Self {
            search: IdSearch::Searching,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            first_line: true,
            scanned: 0,
            scan_limit,
            event_type: Vec::new(),
            want_event: event.map(str::to_owned),
            pointer: pointer.to_owned(),
        }
    }

    /// The state of the search.
    pub fn search(&self) -> &IdSearch {
        &self.search
    }

    /// Consumes the next piece of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.search != IdSearch::Searching {
            return;
        }
        // Only the first `scan_limit` bytes of the stream are examined, however it is cut
        // into chunks, so the outcome never depends on how TCP delivered the bytes.
        // It gives up only when a byte past the limit arrives: a stream of exactly
        // `scan_limit` bytes without an id is `NotFound`, as it would be with a larger limit.
        let budget = self.scan_limit.saturating_sub(self.scanned);
        let examined = &chunk[..chunk.len().min(budget)];
        self.scanned = self.scanned.saturating_add(examined.len());
        self.scan(examined);
        if self.search == IdSearch::Searching && examined.len() < chunk.len() {
            self.give_up(IdFailure::TooLarge);
        }
    }

    fn scan(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        loop {
            if self.after_cr {
                match rest.split_first() {
                    // The LF of a CRLF split across chunks: it ends nothing more.
                    Some((b'\n', tail)) => rest = tail,
                    // The LF (if any) may still come in the next chunk.
                    None => return,
                    Some(_) => {}
                }
                self.after_cr = false;
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(rest);
                    return;
                }
                Some(end) => {
                    let (content, tail) = rest.split_at(end);
                    self.line.extend_from_slice(content);
                    let (terminator, tail) = match tail.split_first() {
                        Some((t, tail)) => (*t, tail),
                        None => return,
                    };
                    rest = tail;
                    self.after_cr = terminator == b'\r';
                    self.complete_line();
                    if self.search != IdSearch::Searching {
                        return;
                    }
                }
            }
        }
    }

    /// Ends the stream: an event without its closing blank line is discarded (as the SSE
    /// specification says), so an id still missing now is not found.
    pub fn finish(&mut self) -> IdSearch {
        if self.search == IdSearch::Searching {
            self.give_up(IdFailure::NotFound);
        }
        self.search.clone()
    }

    fn give_up(&mut self, why: IdFailure) {
        self.search = IdSearch::Failed(why);
        self.release();
    }

    fn release(&mut self) {
        self.line = Vec::new();
        self.data = Vec::new();
    }

    fn complete_line(&mut self) {
        let mut line = std::mem::take(&mut self.line);
        if self.first_line {
            self.first_line = false;
            if let Some(stripped) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = stripped.to_vec();
            }
        }
        if line.is_empty() {
            self.dispatch();
        } else if line.first() != Some(&b':') {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let (field, value) = line.split_at(colon);
                    let value = value.get(1..).unwrap_or_default();
                    (field, value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line.as_slice(), &b""[..]),
            };
            if field == b"data" {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            } else if field == b"event" {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
        }
        if self.search == IdSearch::Searching {
            // Reuse the allocation for the next line.
            line.clear();
            self.line = line;
        }
    }

    fn dispatch(&mut self) {
        let event_type = std::mem::take(&mut self.event_type);
        if !self.has_data {
            return;
        }
        self.has_data = false;
        let wanted = self
            .want_event
            .as_ref()
            .is_none_or(|want| want.as_bytes() == event_type.as_slice());
        if !wanted {
            self.data.clear();
            return;
        }
        let outcome = if self.pointer == "/id" {
            id_of_json_object(&self.data)
        } else {
            id_at_pointer(&self.data, &self.pointer)
        };
        self.data.clear();
        match outcome {
            Err(IdFailure::NotFound) => {} // e.g. a non-JSON event: keep looking
            Err(why) => self.give_up(why),
            Ok(id) => {
                self.search = IdSearch::Found(id);
                self.release();
            }
        }
    }
}

/// Reads the top-level string `id` of a JSON object.
///
/// Not an object, not JSON, no `id`, a non-string `id` or a duplicated `id` key are all
/// `NotFound`; an `id` that breaks the id rules is `Invalid`.
pub fn id_of_json_object(bytes: &[u8]) -> Result<CompletionId, IdFailure> {
    #[derive(serde::Deserialize)]
    struct IdProbe<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
    }
    // serde would also build a struct from a JSON array; only an object counts.
    let starts_as_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !starts_as_object {
        return Err(IdFailure::NotFound);
    }
    let probe: IdProbe<'_> = serde_json::from_slice(bytes).map_err(|_| IdFailure::NotFound)?;
    let id = probe.id.ok_or(IdFailure::NotFound)?;
    validate_id_bytes(id.as_bytes()).map_err(|_| IdFailure::Invalid)?;
    CompletionId::parse(&id).map_err(|_| IdFailure::Invalid)
}

/// The id at JSON pointer `pointer` of a JSON object: a string there that breaks the id
/// rules is `Invalid`; no string there is `NotFound`.
pub fn id_at_pointer(bytes: &[u8], pointer: &str) -> Result<CompletionId, IdFailure> {
    let starts_as_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !starts_as_object {
        return Err(IdFailure::NotFound);
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| IdFailure::NotFound)?;
    let id = value
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .ok_or(IdFailure::NotFound)?;
    validate_id_bytes(id.as_bytes()).map_err(|_| IdFailure::Invalid)?;
    CompletionId::parse(id).map_err(|_| IdFailure::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &[u8] = include_bytes!("../../../tests/fixtures/seed-response.sse");
    const SEED_ID: &str = "chat-7ee2a39468ce48d7b2284783f21782b0";

    fn scan_in_pieces(stream: &[u8], cuts: &[usize]) -> IdSearch {
        let mut scanner = SseIdScanner::new(64 * 1024);
        let mut start = 0;
        for &cut in cuts {
            scanner.feed(&stream[start..cut]);
            start = cut;
        }
        scanner.feed(&stream[start..]);
        scanner.finish()
    }

    fn found(id: &str) -> IdSearch {
        IdSearch::Found(CompletionId::parse(id).unwrap())
    }

    #[test]
    fn seed_stream_split_at_every_byte_yields_the_seed_id() {
        for cut in 0..=SEED.len() {
            assert_eq!(scan_in_pieces(SEED, &[cut]), found(SEED_ID), "cut at {cut}");
        }
    }

    #[test]
    fn seed_stream_fed_one_byte_at_a_time() {
        let cuts: Vec<usize> = (1..SEED.len()).collect();
        assert_eq!(scan_in_pieces(SEED, &cuts), found(SEED_ID));
    }

    #[test]
    fn crlf_and_lone_cr_line_ends_split_between_chunks() {
        let crlf = b"data: {\"id\":\"a-1\"}\r\n\r\n";
        for cut in 0..=crlf.len() {
            assert_eq!(scan_in_pieces(crlf, &[cut]), found("a-1"), "crlf cut {cut}");
        }
        let cr = b"data: {\"id\":\"a-2\"}\r\r";
        for cut in 0..=cr.len() {
            assert_eq!(scan_in_pieces(cr, &[cut]), found("a-2"), "cr cut {cut}");
        }
    }

    #[test]
    fn data_without_space_comments_other_fields_and_bom() {
        let stream =
            b"\xEF\xBB\xBF: keep-alive\nevent: message\nid: 99\nretry: 10\ndata:{\"id\":\"x.y\"}\n\n";
        for cut in 0..=stream.len() {
            assert_eq!(scan_in_pieces(stream, &[cut]), found("x.y"), "cut {cut}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let stream = b"data: {\"object\":\"chunk\",\ndata: \"id\":\"multi\"}\n\n";
        assert_eq!(scan_in_pieces(stream, &[]), found("multi"));
    }

    #[test]
    fn events_without_an_id_are_skipped_until_one_has_it() {
        let stream = b"data: keepalive\n\ndata: {\"object\":\"x\"}\n\ndata: {\"id\":\"later\"}\n\n";
        assert_eq!(scan_in_pieces(stream, &[]), found("later"));
    }

    #[test]
    fn an_unterminated_event_is_not_used() {
        assert_eq!(
            scan_in_pieces(b"data: {\"id\":\"cut\"}\n", &[]),
            IdSearch::Failed(IdFailure::NotFound)
        );
        assert_eq!(
            scan_in_pieces(b"data: [DONE]\n\n", &[]),
            IdSearch::Failed(IdFailure::NotFound)
        );
    }

    #[test]
    fn an_invalid_id_stops_the_search() {
        assert_eq!(
            scan_in_pieces(b"data: {\"id\":\"../x\"}\n\ndata: {\"id\":\"ok\"}\n\n", &[]),
            IdSearch::Failed(IdFailure::Invalid)
        );
    }

    #[test]
    fn non_string_or_duplicate_ids_do_not_count() {
        assert_eq!(id_of_json_object(br#"{"id":5}"#), Err(IdFailure::NotFound));
        assert_eq!(
            id_of_json_object(br#"{"id":"a","id":"b"}"#),
            Err(IdFailure::NotFound)
        );
        assert_eq!(id_of_json_object(br#"["id"]"#), Err(IdFailure::NotFound));
        assert_eq!(
            id_of_json_object(br#"{"choices":[{"id":"inner"}],"id":"outer"}"#),
            Ok(CompletionId::parse("outer").unwrap())
        );
        assert_eq!(
            id_of_json_object(br#"{"id":"esc\u0061ped"}"#),
            Ok(CompletionId::parse("escaped").unwrap())
        );
    }

    #[test]
    fn a_pathological_first_event_is_bounded() {
        let mut scanner = SseIdScanner::new(1024);
        let junk = vec![b'x'; 300];
        for _ in 0..3 {
            scanner.feed(&junk);
        }
        assert_eq!(scanner.search(), &IdSearch::Searching);
        scanner.feed(&junk);
        assert_eq!(scanner.search(), &IdSearch::Failed(IdFailure::TooLarge));
        assert_eq!(scanner.line.capacity(), 0, "buffers are released");
        scanner.feed(b"\n\ndata: {\"id\":\"late\"}\n\n");
        assert_eq!(scanner.finish(), IdSearch::Failed(IdFailure::TooLarge));
    }

    #[test]
    fn a_crlf_split_between_its_cr_and_lf_ends_one_line_only() {
        // Regression input from the sse_id fuzz target: fed byte by byte, the LF of a
        // CRLF was remembered past its chunk and swallowed the blank line after it, so the
        // event boundary was lost.
        let stream = b"data: {\"id\":\"bad/id\"}\r\n\ndata: {\"id\":\"good\"}\n\n";
        let mut whole = SseIdScanner::new(1024);
        whole.feed(stream);
        let mut split = SseIdScanner::new(1024);
        for byte in stream {
            split.feed(std::slice::from_ref(byte));
        }
        assert_eq!(whole.finish(), IdSearch::Failed(IdFailure::Invalid));
        assert_eq!(split.finish(), IdSearch::Failed(IdFailure::Invalid));
    }

    #[test]
    fn only_bytes_past_the_limit_make_a_stream_too_large() {
        // Regression input from the sse_id fuzz target: an empty chunk at limit 0 gave up,
        // where no chunk at all did not.
        let mut scanner = SseIdScanner::new(0);
        scanner.feed(b"");
        assert_eq!(scanner.finish(), IdSearch::Failed(IdFailure::NotFound));
        let mut scanner = SseIdScanner::new(4);
        scanner.feed(b"abcd");
        assert_eq!(scanner.search(), &IdSearch::Searching);
        scanner.feed(b"e");
        assert_eq!(scanner.finish(), IdSearch::Failed(IdFailure::TooLarge));
    }

    #[test]
    fn one_chunk_longer_than_the_limit_still_yields_an_id_inside_it() {
        // An upstream that writes a whole stream at once must not lose its signature:
        // the limit counts stream bytes, not chunk sizes (found by the property tests).
        let mut stream = b"data: {\"id\":\"whole\"}\n\n".to_vec();
        stream.extend_from_slice(&vec![b'z'; 5000]);
        let mut scanner = SseIdScanner::new(64);
        scanner.feed(&stream);
        assert_eq!(scanner.finish(), found("whole"));
    }

    #[test]
    fn after_the_id_is_found_nothing_more_is_buffered() {
        let mut scanner = SseIdScanner::new(64);
        scanner.feed(b"data: {\"id\":\"first\"}\n\n");
        scanner.feed(&vec![b'y'; 10_000]);
        assert_eq!(scanner.finish(), found("first"));
        assert_eq!(scanner.line.capacity(), 0);
    }

    #[test]
    fn typed_events_and_nested_ids_are_found_as_the_responses_and_messages_apis_send_them() {
        let responses = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_123\",\"status\":\"in_progress\"}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n";
        let messages = b"event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01X\",\"role\":\"assistant\"}}\r\n\r\nevent: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n";
        for (stream, event, pointer, id) in [
            (
                &responses[..],
                "response.created",
                "/response/id",
                "resp_123",
            ),
            (&messages[..], "message_start", "/message/id", "msg_01X"),
        ] {
            for split in 0..stream.len() {
                let mut scanner = SseIdScanner::with_rule(1 << 16, Some(event), pointer);
                scanner.feed(&stream[..split]);
                scanner.feed(&stream[split..]);
                assert_eq!(
                    scanner.finish(),
                    IdSearch::Found(CompletionId::parse(id).unwrap()),
                    "split at {split}"
                );
            }
        }
        // An event of another type with the same shape is not taken.
        let mut scanner = SseIdScanner::with_rule(1 << 16, Some("message_start"), "/message/id");
        scanner.feed(b"event: other\ndata: {\"message\":{\"id\":\"wrong\"}}\n\n");
        assert_eq!(scanner.finish(), IdSearch::Failed(IdFailure::NotFound));
        // The event type does not leak into the next event.
        let mut scanner = SseIdScanner::with_rule(1 << 16, Some("message_start"), "/message/id");
        scanner
            .feed(b"event: message_start\n: comment\n\ndata: {\"message\":{\"id\":\"late\"}}\n\n");
        assert_eq!(scanner.finish(), IdSearch::Failed(IdFailure::NotFound));
        assert_eq!(
            id_at_pointer(br#"{"a":{"id":"bad id"}}"#, "/a/id"),
            Err(IdFailure::Invalid)
        );
        assert_eq!(id_at_pointer(br#"[1]"#, "/0"), Err(IdFailure::NotFound));
    }
}
