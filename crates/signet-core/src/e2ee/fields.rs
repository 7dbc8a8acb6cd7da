//! Where the encrypted fields are (spec §5), and turning them around: a request's fields
//! are opened and restored in place (a whole-content plaintext that is a JSON array becomes
//! structured content again); a response's content fields are sealed to the client's key,
//! each under an AAD naming its field path, so a ciphertext cannot move to another place.
//!
//! Inside a v2 request every content location that holds a non-empty string must be a
//! ciphertext: a plaintext there is refused rather than passed on, so a client that forgot
//! to encrypt one field learns it instead of leaking it.

use super::crypto::{self, SecretKey};
use super::near::{self, NearKeys, NearSession};
use super::{E2eeError, Endpoint, Negotiated, Session, request_aad, response_aad};
use serde_json::{Map, Value};

/// Opens one field: its path and its ciphertext in, its plaintext out.
type Opener<'a> = dyn Fn(&str, &str) -> Result<String, E2eeError> + 'a;

/// Opens one ACI request field at `field`.
fn open_aci_field(
    session: &Session,
    secret: &SecretKey,
    model: &str,
    field: &str,
    ciphertext: &str,
) -> Result<String, E2eeError> {
    let aad = request_aad(
        session.suite.algo(),
        model,
        field,
        &session.nonce,
        session.timestamp,
    );
    let plaintext = crypto::open(secret, ciphertext, &aad)
        .map_err(|_| E2eeError::DecryptionFailed(format!("{field} does not decrypt")))?;
    utf8(field, plaintext)
}

fn utf8(field: &str, plaintext: Vec<u8>) -> Result<String, E2eeError> {
    String::from_utf8(plaintext)
        .map_err(|_| E2eeError::DecryptionFailed(format!("{field} is not UTF-8 once decrypted")))
}

/// Opens the string at `slot` in place, if it is a non-empty string: whether it was one.
fn open_in_place(
    slot: Option<&mut Value>,
    open: &Opener<'_>,
    field: &str,
) -> Result<bool, E2eeError> {
    let Some(Value::String(text)) = slot else {
        return Ok(false);
    };
    if text.is_empty() {
        return Ok(false);
    }
    *text = open(field, text)?;
    Ok(true)
}

/// Opens `prompt` / `input`: a string, or each string element of an array.
fn open_prompt(
    object: &mut Map<String, Value>,
    name: &str,
    open: &Opener<'_>,
) -> Result<usize, E2eeError> {
    match object.get_mut(name) {
        Some(Value::Array(items)) => {
            let mut opened = 0;
            for (i, item) in items.iter_mut().enumerate() {
                opened += usize::from(open_in_place(Some(item), open, &format!("{name}.{i}"))?);
            }
            Ok(opened)
        }
        slot => Ok(usize::from(open_in_place(slot, open, name)?)),
    }
}

/// Opens the messages of a chat request.
fn open_messages(object: &mut Map<String, Value>, open: &Opener<'_>) -> Result<usize, E2eeError> {
    let Some(Value::Array(messages)) = object.get_mut("messages") else {
        return Ok(0);
    };
    let mut opened = 0;
    for (m, message) in messages.iter_mut().enumerate() {
        let Some(content) = message.get_mut("content") else {
            continue;
        };
        match content {
            Value::String(text) if !text.is_empty() => {
                let field = format!("messages.{m}.content");
                let plaintext = open(&field, text)?;
                // A whole structured content array was serialized and encrypted as one.
                *content = match serde_json::from_str::<Value>(&plaintext) {
                    Ok(array @ Value::Array(_)) => array,
                    _ => Value::String(plaintext),
                };
                opened += 1;
            }
            Value::Array(parts) => {
                for (c, part) in parts.iter_mut().enumerate() {
                    let base = format!("messages.{m}.content.{c}");
                    opened += usize::from(open_in_place(
                        part.get_mut("text"),
                        open,
                        &format!("{base}.text"),
                    )?);
                    opened += usize::from(open_in_place(
                        part.get_mut("image_url").and_then(|p| p.get_mut("url")),
                        open,
                        &format!("{base}.image_url.url"),
                    )?);
                    opened += usize::from(open_in_place(
                        part.get_mut("input_audio").and_then(|p| p.get_mut("data")),
                        open,
                        &format!("{base}.input_audio.data"),
                    )?);
                }
            }
            _ => {}
        }
    }
    Ok(opened)
}

/// The request model, byte-exact (it is in every AAD).
pub fn request_model(value: &Value) -> Result<String, E2eeError> {
    value
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(E2eeError::InvalidPayloadModel)
}

