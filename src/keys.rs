//! Where signet's keys come from (`signet.signing.key_source`), one key per role.
//!
//! Every key has one role (ACI §3.1: a receipt key never doubles as another), listed in
//! [`ROLES`]: the secp256k1 signing key, the legacy protocol's Ed25519 key, the ACI receipt
//! key, and the two E2EE v2 keys (one per suite). A new role is one more [`KeyRole`] in that
//! table.
//!
//! - `random`: each role's 32 bytes come from the operating system's RNG at start.
//! - `dstack`: each role's key is derived by the dstack KMS for this application, asked of
//!   the agent with `GetKey` at path `signet/v1/<role>` and purpose `signet:<role>`: every
//!   instance of the same application, restarted or replicated, gets the same keys. A
//!   secp256k1 role uses the derived key itself, so the agent's signature chain covers it
//!   directly; any other role's seed is SHA-256 over a domain tag, the role's name and the
//!   derived key, and the derived key signs (EIP-191) `signet-key-custody:v1:<role>:<public
//!   key hex>`, linking the role's key to the chain.
//!
//! [`KeyCustody`] is what reports publish of this (ACI §3.3: a verifier checks custody from
//! the evidence): the source, and for `dstack` per role the path, purpose, the derived key's
//! compressed public key, the chain as the agent gave it and the link signature. No secret
//! is ever formatted; every buffer holding one is zeroized.

use crate::config::KeySource;
use sha2::{Digest, Sha256};
use signet_attest::dstack::DstackAgent;
use signet_core::e2ee::crypto::{SecretKey, Suite};
use signet_core::signing::ed25519::Ed25519Signer;
use signet_core::signing::{Signer, custody_link_text};
use zeroize::Zeroizing;

/// What a role's 32 bytes make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A secp256k1 secret key.
    Secp256k1,
    /// An Ed25519 seed (RFC 8032 private key).
    Ed25519,
    /// An E2EE v2 secret key of this suite (it only ever decrypts).
    E2ee(Suite),
}

/// One key role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRole {
    /// Its name, in KMS paths and in reports.
    pub name: &'static str,
    /// The kind of key.
    pub kind: KeyKind,
}

impl KeyRole {
    /// The KMS path of the role's key.
    pub fn dstack_path(&self) -> String {
        format!("signet/v1/{}", self.name)
    }

    /// The purpose the KMS chain's first signature names.
    pub fn dstack_purpose(&self) -> String {
        format!("signet:{}", self.name)
    }
}

/// The secp256k1 key of the legacy protocol (EIP-191 signatures, `signing_address`).
pub const SIGNING: KeyRole = KeyRole {
    name: "signing",
    kind: KeyKind::Secp256k1,
};
/// The legacy protocol's Ed25519 key (`signing_algo=ed25519`).
pub const LEGACY_ED25519: KeyRole = KeyRole {
    name: "legacy-ed25519",
    kind: KeyKind::Ed25519,
};
/// The ACI receipt key.
pub const ACI_RECEIPT: KeyRole = KeyRole {
    name: "aci-receipt",
    kind: KeyKind::Ed25519,
};

/// The E2EE v2 key of the `x25519-aes-256-gcm-hkdf-sha256` suite.
pub const E2EE_X25519: KeyRole = KeyRole {
    name: "e2ee-x25519",
    kind: KeyKind::E2ee(Suite::X25519),
};
/// The E2EE v2 key of the `secp256k1-aes-256-gcm-hkdf-sha256` suite. Its seed is derived
/// like an Ed25519 role's, never the KMS key itself: the KMS key signs, this one decrypts.
pub const E2EE_SECP256K1: KeyRole = KeyRole {
    name: "e2ee-secp256k1",
    kind: KeyKind::E2ee(Suite::Secp256k1),
};

/// Every role signet holds a key for.
pub const ROLES: &[KeyRole] = &[
    SIGNING,
    LEGACY_ED25519,
    ACI_RECEIPT,
    E2EE_X25519,
    E2EE_SECP256K1,
];

