//! The CAs a member trusts and the keys it holds of them ([`CaSet`]), as the registry names
//! them: the current CA, and the next one beside it during a rotation (see [`super::ca`]).
//! Pure but for [`CaSet::save`].

use crate::files::Files;
use crate::registry::Registry;
use crate::tls::{self, TlsError};

/// One CA as this node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ca {
    /// Its certificate, PEM.
    pub(super) pem: String,
    /// SHA-256 of its certificate, hex.
    pub(super) fingerprint: String,
    /// Its private key, PEM: voter-role nodes hold it, storage nodes never.
    pub(super) key: Option<String>,
}

impl Ca {
    pub(super) fn new(pem: &str, key: Option<String>) -> Result<Ca, TlsError> {
        Ok(Ca {
            fingerprint: tls::ca_fingerprint(pem)?,
            pem: pem.to_string(),
            key,
        })
    }
}

/// The CAs a member trusts: the current one, and the next one during a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CaSet {
    pub(super) current: Ca,
    pub(super) next: Option<Ca>,
}

impl CaSet {
    /// The set the registry asks for (`ca`, `next`: its CA fields), from the CAs this node
    /// holds (`pool`). Without a recorded CA, the current one is the held CA of fingerprint
    /// `preferred` (the one the node joined with), else the first held one that is not the next.
    pub(super) fn settle(
        pool: &[Ca],
        preferred: &str,
        ca: Option<&str>,
        next: Option<&str>,
    ) -> Result<CaSet, TlsError> {
        let find = |pem: &str| -> Result<Ca, TlsError> {
            let fp = tls::ca_fingerprint(pem)?;
            match pool.iter().find(|c| c.fingerprint == fp) {
                Some(held) => Ok(held.clone()),
                None => Ca::new(pem, None),
            }
        };
        let next_fp = next.map(tls::ca_fingerprint).transpose()?;
        let current = match ca {
            Some(pem) => find(pem)?,
            None => {
                let mut candidates = pool
                    .iter()
                    .filter(|c| Some(&c.fingerprint) != next_fp.as_ref());
                let first = candidates.clone().next();
                candidates
                    .find(|c| c.fingerprint == preferred)
                    .or(first)
                    .or(pool.first())
                    .cloned()
                    .ok_or_else(|| TlsError::Pem("no CA certificate".into()))?
            }
        };
        let next = match next {
            Some(pem) if next_fp.as_ref() != Some(&current.fingerprint) => Some(find(pem)?),
            _ => None,
        };
        Ok(CaSet { current, next })
    }