/// Opens every encrypted field of a body (at least one), and serializes it compactly.
fn restore(mut value: Value, endpoint: Endpoint, open: &Opener<'_>) -> Result<Vec<u8>, E2eeError> {
    let Some(object) = value.as_object_mut() else {
        return Err(E2eeError::DecryptionFailed(
            "the request body is not a JSON object".to_owned(),
        ));
    };
    let opened = match endpoint {
        Endpoint::Chat => open_messages(object, open)?,
        Endpoint::Completions => open_prompt(object, "prompt", open)?,
        Endpoint::Embeddings => open_prompt(object, "input", open)?,
    };
    if opened == 0 {
        return Err(E2eeError::DecryptionFailed(
            "an E2EE request must carry at least one encrypted field".to_owned(),
        ));
    }
    serde_json::to_vec(&value).map_err(|_| {
        E2eeError::DecryptionFailed("the restored request cannot be serialized".to_owned())
    })
}

fn parse(body: &[u8]) -> Result<Value, E2eeError> {
    serde_json::from_slice(body)
        .map_err(|_| E2eeError::DecryptionFailed("the request body is not JSON".to_owned()))
}

/// Decrypts every encrypted field of a v2 request body: the restored body, compactly
/// serialized (what is forwarded, and what ACI's `request.received` covers), and its model.
pub fn restore_request(
    session: &Session,
    secret: &SecretKey,
    body: &[u8],
) -> Result<(Vec<u8>, String), E2eeError> {
    let value = parse(body)?;
    let model = request_model(&value)?;
    let open =
        |field: &str, ciphertext: &str| open_aci_field(session, secret, &model, field, ciphertext);
    Ok((restore(value, session.endpoint, &open)?, model))
}

/// Decrypts every encrypted field of a NEAR-format request body (the same locations; no
/// AAD, so a field's path plays no part in opening it).
pub fn restore_near_request(
    session: &NearSession,
    keys: &NearKeys,
    body: &[u8],
) -> Result<(Vec<u8>, String), E2eeError> {
    let value = parse(body)?;
    let model = request_model(&value).unwrap_or_default();
    let open = |field: &str, ciphertext: &str| {
        let plaintext = near::open(keys, session, ciphertext)
            .map_err(|_| E2eeError::DecryptionFailed(format!("{field} does not decrypt")))?;
        utf8(field, plaintext)
    };
    Ok((restore(value, session.endpoint, &open)?, model))
}

/// Seals a response's content fields to the client (one JSON answer, or one event's data).
#[derive(Debug, Clone)]
pub struct ResponseSealer {
    negotiated: Negotiated,
    model: String,
}

impl ResponseSealer {
    /// A sealer for the answer to a request in `negotiated`, whose model was `model`.
    pub fn new(negotiated: Negotiated, model: String) -> Self {
        Self { negotiated, model }
    }

    fn seal_text(&self, id: &str, field: &str, plaintext: &[u8]) -> String {
        match &self.negotiated {
            Negotiated::Aci(session) => {
                let aad = response_aad(
                    session.suite.algo(),
                    &self.model,
                    id,
                    field,
                    &session.nonce,
                    session.timestamp,
                );
                crypto::seal(&session.client_key, plaintext, &aad)
            }
            Negotiated::Near(session) => near::seal(session, plaintext),
        }
    }

    fn seal_slot(&self, slot: Option<&mut Value>, id: &str, field: &str) {
        let Some(value) = slot else {
            return;
        };
        let plaintext = match &mut *value {
            Value::Null => return,
            Value::String(text) => std::mem::take(text),
            // Structured values (an embedding vector) are sealed as their compact JSON.
            other => other.to_string(),
        };
        *value = Value::String(self.seal_text(id, field, plaintext.as_bytes()));
    }

    /// Seals the content fields of `value` in place: a buffered answer, or (`streaming`)
    /// one SSE chunk.
    pub fn seal(&self, value: &mut Value, streaming: bool) {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (list, names): (&str, &[&str]) = match (self.negotiated.endpoint(), streaming) {
            (Endpoint::Chat, false) => (
                "choices",
                &[
                    "message.content",
                    "message.reasoning",
                    "message.reasoning_content",
                    "message.audio.data",
                ],
            ),
            (Endpoint::Chat, true) => (
                "choices",
                &[
                    "delta.content",
                    "delta.reasoning",
                    "delta.reasoning_content",
                ],
            ),
            (Endpoint::Completions, _) => ("choices", &["text"]),
            (Endpoint::Embeddings, _) => ("data", &["embedding"]),
        };
        let Some(Value::Array(entries)) = value.get_mut(list) else {
            return;
        };
        for (position, entry) in entries.iter_mut().enumerate() {
            // The entry's `index` when present, its position otherwise (§5).
            let index = entry
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            for name in names {
                let field = format!("{list}.{index}.{name}");
                let mut slot = Some(&mut *entry);
                for member in name.split('.') {
                    slot = slot.and_then(|v| v.get_mut(member));
                }
                self.seal_slot(slot, &id, &field);
            }
        }
    }
}
