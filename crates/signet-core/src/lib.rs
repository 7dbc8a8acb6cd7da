//! signet-core: everything that decides what signet signs, with no I/O. No Pingora, no tokio,
//! no hyper: Cargo enforces it (this crate does not depend on them, and the test command
//! checks `cargo tree`). The server (`signet`) and the client verifier (`signet-verify`)
//! both build on it, so the two sides read and write the same wire types.
//!
//! - [`ids`], [`sse`], [`transcript`]: completion ids, the incremental SSE id scanner, and the
//!   request/response hashing that makes the signed text.
//! - [`signing`], [`store`], [`receipt`], [`inband`]: the secp256k1 key and EIP-191, the bounded
//!   signature store, and the two forms a signature reaches a client in.
//! - [`report`], [`query`]: the attestation report and its report_data layouts, and the query
//!   parameters of the local routes.
//! - [`exchange`]: one request's life as a state machine: facts in, decisions out.
//! - [`route`], [`error`]: which route a request is on, and the error envelope.
//! - [`aci`]: ACI (`aci/1`): JCS, the workload keyset, the attestation statement, signed
//!   receipts and their store.
//! - [`e2ee`]: ACI's E2EE v2: request fields decrypted, response fields encrypted.

pub mod aci;
pub mod e2ee;
pub mod error;
pub mod exchange;
pub mod ids;
pub mod inband;
pub mod query;
pub mod receipt;
pub mod report;
pub mod route;
pub mod signing;
pub mod sse;
pub mod store;
pub mod transcript;
