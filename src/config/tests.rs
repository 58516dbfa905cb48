//! Tests of loading and validating the configuration: layers, origins in errors, rules.

use super::load::{MAP_KEYS, env_key, known_keys};
use super::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    f.write_all(contents.as_bytes()).expect("write temp file");
    f
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flag(flag: &'static str, key: &'static str, value: impl Into<config::Value>) -> FlagValue {
    FlagValue {
        flag,
        key,
        value: value.into(),
    }
}

#[test]
fn no_sources_gives_the_defaults() {
    assert_eq!(load(&Sources::default()), Ok(Config::default()));
}

#[test]
fn layers_stack_file_then_env_then_flags() {
    let f = file(
        "gossip_port = 8001\nquic_port = 8002\ncluster = \"from-file\"\nname = \"file-name\"\n",
    );
    let sources = Sources {
        file: Some(f.path().to_path_buf()),
        env: env(&[
            ("QUORATE_QUIC_PORT", "9002"),
            ("QUORATE_CLUSTER", "from-env"),
        ]),
        flags: vec![flag("--cluster", "cluster", "from-flag")],
    };
    let cfg = load(&sources).expect("valid layers");
    assert_eq!(cfg.gossip_port, 8001, "file beats default");
    assert_eq!(cfg.quic_port, 9002, "env beats file");
    assert_eq!(cfg.cluster, "from-flag", "flag beats env");
    assert_eq!(cfg.name.as_deref(), Some("file-name"));
    assert_eq!(
        cfg.http_addr, DEFAULT_HTTP_ADDR,
        "untouched keys keep defaults"
    );
}

