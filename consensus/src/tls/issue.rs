//! Making certificates: the cluster CA (and the next one a rotation moves to), node
//! certificates and requests signed with quorate's own fields only, key fingerprints, and
//! the checks of a PEM bundle, a key and an issuer.

use std::sync::Arc;

use quorate_base::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{
    CertSpec, TlsError, ca_validity, certs, node_id_of_cert, node_name, node_validity, provider,
    role_name, roots_of,
};

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
pub(super) fn key_fingerprint(raw_public_key: &[u8]) -> String {
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