    /// What the files hold: the trusted certificates (`bundle`) and the CA keys, each key
    /// given to the certificate it is the key of.
    pub(super) fn load(
        bundle: &str,
        keys: &[String],
        preferred: &str,
        registry: &Registry,
    ) -> Result<CaSet, TlsError> {
        let pool = tls::split_pem(bundle)?
            .into_iter()
            .map(|pem| {
                let key = keys.iter().find(|k| tls::key_matches(&pem, k)).cloned();
                Ca::new(&pem, key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::settle(
            &pool,
            preferred,
            registry.ca.as_deref(),
            registry.ca_next.as_deref(),
        )
    }

    pub(super) fn pool(&self) -> Vec<Ca> {
        self.cas().cloned().collect()
    }

    /// The CAs held, the current one first.
    pub(super) fn cas(&self) -> impl Iterator<Item = &Ca> {
        std::iter::once(&self.current).chain(self.next.as_ref())
    }

    /// The certificates members trust, PEM: the current CA's first.
    pub(super) fn trusted(&self) -> String {
        self.first(&self.current.fingerprint)
    }

    /// The trusted certificates with the CA of fingerprint `fp` first (a joiner checks that
    /// the first is the CA it verified).
    pub(super) fn first(&self, fp: &str) -> String {
        let mut cas: Vec<&Ca> = self.cas().collect();
        cas.sort_by_key(|c| c.fingerprint != fp);
        cas.iter().map(|c| c.pem.as_str()).collect()
    }

    /// Whether a CA of this fingerprint is trusted.
    pub(super) fn trusts(&self, fp: &str) -> bool {
        self.cas().any(|c| c.fingerprint == fp)
    }

    /// Whether this node holds a CA key.
    pub(super) fn holds_key(&self) -> bool {
        self.cas().any(|c| c.key.is_some())
    }

    /// The CA that signs certificates now: the next one once the registry records a rotation
    /// (`registry_next`), else the current one; with its key.
    pub(super) fn signer(&self, registry_next: Option<&str>) -> Result<(&str, &str), String> {
        let ca = match registry_next {
            Some(pem) => self
                .next
                .as_ref()
                .filter(|n| n.pem == pem)
                .ok_or("a CA rotation is under way and this node does not hold the next CA")?,
            None => &self.current,
        };
        match &ca.key {
            Some(k) => Ok((&ca.pem, k)),
            None => Err(match registry_next {
                Some(_) => "a CA rotation is under way and this node does not hold the next CA's key (run the rotation again)".into(),
                None => "this node holds no CA key and cannot sign certificates".into(),
            }),
        }
    }

    pub(super) fn save(&self, files: &Files) -> Result<(), String> {
        files
            .save_ca(
                &self.trusted(),
                self.current.key.as_deref(),
                self.next.as_ref().and_then(|n| n.key.as_deref()),
            )
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(n: u8, key: bool) -> Ca {
        let (pem, k) = tls::next_ca(&format!("{n:016x}")).expect("ca");
        Ca::new(&pem, key.then_some(k)).expect("ca")
    }

    #[test]
    fn the_registry_decides_which_held_ca_is_current_and_which_is_next() {
        let (old, new) = (ca(1, true), ca(2, true));
        let pool = [old.clone(), new.clone()];
        let none = CaSet::settle(&pool[..1], &old.fingerprint, None, None).expect("settle");
        assert_eq!(
            (none.current.clone(), none.next.clone()),
            (old.clone(), None)
        );

        let rotating =
            CaSet::settle(&pool, &old.fingerprint, None, Some(&new.pem)).expect("settle");
        assert_eq!(rotating.current, old);
        assert_eq!(rotating.next, Some(new.clone()), "the held key is kept");
        assert!(rotating.trusts(&new.fingerprint) && rotating.trusts(&old.fingerprint));
        assert_eq!(rotating.signer(Some(&new.pem)).expect("signer").0, new.pem);
        assert_eq!(rotating.signer(None).expect("signer").0, old.pem);

        // A node that joined trusting the next CA first still takes the registry's view.
        let joined = CaSet::settle(&pool, &new.fingerprint, None, Some(&new.pem)).expect("settle");
        assert_eq!(joined, rotating);

        let switched = CaSet::settle(&rotating.pool(), &old.fingerprint, Some(&new.pem), None)
            .expect("settle");
        assert_eq!(switched.current, new);
        assert_eq!(switched.next, None, "the old CA is no longer trusted");
        assert!(!switched.trusts(&old.fingerprint));
        assert_eq!(switched.trusted(), new.pem);
    }

    #[test]
    fn a_storage_node_learns_the_next_ca_without_its_key_and_cannot_sign() {
        let (old, new) = (ca(1, false), ca(2, true));
        let set = CaSet::settle(
            std::slice::from_ref(&old),
            &old.fingerprint,
            None,
            Some(&new.pem),
        )
        .expect("settle");
        assert_eq!(set.next.as_ref().map(|n| n.key.is_none()), Some(true));
        assert!(!set.holds_key());
        assert!(set.signer(Some(&new.pem)).is_err());
        assert!(set.signer(None).is_err());
        assert!(set.first(&new.fingerprint).starts_with(&new.pem));
    }

    #[test]
    fn keys_are_given_to_the_certificates_they_belong_to() {
        let (old, new) = (ca(1, true), ca(2, true));
        let bundle = format!("{}{}", old.pem, new.pem);
        let mut registry = Registry {
            ca_next: Some(new.pem.clone()),
            ..Registry::default()
        };
        // The keys in either order: each goes to its own certificate.
        let keys = [new.key.clone().expect("key"), old.key.clone().expect("key")];
        let set = CaSet::load(&bundle, &keys, &old.fingerprint, &registry).expect("load");
        assert_eq!(
            (set.current.clone(), set.next.clone()),
            (old.clone(), Some(new.clone()))
        );
        registry.ca = registry.ca_next.take();
        let set = CaSet::load(&bundle, &keys[..1], &old.fingerprint, &registry).expect("load");
        assert_eq!((set.current, set.next), (new, None));
    }
}
