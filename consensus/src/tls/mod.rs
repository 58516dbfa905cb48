//! The cluster's PKI: a CA made at bootstrap, node certificates that name their node id, and
//! the TLS configurations QUIC uses.
//!
//! A node certificate carries one DNS name, `n<16 hex digits>.node.quorate`, and one naming its
//! role, `voter.role.quorate` or `storage.role.quorate`, with both the server and the client
//! extended key usage (nodes dial each other). It is valid for a bounded time ([`CertSpec`]) and
//! renewed by its node before it runs out; the node keeps its key across renewals, so the
//! key's fingerprint identifies the node's identity, and a removed identity is refused by the
//! handshake ([`DenyList`]). A member connecting to
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use quorate_base::{NodeId, Role};

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

fn ca_validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2120, 1, 1);
}

fn node_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = time::OffsetDateTime::from(now - CLOCK_SKEW);
    params.not_after = time::OffsetDateTime::from(now + lifetime);
}

/// A new cluster CA: `(certificate PEM, private key PEM)`.
pub fn new_ca(cluster_id: &str) -> Result<(String, String), TlsError> {
    make_ca(format!("quorate cluster {cluster_id} CA"))
}

/// A CA to rotate to: as [`new_ca`], with a name of its own (a random suffix), so that the
/// certificates of the two CAs trusted side by side during the rotation name distinct issuers.
pub fn next_ca(cluster_id: &str) -> Result<(String, String), TlsError> {
    let suffix = hex::encode(rand::random::<[u8; 4]>());
    make_ca(format!("quorate cluster {cluster_id} CA {suffix}"))
}

fn make_ca(name: String) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_validity(&mut params);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificates of a PEM bundle, each as PEM of its own, in order.
pub fn split_pem(bundle: &str) -> Result<Vec<String>, TlsError> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(end) = rest.find(END) {
        let block = &rest[..end + END.len()];
        let start = block
            .find("-----BEGIN CERTIFICATE-----")
            .ok_or_else(|| TlsError::Pem("a certificate without its BEGIN line".into()))?;
        let pem = format!("{}\n", &block[start..]);
        certs(&pem)?;
        out.push(pem);
        rest = &rest[end + END.len()..];
    }
    if out.is_empty() {
        return Err(TlsError::Pem("no certificate".into()));
    }
    Ok(out)
}

/// Whether `key_pem` is the private key of the certificate `cert_pem` (the first of it).
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(der) = certs(cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der[0].as_ref()) else {
        return false;
    };
    own_key_fingerprint(key_pem)
        .is_ok_and(|k| k == key_fingerprint(&cert.public_key().subject_public_key.data))
}

/// Whether the node certificate `cert_pem` chains to the CA `ca_pem` and is valid now.
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> bool {
    let (Ok(cert), Ok(ca)) = (certs(cert_pem), certs(ca_pem)) else {
        return false;
    };
    let Some(id) = node_id_of_cert(cert[0].as_ref()) else {
        return false;
    };
    let Ok(roots) = roots_of(&ca[..1]) else {
        return false;
    };
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
    else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(id)) else {
        return false;
    };
    verifier
        .verify_server_cert(&cert[0], &[], &name, &[], UnixTime::now())
        .is_ok()
}

/// The certificate fields of node `id`; whatever a request asked for, these are what is signed.
/// A request carries no role and no validity (`spec` is `None`): the signer decides both.
fn node_params(id: NodeId, spec: Option<&CertSpec>) -> Result<CertificateParams, TlsError> {
    let mut names = vec![node_name(id)];
    if let Some(spec) = spec {
        names.push(role_name(spec.role));
    }
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_name(id));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    match spec {
        Some(spec) => node_validity(&mut params, spec.lifetime),
        None => ca_validity(&mut params),
    }
    Ok(params)
}

/// Issues a certificate for node `id` with a new key, signed by the CA: `(certificate PEM,
/// private key PEM)`. Used by the node that bootstraps a cluster, for itself.
pub fn issue_node_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    id: NodeId,
    spec: &CertSpec,
) -> Result<(String, String), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = node_params(id, Some(spec))?.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new private key, PEM (a node's own: it never leaves the node).
pub fn new_node_key() -> Result<String, TlsError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// A signing request for node `id` with its key `key_pem` (a new member's first certificate,
/// or a renewal: the key stays, so the identity does).
pub fn node_request_with(id: NodeId, key_pem: &str) -> Result<String, TlsError> {
    let key = KeyPair::from_pem(key_pem)?;
    Ok(node_params(id, None)?.serialize_request(&key)?.pem()?)
}

/// A new key and a signing request for node `id`: `(request PEM, private key PEM)`.
pub fn node_request(id: NodeId) -> Result<(String, String), TlsError> {
    let key = new_node_key()?;
    Ok((node_request_with(id, &key)?, key))
}

/// Signs a request for node `id`: the request's signature is checked and its public key kept,
/// but every other field is quorate's (the name of node `id`, its role, both key usages, the
/// validity).
pub fn sign_node_request(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    request_pem: &str,
    id: NodeId,
    spec: &CertSpec,
) -> Result<String, TlsError> {
    let mut request = CertificateSigningRequestParams::from_pem(request_pem)
        .map_err(|e| TlsError::Request(format!("unreadable ({e})")))?;
    request.params = node_params(id, Some(spec))?;
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    Ok(request.signed_by(&issuer)?.pem())
}

/// The fingerprint of a public key (SHA-256 of its bits, hex): what names a node's identity in
/// the registry and on the deny list.
fn key_fingerprint(raw_public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(raw_public_key))
}

