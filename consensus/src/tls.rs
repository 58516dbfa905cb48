//! The cluster's PKI: a CA made at bootstrap, node certificates that name their node id, and
//! the TLS configurations QUIC uses.
//!
//! A node certificate carries one DNS name, `n<16 hex digits>.node.quorate`, with both the
//! server and the client extended key usage (nodes dial each other). A member connecting to
//! node X asks for X's name, so a peer whose certificate names another node is refused by the
//! handshake; a server reads the client's node id from its certificate. Members trust only the
//! cluster CA and speak only TLS 1.3 with the `quorate/1` ALPN.
//!
//! A node that is not a member yet dials without a client certificate (the server allows that,
//! and then answers nothing but a join request). It checks the server against a CA it pins by
//! fingerprint (from a join token), or, for an open cluster, against the CA the server presents
//! (trust on first use); either way the server's certificate must chain to that CA and name a
//! node. Its private key never leaves it: it sends a certificate signing request, and the
//! cluster signs a certificate for the node id it asked for, with quorate's own fields only.
//!
//! The crypto provider is passed explicitly (ring), never installed process-wide.

use quorate_base::NodeId;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

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

fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2120, 1, 1);
}

/// A new cluster CA: `(certificate PEM, private key PEM)`.
pub fn new_ca(cluster_id: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("quorate cluster {cluster_id} CA"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate fields of node `id`; whatever a request asked for, these are what is signed.
fn node_params(id: NodeId) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(vec![node_name(id)])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name(id));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params);
    Ok(params)
}