/// Domain separation for seeds derived from a KMS key.
const SEED_DOMAIN: &[u8] = b"signet dstack key seed v1\0";

/// Why the keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The agent could not be reached or did not give a key.
    #[error("signet.signing.key_source dstack: {0}")]
    Dstack(String),
    /// A derived secp256k1 key is not a valid secret key.
    #[error("signet.signing.key_source: the {role} key is not a valid secp256k1 key")]
    Invalid {
        /// Which role.
        role: &'static str,
    },
    /// A role was asked for that was not provisioned (a programming error).
    #[error("no {0} key was provisioned")]
    Missing(&'static str),
}

/// One role's custody record (for `dstack`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleCustody {
    /// The role.
    pub role: &'static str,
    /// The KMS path.
    pub path: String,
    /// The purpose the chain names.
    pub purpose: String,
    /// The derived key's compressed secp256k1 public key, hex: what the chain's first
    /// signature covers (`purpose:<this>`).
    pub kms_public_key: String,
    /// The chain as the agent gave it.
    pub signature_chain: Vec<String>,
    /// The role's own public key: an EIP-55 address (secp256k1) or 32 bytes hex (Ed25519).
    pub public_key: String,
    /// For a role whose key is not the derived key itself: the derived key's EIP-191
    /// signature over `signet-key-custody:v1:<role>:<public_key>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_signature: Option<String>,
}

/// Where the keys came from, as reports show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyCustody {
    /// `random` or `dstack`.
    pub source: &'static str,
    /// Per role, for `dstack`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<RoleCustody>,
}

/// Every role's 32 bytes, and their custody.
pub struct ProvisionedKeys {
    secrets: Vec<(KeyRole, Zeroizing<[u8; 32]>)>,
    custody: KeyCustody,
}

impl std::fmt::Debug for ProvisionedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionedKeys")
            .field("custody", &self.custody)
            .finish_non_exhaustive()
    }
}

impl ProvisionedKeys {
    /// Draws every role's key from the operating system's RNG.
    pub fn random() -> Self {
        use rand_core::{OsRng, RngCore};
        let secrets = ROLES
            .iter()
            .map(|role| {
                let mut secret = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(secret.as_mut());
                (*role, secret)
            })
            .collect();
        Self {
            secrets,
            custody: KeyCustody {
                source: KeySource::Random.as_str(),
                keys: Vec::new(),
            },
        }
    }

    /// Asks the dstack agent for every role's key (one `GetKey` each).
    pub async fn from_dstack(agent: &DstackAgent) -> Result<Self, KeyError> {
        let mut secrets = Vec::with_capacity(ROLES.len());
        let mut records = Vec::with_capacity(ROLES.len());
        for role in ROLES {
            let (path, purpose) = (role.dstack_path(), role.dstack_purpose());
            let derived = agent
                .get_key(&path, &purpose)
                .await
                .map_err(|e| KeyError::Dstack(e.to_string()))?;
            let kms_key = Signer::from_secret_bytes(&derived.secret)
                .map_err(|_| KeyError::Invalid { role: role.name })?;
            // The secp256k1 role uses the KMS key itself, so the chain covers it directly;
            // any other role's seed is derived from it, and the KMS key vouches for the
            // role's public key.
            let secret = match role.kind {
                KeyKind::Secp256k1 => Zeroizing::new(*derived.secret),
                _ => derived_seed(role, &derived.secret),
            };
            let public_key = public_key_of(role, &secret)?;
            let link_signature = match role.kind {
                KeyKind::Secp256k1 => None,
                _ => Some(
                    kms_key
                        .sign_message(custody_link_text(role.name, &public_key).as_bytes())
                        .map_err(|_| KeyError::Invalid { role: role.name })?
                        .to_hex(),
                ),
            };
            records.push(RoleCustody {
                role: role.name,
                path,
                purpose,
                kms_public_key: hex::encode(compressed(kms_key.public_key())),
                signature_chain: derived.signature_chain,
                public_key,
                link_signature,
            });
            secrets.push((*role, secret));
        }
        Ok(Self {
            secrets,
            custody: KeyCustody {
                source: KeySource::Dstack.as_str(),
                keys: records,
            },
        })
    }