#[test]
fn unknown_key_in_file_names_file_key_and_suggestion() {
    let f = file("gosip_port = 8001\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap_err();
    match &err {
        ConfigError::UnknownKey {
            origin: Origin::File(p),
            key,
            suggestion,
        } => {
            assert_eq!(p, f.path());
            assert_eq!(key, "gosip_port");
            assert_eq!(suggestion.as_deref(), Some("gossip_port"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("did you mean `gossip_port`"),
        "{err}"
    );
}

#[test]
fn unknown_env_variable_is_named() {
    let err = load(&Sources {
        env: env(&[("QUORATE_GOSIP_PORT", "1")]),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::UnknownKey {
            origin: Origin::Env("QUORATE_GOSIP_PORT".into()),
            key: "gosip_port".into(),
            suggestion: Some("gossip_port".into()),
        }
    );
}

#[test]
fn wrong_types_are_named_with_their_source() {
    let f = file("gossip_port = \"lots\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { origin: Origin::File(_), key, .. } if key == "gossip_port"),
        "{err:?}"
    );

    let err = load(&Sources {
        env: env(&[("QUORATE_GOSSIP_PORT", "70000")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { origin: Origin::Env(v), key, .. } if v == "QUORATE_GOSSIP_PORT" && key == "gossip_port"),
        "{err:?}"
    );

    let err = load(&Sources {
        env: env(&[("QUORATE_ROLE", "boss")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "role"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("expected `voter` or `storage`, found \"boss\""),
        "{err}"
    );
    assert!(err.to_string().contains("QUORATE_ROLE"), "{err}");

    let err = load(&Sources {
        env: env(&[("QUORATE_BIND", "not-an-ip")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "bind"),
        "{err:?}"
    );
}

#[test]
fn broken_toml_is_unreadable_with_the_path() {
    let f = file("gossip_port = = 3\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Unreadable {
                origin: Origin::File(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&f.path().display().to_string()),
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 1, "one line: {err}");
}

#[test]
fn missing_file_is_unreadable() {
    let err = load(&Sources {
        file: Some("/nonexistent/quorate.toml".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/quorate.toml"),
        "{err}"
    );
}

#[test]
fn rule_violations_name_the_layer_that_set_the_key() {
    let f = file("gossip_port = 7000\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        flags: vec![flag("--quic-port", "quic_port", 7000)],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::InvalidValue {
            origin: Origin::Flag("--quic-port".into()),
            key: "quic_port".into(),
            message: "gossip and QUIC both use UDP and cannot share port 7000".into(),
        }
    );

    let err = load(&Sources {
        env: env(&[("QUORATE_GOSSIP_PORT", "0")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { origin: Origin::Env(_), key, .. } if key == "gossip_port"),
        "{err:?}"
    );

    let err = load(&Sources {
        env: env(&[("QUORATE_CLUSTER", "no spaces")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "cluster"),
        "{err:?}"
    );

    let err = load(&Sources {
        env: env(&[("QUORATE_LOG", "info,,=[")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "log"),
        "{err:?}"
    );
}

#[test]
fn dev_mode_moves_to_loopback_and_refuses_other_addresses() {
    let cfg = load(&Sources {
        flags: vec![flag("--dev", "dev", true)],
        ..Default::default()
    })
    .expect("dev");
    assert_eq!(cfg.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(cfg.advertise, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));

    let err = load(&Sources {
        flags: vec![
            flag("--dev", "dev", true),
            flag("--bind", "bind", "0.0.0.0"),
        ],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { origin: Origin::Flag(f), key, .. } if f == "--bind" && key == "bind"),
        "{err:?}"
    );
}

#[test]
fn discovery_section_from_file_env_and_checks() {
    let f = file(
        "[discovery]\nservice_type = \"_mycluster._tcp.local.\"\nexclude_interfaces = [\"docker0\"]\n",
    );
    let cfg = load(&Sources {
        file: Some(f.path().to_path_buf()),
        env: env(&[("QUORATE_DISCOVERY__INTERFACES", "eth0,eth1")]),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(cfg.discovery.service_type, "_mycluster._tcp.local.");
    assert_eq!(cfg.discovery.interfaces, vec!["eth0", "eth1"]);
    assert_eq!(cfg.discovery.exclude_interfaces, vec!["docker0"]);

    let err = load(&Sources {
        env: env(&[(
            "QUORATE_DISCOVERY__SERVICE_TYPE",
            "_much-too-long-name._tcp.local.",
        )]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { origin: Origin::Env(_), key, .. } if key == "discovery.service_type"),
        "{err:?}"
    );
    let f = file("[discovery]\nservise_type = \"x\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "discovery.servise_type"),
        "{err:?}"
    );
}

#[test]
fn gossip_section_labels_and_cluster_key() {
    let f = file(
        "cluster_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n[labels]\nzone = \"a\"\n[gossip]\ninterval = \"100ms\"\nseeds = [\"10.0.0.1:7946\"]\n",
    );
    let cfg = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(
        cfg.gossip.interval,
        Some(std::time::Duration::from_millis(100))
    );
    assert_eq!(cfg.gossip_interval(), std::time::Duration::from_millis(100));
    assert_eq!(cfg.gossip.seeds, vec!["10.0.0.1:7946"]);
    assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
    let cfg = load(&Sources {
        env: env(&[("QUORATE_GOSSIP__SEEDS", "10.0.0.1:7946, 10.0.0.2:7946")]),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(cfg.gossip.seeds.len(), 2);
    for (var, value, key) in [
        ("QUORATE_GOSSIP__SEEDS", "10.0.0.1", "gossip.seeds"),
        ("QUORATE_GOSSIP__INTERVAL", "soon", "gossip.interval"),
        ("QUORATE_GOSSIP__INTERVAL", "1ms", "gossip.interval"),
        ("QUORATE_CLUSTER_KEY", "short", "cluster_key"),
    ] {
        let err = load(&Sources {
            env: env(&[(var, value)]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key: k, .. } if k == key),
            "{var}={value}: {err:?}"
        );
    }
    let f = file("[labels]\n\"bad key\" = \"x\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::InvalidValue { key, .. } if key == "labels"),
        "{err:?}"
    );
}

#[test]
fn env_var_and_key_names_map_both_ways() {
    assert_eq!(env_var("gossip_port"), "QUORATE_GOSSIP_PORT");
    assert_eq!(env_key("QUORATE_GOSSIP_PORT"), "gossip_port");
    assert_eq!(env_var("a.b_c"), "QUORATE_A__B_C");
    assert_eq!(env_key("QUORATE_A__B_C"), "a.b_c");
}

#[test]
fn the_packaged_example_config_loads_and_lists_every_key() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/quorate.toml");
    let text = std::fs::read_to_string(&path).expect("packaging/quorate.toml");
    load(&Sources {
        file: Some(path),
        ..Default::default()
    })
    .expect("example config is valid");
    for key in known_keys() {
        let (section, leaf) = key.rsplit_once('.').unwrap_or(("", &key));
        let documented = if MAP_KEYS.contains(&key.as_str()) {
            text.contains(&format!("[{key}]"))
        } else {
            text.contains(&format!("{leaf} ="))
                && (section.is_empty() || text.contains(&format!("[{section}]")))
        };
        assert!(
            documented,
            "packaging/quorate.toml does not document `{key}`"
        );
    }
}

#[test]
fn peers_take_addresses_names_and_srv_records_and_refuse_bad_syntax() {
    let sources = Sources {
        env: env(&[(
            "QUORATE_PEERS",
            "10.0.0.1,voters.example:7000,srv:_quorate._udp.quorate-voters.ns.svc.cluster.local",
        )]),
        ..Sources::default()
    };
    let c = load(&sources).expect("every form is accepted");
    assert_eq!(
        c.peer_specs(),
        vec![
            crate::peers::PeerSpec::Addr("10.0.0.1:7947".parse().unwrap()),
            crate::peers::PeerSpec::Host {
                name: "voters.example".into(),
                port: 7000
            },
            crate::peers::PeerSpec::Srv("_quorate._udp.quorate-voters.ns.svc.cluster.local".into()),
        ]
    );
    for bad in ["voters..example", "srv:voters.example", "voters.example:0"] {
        let c = Config {
            peers: vec![bad.into()],
            ..Config::default()
        };
        let e = c.validate().expect_err(bad);
        assert_eq!(e.key, "peers", "{bad}: {e:?}");
    }
}

#[test]
fn the_gossip_round_defaults_by_role_and_a_set_interval_wins() {
    let voter = load(&Sources::default()).expect("defaults");
    assert_eq!(voter.gossip.interval, None);
    assert_eq!(voter.gossip_interval(), VOTER_GOSSIP_INTERVAL);
    let f = file("role = \"storage\"\n");
    let storage = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(storage.gossip_interval(), STORAGE_GOSSIP_INTERVAL);
    assert!(STORAGE_GOSSIP_INTERVAL > VOTER_GOSSIP_INTERVAL);
    let f = file("role = \"storage\"\n[gossip]\ninterval = \"300ms\"\n");
    let set = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(set.gossip_interval(), std::time::Duration::from_millis(300));
}