/// Issues a certificate for node `id` with a new key, signed by the CA: `(certificate PEM,
/// private key PEM)`. Used by the node that bootstraps a cluster, for itself.
pub fn issue_node_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    id: NodeId,
) -> Result<(String, String), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = node_params(id)?.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new key and a signing request for node `id`: `(request PEM, private key PEM)`.
pub fn node_request(id: NodeId) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let csr = node_params(id)?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Signs a request for node `id`: the request's signature is checked and its public key kept,
/// but every other field is quorate's (the name of node `id`, both key usages, the validity).
pub fn sign_node_request(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    request_pem: &str,
    id: NodeId,
) -> Result<String, TlsError> {
    let mut request = CertificateSigningRequestParams::from_pem(request_pem)
        .map_err(|e| TlsError::Request(format!("unreadable ({e})")))?;
    request.params = node_params(id)?;
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    Ok(request.signed_by(&issuer)?.pem())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => node_id_from_name(d),
        _ => None,
    });
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots_of(ca: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, TlsError> {
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

    /// Server side: TLS 1.3; a client certificate, when presented, must chain to the CA. A
    /// client without one is let in (a joiner) and the caller answers it nothing but joins.
    /// The CA certificate goes out with the node's, so that a joiner can pin it.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let ca = certs(&self.ca_pem)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots_of(&ca)?),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
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

/// What a joiner's handshake says of a member whose CA is not the pinned one.
pub const FOREIGN_CA: &str =
    "the node does not present the pinned CA (another cluster, or a node in the middle)";

/// How a joiner trusts the cluster it dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The CA whose certificate has this SHA-256 fingerprint (hex; a prefix of at least 16
    /// digits, as mDNS advertises, is accepted too).
    Pinned(String),
    /// Whatever CA the server presents (an open cluster, trust on first use).
    FirstUse,
}

/// Verifies a cluster node's certificate for a joiner: the CA comes with the server's chain and
/// must match the pin (or is taken on first use); the node certificate must chain to it and
/// name a node. The CA it accepted is kept for the caller.
#[derive(Debug)]
pub struct JoinVerifier {
    trust: Trust,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen_ca: Mutex<Option<CertificateDer<'static>>>,
}

impl JoinVerifier {
    /// A verifier with this trust.
    pub fn new(trust: Trust) -> Arc<JoinVerifier> {
        Arc::new(JoinVerifier {
            trust,
            provider: provider(),
            seen_ca: Mutex::new(None),
        })
    }

    /// The CA certificate (DER) of the last server accepted.
    pub fn accepted_ca(&self) -> Option<CertificateDer<'static>> {
        self.seen_ca.lock().ok().and_then(|s| s.clone())
    }

    /// A client configuration that verifies servers with `self` and presents no certificate.
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

fn matches_pin(fingerprint: &str, pin: &str) -> bool {
    let pin = pin.to_ascii_lowercase();
    pin.len() >= 16 && fingerprint.starts_with(&pin)
}

impl ServerCertVerifier for JoinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refuse = |m: &str| rustls::Error::General(m.to_string());
        let ca = match &self.trust {
            Trust::Pinned(pin) => intermediates
                .iter()
                .find(|c| matches_pin(&der_fingerprint(c.as_ref()), pin))
                .ok_or_else(|| refuse(FOREIGN_CA))?,
            Trust::FirstUse => intermediates
                .last()
                .ok_or_else(|| refuse("the node presents no CA certificate"))?,
        };
        let ca = ca.clone().into_owned();
        let id = node_id_of_cert(end_entity.as_ref())
            .ok_or_else(|| refuse("the node's certificate names no node"))?;
        let roots = roots_of(std::slice::from_ref(&ca)).map_err(|e| refuse(&e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| refuse(&e.to_string()))?;
        let name = ServerName::try_from(node_name(id)).map_err(|e| refuse(&e.to_string()))?;
        let verified = inner.verify_server_cert(end_entity, &[], &name, ocsp_response, now)?;
        if let Ok(mut seen) = self.seen_ca.lock() {
            *seen = Some(ca);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_name_their_node_and_chain_to_the_ca() {
        let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
        let (cert, key) = issue_node_cert(&ca, &ca_key, NodeId::new(0x1234)).expect("issue");
        let der = certs(&cert).expect("pem").remove(0);
        assert_eq!(node_id_of_cert(&der), Some(NodeId::new(0x1234)));
        check_node_cert(&cert, &key, NodeId::new(0x1234)).expect("names its node");
        assert!(check_node_cert(&cert, &key, NodeId::new(0x9)).is_err());
        let id = Identity {
            ca_pem: ca.clone(),
            cert_pem: cert,
            key_pem: key,
        };
        id.server_config().expect("server config");
        id.client_config().expect("client config");
        let fp = ca_fingerprint(&ca).expect("fingerprint");
        assert_eq!(fp.len(), 64);
        let (other_ca, _) = new_ca("00000000000000cd").expect("ca");
        assert_ne!(ca_fingerprint(&other_ca).expect("fp"), fp);
    }

    #[test]
    fn a_signed_request_gets_quorates_fields_not_the_requesters() {
        let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
        // A request asking for node 7's name (and whatever else) is signed for node 8 only.
        let (request, key) = node_request(NodeId::new(7)).expect("request");
        let cert = sign_node_request(&ca, &ca_key, &request, NodeId::new(8)).expect("sign");
        check_node_cert(&cert, &key, NodeId::new(8)).expect("names node 8");
        assert!(sign_node_request(&ca, &ca_key, "not a request", NodeId::new(8)).is_err());
    }

    #[test]
    fn node_names_round_trip() {
        assert_eq!(
            node_id_from_name(&node_name(NodeId::new(42))),
            Some(NodeId::new(42))
        );
        assert_eq!(node_id_from_name("n0000.node.quorate"), None);
        assert_eq!(node_id_from_name("example.com"), None);
    }

    #[test]
    fn pins_match_whole_fingerprints_and_long_prefixes_only() {
        let fp = "ab".repeat(32);
        assert!(matches_pin(&fp, &fp));
        assert!(matches_pin(&fp, &fp[..16]));
        assert!(matches_pin(&fp, &fp.to_ascii_uppercase()));
        assert!(!matches_pin(&fp, &fp[..8]), "a short prefix pins nothing");
        assert!(!matches_pin(&fp, &"cd".repeat(32)));
    }
}
