//! signet: a Pingora reverse proxy that makes an OpenAI-compatible inference server
//! verifiably confidential. It signs `sha256(request):sha256(response)` of every completion
//! with a key born inside the TEE, and attests that key with a TDX quote and NVIDIA GPU
//! evidence.
//!
//! This crate is the server: the Pingora side (`proxy`, `app`), the configuration, admission,
//! upstreams, the notary and the local routes. What is signed and how is decided in
//! `signet-core` (no Pingora, no I/O); quotes and GPU evidence come from `signet-attest`; the
//! client verifier is `signet-verify`, which the `signet` binary links for `signet verify`.

pub mod aci;
pub mod admission;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod gateway;
pub mod hardening;
pub mod inband_json;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod notary;
pub mod proxy;
pub mod routes;
pub mod shared_store;
pub mod upstreams;