/// The key fingerprint of a signing request, once its signature is checked.
pub fn request_key_fingerprint(request_pem: &str) -> Result<String, TlsError> {
    use rcgen::PublicKeyData;
    let request = CertificateSigningRequestParams::from_pem(request_pem)
        .map_err(|e| TlsError::Request(format!("unreadable ({e})")))?;
    Ok(key_fingerprint(request.public_key.der_bytes()))
}

/// The key fingerprint of a private key PEM (the node's own identity).
pub fn own_key_fingerprint(key_pem: &str) -> Result<String, TlsError> {
    use rcgen::PublicKeyData;
    Ok(key_fingerprint(KeyPair::from_pem(key_pem)?.der_bytes()))
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

/// The key a deny-list entry names for every key of its node (a removal recorded for a node
/// whose record named no key).
pub const ANY_KEY: &str = "*";

/// Identities removed from the cluster, by node id: the fingerprints of their keys (`*`: every
/// key of that node). Shared by the handshake, which refuses them, and the member, which keeps
/// it in step with the registry.
#[derive(Clone, Debug, Default)]
pub struct DenyList(Arc<RwLock<BTreeMap<NodeId, BTreeSet<String>>>>);

impl DenyList {
    /// Replaces the list; returns the nodes newly denied.
    pub fn set(&self, list: BTreeMap<NodeId, BTreeSet<String>>) -> Vec<NodeId> {
        let Ok(mut cur) = self.0.write() else {
            return Vec::new();
        };
        let new: Vec<NodeId> = list
            .iter()
            .filter(|(id, keys)| cur.get(id) != Some(keys))
            .map(|(id, _)| *id)
            .collect();
        *cur = list;
        new
    }

    /// Whether node `id` with key `key` was removed.
    pub fn denies(&self, id: NodeId, key: &str) -> bool {
        self.0.read().is_ok_and(|l| {
            l.get(&id)
                .is_some_and(|keys| keys.contains(key) || keys.contains(ANY_KEY))
        })
    }
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

/// What the handshake says to a removed node.
pub const REMOVED: &str = "this node's identity was removed from the cluster";

/// The server's check of a member's certificate: the CA's chain and validity (webpki), then
/// quorate's own: it names one node, whose identity is not on the deny list.
#[derive(Debug)]
struct MemberVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    deny: DenyList,
}

impl rustls::server::danger::ClientCertVerifier for MemberVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let facts = cert_facts(end_entity.as_ref())
            .ok_or_else(|| rustls::Error::General("the certificate names no node".to_string()))?;
        if self.deny.denies(facts.id, &facts.key) {
            return Err(rustls::Error::General(REMOVED.to_string()));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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
    /// Whatever CA the server presents, as long as the server's certificate names this node:
    /// the node a forming peer was seen as (zero-configuration formation asks the node that
    /// forms the cluster directly, before its advertisement carries the CA). It trusts no
    /// more than the advertisement that named the node and would name the CA.
    Node(NodeId),
}

/// What a joiner's handshake says of a member whose certificate names another node than the
/// one expected.
pub const OTHER_NODE: &str = "the node's certificate names another node than the one expected";

/// What a joiner's handshake says of a member whose certificate does not state the voter role.
pub const NOT_A_VOTER: &str =
    "the node is not a voter (its certificate states another role): only voters admit nodes";

/// Verifies a cluster node's certificate for a joiner: the CA comes with the server's chain and
/// must match the pin (or is taken on first use); the node certificate must chain to it, name
/// a node and state the voter role (only voters admit nodes: a storage node that holds the
/// joiner's connection could relay the join). The CA it accepted is kept for the caller.
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
        // The CAs the server presents that this joiner would trust: the pinned one, or any
        // (two during a CA rotation); the first its certificate chains to is accepted.
        let candidates: Vec<&CertificateDer<'_>> = match &self.trust {
            Trust::Pinned(pin) => intermediates
                .iter()
                .filter(|c| matches_pin(&der_fingerprint(c.as_ref()), pin))
                .collect(),
            Trust::FirstUse | Trust::Node(_) => intermediates.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(refuse(match self.trust {
                Trust::Pinned(_) => FOREIGN_CA,
                _ => "the node presents no CA certificate",
            }));
        }
        let id = node_id_of_cert(end_entity.as_ref())
            .ok_or_else(|| refuse("the node's certificate names no node"))?;
        if let Trust::Node(expected) = &self.trust
            && *expected != id
        {
            return Err(refuse(OTHER_NODE));
        }
        let name = ServerName::try_from(node_name(id)).map_err(|e| refuse(&e.to_string()))?;
        let mut accepted = None;
        let mut last_error = refuse(FOREIGN_CA);
        for ca in candidates {
            let ca = ca.clone().into_owned();
            let roots = roots_of(std::slice::from_ref(&ca)).map_err(|e| refuse(&e.to_string()))?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                self.provider.clone(),
            )
            .build()
            .map_err(|e| refuse(&e.to_string()))?;
            match inner.verify_server_cert(end_entity, &[], &name, ocsp_response, now) {
                Ok(v) => {
                    accepted = Some((ca, v));
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let (ca, verified) = accepted.ok_or(last_error)?;
        if cert_facts(end_entity.as_ref()).and_then(|f| f.role) != Some(Role::Voter) {
            return Err(refuse(NOT_A_VOTER));
        }
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
mod tests;
