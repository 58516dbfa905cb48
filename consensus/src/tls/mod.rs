//! The cluster's PKI and the TLS configurations QUIC uses (TLS 1.3, ALPN `quorate/1`, ring
//! passed explicitly, never installed process-wide).
//!
//! A node certificate names its node (`n<16 hex>.node.quorate`) and its role
//! (`<role>.role.quorate`), is valid for a bounded time ([`CertSpec`]) and is renewed with the
//! same key, so the key's fingerprint is the node's identity. Members trust only the CAs the
//! registry names and refuse removed identities ([`DenyList`]); a member dialing node X asks
//! for X's name. A joiner dials without a certificate and checks the member it meets
//! ([`JoinVerifier`]); its key never leaves it (it sends a request, [`node_request`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quorate_base::{NodeId, Role};

use rcgen::CertificateParams;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

mod deny;
mod issue;
mod verify;

pub use deny::{ANY_KEY, DenyList};
use issue::key_fingerprint;
pub use issue::{
    issue_node_cert, issued_by, key_matches, new_ca, new_node_key, next_ca, node_request,
    node_request_with, own_key_fingerprint, request_key_fingerprint, sign_node_request, split_pem,
};
use verify::MemberVerifier;
pub use verify::{FOREIGN_CA, JoinVerifier, NOT_A_VOTER, OTHER_NODE, REMOVED, Trust};

/// ALPN protocol id of quorate's QUIC.
pub const ALPN: &[u8] = b"quorate/1";

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making or signing a certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// PEM that does not parse.
    #[error("pem: {0}")]
    Pem(String),
    /// A verifier could not be built.
    #[error("tls verifier: {0}")]
    Verifier(String),
    /// A certificate signing request asks for something it may not have.
    #[error("certificate request: {0}")]
    Request(String),
}

/// The DNS name a node's certificate carries.
pub fn node_name(id: NodeId) -> String {
    format!("n{id}.node.quorate")
}

/// The node id in a node name, if it is one.
pub fn node_id_from_name(name: &str) -> Option<NodeId> {
    let hex = name.strip_prefix('n')?.strip_suffix(".node.quorate")?;
    // Lowercase only: the name is what `node_name` wrote.
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex.parse().ok()
}

/// The DNS name that carries a node certificate's role.
pub fn role_name(role: Role) -> String {
    format!("{role}.role.quorate")
}

/// What a node certificate is issued with: the node's role and how long it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertSpec {
    /// The role the certificate states (the registry's, when the node is recorded).
    pub role: Role,
    /// How long it is valid from its issue.
    pub lifetime: Duration,
}

/// The default lifetime of a node certificate (as Docker Swarm's): 90 days, renewed by the
/// node once two thirds of it have passed.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Certificates are dated a minute back, for clocks that differ a little.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

pub(super) fn ca_validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2120, 1, 1);
}

pub(super) fn node_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = time::OffsetDateTime::from(now - CLOCK_SKEW);
    params.not_after = time::OffsetDateTime::from(now + lifetime);
}

/// What a node certificate says: whom it names, in which role, with which key, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// The node it names.
    pub id: NodeId,
    /// The role it states (`None`: a certificate from before roles were stated).
    pub role: Option<Role>,
    /// Its key's fingerprint.
    pub key: String,
    /// When it was issued (its `notBefore`, a minute before the signing).
    pub not_before: SystemTime,
    /// When it runs out.
    pub not_after: SystemTime,
}

/// Reads a DER node certificate (without verifying it: the handshake does).
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = Vec::new();
    let mut roles = Vec::new();
    for n in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::DNSName(d) = n {
            if let Some(id) = node_id_from_name(d) {
                ids.push(id);
            } else if let Some(r) = d.strip_suffix(".role.quorate") {
                roles.push(r.parse::<Role>().ok()?);
            }
        }
    }
    if ids.len() != 1 || roles.len() > 1 {
        return None;
    }
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    };
    Some(CertFacts {
        id: ids[0],
        role: roles.first().copied(),
        key: key_fingerprint(&cert.public_key().subject_public_key.data),
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

/// [`cert_facts`] of the first certificate of a PEM chain.
pub fn cert_facts_pem(cert_pem: &str) -> Result<CertFacts, TlsError> {
    cert_facts(certs(cert_pem)?[0].as_ref())
        .ok_or_else(|| TlsError::Request("the certificate names no node".into()))
}

pub(super) fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let list = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if list.is_empty() {
        return Err(TlsError::Pem("no certificate".into()));
    }
    Ok(list)
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn der_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// SHA-256 of the CA certificate (DER), lowercase hex: what join tokens pin.
pub fn ca_fingerprint(ca_cert_pem: &str) -> Result<String, TlsError> {
    Ok(der_fingerprint(certs(ca_cert_pem)?[0].as_ref()))
}

/// Checks that a key PEM parses, and that a certificate PEM parses and names node `id`.
pub fn check_node_cert(cert_pem: &str, key_pem: &str, id: NodeId) -> Result<(), TlsError> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))?;
    match node_id_of_cert(certs(cert_pem)?[0].as_ref()) {
        Some(named) if named == id => Ok(()),
        Some(named) => Err(TlsError::Request(format!(
            "the certificate names node {named}, not {id}"
        ))),
        None => Err(TlsError::Request("the certificate names no node".into())),
    }
}

/// The node id named by a DER certificate, if it names exactly one node.
pub fn node_id_of_cert(der: &[u8]) -> Option<NodeId> {
    cert_facts(der).map(|f| f.id)
}

/// What a member needs to speak mutual TLS: the CA certificate, its own certificate and key.
#[derive(Clone)]
pub struct Identity {
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// This node's certificate, PEM.
    pub cert_pem: String,
    /// This node's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { .. }") // never print keys
    }
}

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn roots_of(ca: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c.clone())?;
    }
    Ok(roots)
}

impl Identity {
    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        Ok((certs(&self.cert_pem)?, key))
    }

    /// Server side: TLS 1.3; a client certificate, when presented, must chain to the CA, be
    /// valid now, name one node, and not be of an identity on `deny` (a removed node). A
    /// client without one is let in (a joiner) and the caller answers it nothing but joins.
    /// The CA certificate goes out with the node's, so that a joiner can pin it.
    pub fn server_config(&self, deny: &DenyList) -> Result<rustls::ServerConfig, TlsError> {
        let ca = certs(&self.ca_pem)?;
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots_of(&ca)?),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let verifier = Arc::new(MemberVerifier {
            inner,
            deny: deny.clone(),
        });
        let (mut chain, key) = self.chain_and_key()?;
        chain.extend(ca);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Client side: TLS 1.3, trusts only the CA, presents this node's certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let (chain, key) = self.chain_and_key()?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots_of(&certs(&self.ca_pem)?)?)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
