//! Fetches Intel collateral for a quote from a PCCS or Intel's PCS (API v4): the PCK CRL, the
//! TDX TCB info for the quote's FMSPC, the QE identity and the root CA CRL, each with the
//! issuer chain the service sends in a header. The PCK chain comes from the quote itself.

use super::http::{BaseUrl, Client};
use bytes::Bytes;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Quote;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// Intel's root CA CRL, for services that do not serve `rootcacrl` themselves.
const INTEL_ROOT_CA_CRL: &str = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

#[derive(Deserialize)]
struct TcbInfoAnswer<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct QeIdentityAnswer<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    enclave_identity: &'a RawValue,
    signature: String,
}

fn pem_chain(ders: &[Vec<u8>]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = b64.encode(der);
        for line in text.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Fetches the collateral for `quote` from the service at `base_url`.
pub async fn fetch_collateral(
    base_url: &str,
    quote: &[u8],
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<QuoteCollateralV3, String> {
    let parsed = Quote::parse(quote).map_err(|e| format!("quote: {e:#}"))?;
    let chain =
        dcap_qvl::intel::extract_cert_chain(&parsed).map_err(|e| format!("PCK chain: {e:#}"))?;
    let fmspc = hex::encode_upper(
        dcap_qvl::intel::quote_fmspc(&parsed).map_err(|e| format!("FMSPC: {e:#}"))?,
    );
    let ca = dcap_qvl::intel::quote_ca(&parsed)
        .map_err(|e| format!("PCK CA: {e:#}"))?
        .as_id_str();
    let base = BaseUrl::parse(base_url.trim_end_matches('/')).map_err(|e| e.to_string())?;
    let client = Client::new(base, tls.clone(), timeout);

    let get = |path: String| {
        let client = client.clone();
        async move {
            let response = client
                .send(http::Method::GET, &path, &[], Bytes::new())
                .await
                .map_err(|e| format!("GET {path}: {e}"))?;
            if response.status != 200 {
                return Err(format!("GET {path}: HTTP {}", response.status));
            }
            Ok(response)
        }
    };
    let issuer_chain = |response: &super::http::Response, names: &[&str]| {
        names
            .iter()
            .find_map(|name| response.headers.get(*name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| urlencoding::decode(v).ok())
            .map(|v| v.into_owned())
            .ok_or_else(|| format!("missing issuer chain header {}", names.join(" / ")))
    };

    let pck_crl = get(format!("/sgx/certification/v4/pckcrl?ca={ca}&encoding=der")).await?;
    let pck_crl_issuer_chain = issuer_chain(&pck_crl, &["SGX-PCK-CRL-Issuer-Chain"])?;

    let tcb = get(format!("/tdx/certification/v4/tcb?fmspc={fmspc}")).await?;
    let tcb_info_issuer_chain = issuer_chain(
        &tcb,
        &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
    )?;
    let tcb_answer: TcbInfoAnswer<'_> =
        serde_json::from_slice(&tcb.body).map_err(|e| format!("TCB info: {e}"))?;

    let qe = get("/tdx/certification/v4/qe/identity".to_owned()).await?;
    let qe_identity_issuer_chain = issuer_chain(&qe, &["SGX-Enclave-Identity-Issuer-Chain"])?;
    let qe_answer: QeIdentityAnswer<'_> =
        serde_json::from_slice(&qe.body).map_err(|e| format!("QE identity: {e}"))?;

    // A PCCS serves the root CA CRL (hex); Intel's PCS leaves it to the CRL distribution point.
    let root_ca_crl = match get("/sgx/certification/v4/rootcacrl".to_owned()).await {
        Ok(answer) => {
            let text = String::from_utf8_lossy(&answer.body);
            hex::decode(text.trim()).unwrap_or_else(|_| answer.body.to_vec())
        }
        Err(_) => {
            let base = BaseUrl::parse(INTEL_ROOT_CA_CRL).map_err(|e| e.to_string())?;
            let path = base.prefix.clone();
            let crl_client = Client::new(
                BaseUrl {
                    prefix: String::new(),
                    ..base
                },
                tls,
                timeout,
            );
            let answer = crl_client
                .send(http::Method::GET, &path, &[], Bytes::new())
                .await
                .map_err(|e| format!("root CA CRL: {e}"))?;
            answer.body.to_vec()
        }
    };

    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl: pck_crl.body.to_vec(),
        tcb_info_issuer_chain,
        tcb_info: tcb_answer.tcb_info.get().to_owned(),
        tcb_info_signature: hex::decode(&tcb_answer.signature)
            .map_err(|_| "TCB info signature is not hex".to_owned())?,
        qe_identity_issuer_chain,
        qe_identity: qe_answer.enclave_identity.get().to_owned(),
        qe_identity_signature: hex::decode(&qe_answer.signature)
            .map_err(|_| "QE identity signature is not hex".to_owned())?,
        pck_certificate_chain: Some(pem_chain(&chain)),
    })
}
