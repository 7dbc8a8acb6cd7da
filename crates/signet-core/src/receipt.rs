//! The body of `GET /v1/signature/{id}` (docs/API.md §4): what a signature lookup answers,
//! on every replica, whether this process or the shared store holds the signature.

use serde::{Deserialize, Serialize};

/// The body of `GET /v1/signature/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureReceipt {
    /// `<req_sha256>:<resp_sha256>`.
    pub text: String,
    /// `0x` + r ‖ s ‖ v in hex.
    pub signature: String,
    /// The EIP-55 address that signed.
    pub signing_address: String,
    /// Always `ecdsa` for now.
    pub signing_algo: String,
}
