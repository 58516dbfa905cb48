//! DNS-SD service types: `_name._tcp.local.` checked against RFC 6763 §7 and RFC 6335 §5.1.

/// The service type quorate nodes advertise by default.
pub const DEFAULT_SERVICE_TYPE: &str = "_cluster._tcp.local.";

/// Checks a service type and returns it in canonical form (with the trailing dot).
///
/// The service name has 1 to 15 characters: letters, digits and hyphens, at least one letter,
/// no hyphen first, last or twice in a row. The protocol is `_tcp` or `_udp`; the domain is
/// `local`.
pub fn check_service_type(ty: &str) -> Result<String, String> {
    let trimmed = ty.strip_suffix('.').unwrap_or(ty);
    let parts: Vec<&str> = trimmed.split('.').collect();
    let [name, proto, domain] = parts.as_slice() else {
        return Err(format!("{ty:?} is not of the form _name._tcp.local."));
    };
    let Some(label) = name.strip_prefix('_') else {
        return Err(format!("{ty:?}: the service name must start with '_'"));
    };
    if label.is_empty() || label.len() > 15 {
        return Err(format!(
            "{ty:?}: the service name has 1 to 15 characters after '_', not {}",
            label.len()
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "{ty:?}: the service name may hold only letters, digits and '-'"
        ));
    }
    if !label.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "{ty:?}: the service name needs at least one letter"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') || label.contains("--") {
        return Err(format!(
            "{ty:?}: the service name may not start or end with '-' or hold '--'"
        ));
    }
    if *proto != "_tcp" && *proto != "_udp" {
        return Err(format!("{ty:?}: the protocol is _tcp or _udp, not {proto}"));
    }
    if !domain.eq_ignore_ascii_case("local") {
        return Err(format!(
            "{ty:?}: mDNS works in the domain local, not {domain}"
        ));
    }
    Ok(format!("{name}.{proto}.local."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_types_are_canonicalised() {
        assert_eq!(
            check_service_type("_cluster._tcp.local."),
            Ok(DEFAULT_SERVICE_TYPE.to_string())
        );
        assert_eq!(
            check_service_type("_cluster._tcp.local"),
            Ok(DEFAULT_SERVICE_TYPE.to_string())
        );
        assert_eq!(
            check_service_type("_a1-b2._udp.local."),
            Ok("_a1-b2._udp.local.".to_string())
        );
        assert!(
            check_service_type("_abcdefghijklmno._tcp.local.").is_ok(),
            "15 characters"
        );
    }

    #[test]
    fn bad_types_are_refused() {
        for bad in [
            "_abcdefghijklmnop._tcp.local.", // 16 characters
            "cluster._tcp.local.",
            "_._tcp.local.",
            "_clu_ster._tcp.local.",
            "_123._tcp.local.",
            "_-ab._tcp.local.",
            "_ab-._tcp.local.",
            "_a--b._tcp.local.",
            "_cluster._sctp.local.",
            "_cluster._tcp.example.",
            "_cluster._tcp",
            "",
        ] {
            assert!(check_service_type(bad).is_err(), "{bad:?} accepted");
        }
    }
}