    fn secret(&self, role: KeyRole) -> Result<&Zeroizing<[u8; 32]>, KeyError> {
        self.secrets
            .iter()
            .find(|(held, _)| *held == role)
            .map(|(_, secret)| secret)
            .ok_or(KeyError::Missing(role.name))
    }

    /// The secp256k1 signer of `role`.
    pub fn signer(&self, role: KeyRole) -> Result<Signer, KeyError> {
        Signer::from_secret_bytes(self.secret(role)?)
            .map_err(|_| KeyError::Invalid { role: role.name })
    }

    /// The Ed25519 signer of `role`.
    pub fn ed25519(&self, role: KeyRole) -> Result<Ed25519Signer, KeyError> {
        Ok(Ed25519Signer::from_seed(self.secret(role)?))
    }

    /// The 32 bytes of `role`, for a key kind this module does not build itself.
    pub fn seed(&self, role: KeyRole) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        self.secret(role).map(|secret| Zeroizing::new(**secret))
    }

    /// Where the keys came from, as reports show it.
    pub fn custody(&self) -> &KeyCustody {
        &self.custody
    }
}

/// The public key a role's 32 bytes make, as reports show it: an EIP-55 address (secp256k1),
/// 64 hex (Ed25519), or the hex the ACI keyset publishes (E2EE). A new kind of key adds its
/// arm here.
fn public_key_of(role: &KeyRole, secret: &[u8; 32]) -> Result<String, KeyError> {
    match role.kind {
        KeyKind::Secp256k1 => Signer::from_secret_bytes(secret)
            .map(|signer| signer.address().to_checksum())
            .map_err(|_| KeyError::Invalid { role: role.name }),
        KeyKind::Ed25519 => Ok(Ed25519Signer::from_seed(secret).public_key_hex()),
        KeyKind::E2ee(suite) => SecretKey::from_seed(suite, secret)
            .map(|key| key.public_key().to_hex())
            .ok_or(KeyError::Invalid { role: role.name }),
    }
}

/// The SEC1 compressed form of a 64-byte uncompressed secp256k1 public key (x ‖ y).
fn compressed(xy: &[u8; 64]) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = if xy[63] & 1 == 0 { 0x02 } else { 0x03 };
    out[1..].copy_from_slice(&xy[..32]);
    out
}

/// A role's seed from its KMS key: never the KMS key itself, so one key serves one
/// algorithm only.
fn derived_seed(role: &KeyRole, kms_secret: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(SEED_DOMAIN);
    hasher.update(role.name.as_bytes());
    hasher.update([0]);
    hasher.update(kms_secret);
    Zeroizing::new(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_distinct_names_and_paths() {
        let mut paths: Vec<String> = ROLES.iter().map(KeyRole::dstack_path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), ROLES.len());
        assert_eq!(ACI_RECEIPT.dstack_path(), "signet/v1/aci-receipt");
        assert_eq!(SIGNING.dstack_purpose(), "signet:signing");
    }

    #[test]
    fn random_keys_differ_per_role_and_per_draw() {
        let a = ProvisionedKeys::random();
        let b = ProvisionedKeys::random();
        assert_ne!(
            a.signer(SIGNING).unwrap().address(),
            b.signer(SIGNING).unwrap().address()
        );
        assert_ne!(
            a.ed25519(LEGACY_ED25519).unwrap().public_key(),
            a.ed25519(ACI_RECEIPT).unwrap().public_key()
        );
        assert_eq!(a.custody().source, "random");
        assert!(!format!("{a:?}").contains(&hex::encode(*a.seed(SIGNING).unwrap())));
    }

    #[test]
    fn seeds_are_per_role_and_not_the_kms_key() {
        let kms = [7u8; 32];
        let receipt = derived_seed(&ACI_RECEIPT, &kms);
        assert_ne!(*receipt, kms);
        assert_ne!(*receipt, *derived_seed(&LEGACY_ED25519, &kms));
        assert_eq!(*receipt, *derived_seed(&ACI_RECEIPT, &kms));
    }
}
