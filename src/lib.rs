//! signet: a Pingora reverse proxy that makes an OpenAI-compatible inference server
//! verifiably confidential. It signs `sha256(request):sha256(response)` of every completion
//! with a key born inside the TEE, and attests that key with a TDX quote and NVIDIA GPU
//! evidence.
//!
//! The domain modules (`sse`, `transcript`, `signing`, `store`, `notary`, `attestation`,
//! `ids`, `config`) never touch Pingora; `proxy` and `app` are the only places that do.

pub mod app;
pub mod attestation;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod gateway;
pub mod hardening;
pub mod ids;
pub mod inband;
pub mod metrics;
pub mod notary;
pub mod proxy;
pub mod routes;
pub mod shared_store;
pub mod signing;
pub mod sse;
pub mod store;
pub mod transcript;
pub mod upstreams;
pub mod verify;
