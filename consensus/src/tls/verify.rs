//! The two certificate verifiers: a member's check of another member's certificate (the CA,
//! then quorate's own rules and the deny list), and a joiner's check of the member it dials.

use std::sync::{Arc, Mutex};

use quorate_base::{NodeId, Role};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{
    ALPN, DenyList, TlsError, cert_facts, der_fingerprint, node_id_of_cert, node_name, provider,
    roots_of,
};

/// What the handshake says to a removed node.
pub const REMOVED: &str = "this node's identity was removed from the cluster";

/// The server's check of a member's certificate: the CA's chain and validity (webpki), then
/// quorate's own: it names one node, whose identity is not on the deny list.
#[derive(Debug)]
pub(super) struct MemberVerifier {
    pub(super) inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub(super) deny: DenyList,
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

/// How many of the CAs a server presents a joiner tries: a member presents its current CA, and
/// the next one during a rotation.
const PRESENTED_CAS: usize = 2;

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

pub(super) fn matches_pin(fingerprint: &str, pin: &str) -> bool {
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
        // (a member presents two during a CA rotation, so no more than that are tried); the
        // first its certificate chains to is accepted.
        let candidates: Vec<&CertificateDer<'_>> = match &self.trust {
            Trust::Pinned(pin) => intermediates
                .iter()
                .filter(|c| matches_pin(&der_fingerprint(c.as_ref()), pin))
                .take(PRESENTED_CAS)
                .collect(),
            Trust::FirstUse | Trust::Node(_) => intermediates.iter().take(PRESENTED_CAS).collect(),
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
