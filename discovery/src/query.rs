//! One-shot discovery by legacy unicast queries (RFC 6762 §6.7), for `quorate discover`.
//!
//! A plain multicast browse is slow the second time: responders multicast a record at most
//! once a second, so a browse right after another waits up to a second for answers. A query
//! sent from an ephemeral port (not 5353) is a *legacy unicast* query: every conforming
//! responder answers it at once, by unicast, with the PTR answer and the SRV, TXT and address
//! records as additionals, and no rate limit applies. One round trip resolves every peer.
//!
//! The packet logic ([`build_query`], [`Assembler`]) is pure; [`query`] drives it over UDP
//! sockets, one per interface and family, resending on a backoff schedule until the deadline
//! or until the caller has what it wants.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE};
use socket2::{Domain, Protocol, Socket, Type};

use crate::peer::{Peer, PeerTable, Resolution, Stats};
use crate::{DiscoveryError, Interfaces};

const MDNS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
const MDNS_PORT: u16 = 5353;
/// When queries go out, from the start: dense retries in the first 300 ms (an answer lost on
/// the way costs at most the next 25 to 150 ms, not a whole back-off step), sparser to 1.5 s,
/// then once a second. Each is one small packet per interface, and the resends stop as soon as
/// the caller has what it wants.
const SCHEDULE_MS: [u64; 11] = [0, 25, 50, 100, 150, 200, 300, 450, 700, 1000, 1500];
/// How long to keep listening once the caller has enough peers.
const FAMILY_GRACE: Duration = Duration::from_millis(10);

/// What to ask for and how long to wait.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Service type, canonical (see [`crate::check_service_type`]).
    pub service_type: String,
    /// Interfaces to query on.
    pub interfaces: Interfaces,
    /// Give up after this long.
    pub timeout: Duration,
    /// Also query over IPv6 (link-local) where an interface has it.
    pub ipv6: bool,
}

/// Builds a legacy unicast query packet with the given questions (no QU bit: legacy queriers
/// are recognised by their source port).
pub fn build_query(id: u16, questions: &[(&str, TYPE)]) -> Result<Vec<u8>, DiscoveryError> {
    let mut packet = Packet::new_query(id);
    for (name, ty) in questions {
        let name = Name::new(name.trim_end_matches('.'))
            .map_err(|e| DiscoveryError::Packet(e.to_string()))?;
        packet.questions.push(Question::new(
            name,
            QTYPE::TYPE(*ty),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
    }
    packet
        .build_bytes_vec()
        .map_err(|e| DiscoveryError::Packet(e.to_string()))
}

/// Collects records from responses and hands out instances once they are complete.
#[derive(Debug, Default)]
pub struct Assembler {
    service_type: String,
    ptr: BTreeSet<String>,
    srv: HashMap<String, (String, u16)>,
    txt: HashMap<String, BTreeMap<String, Option<String>>>,
    addrs: HashMap<String, BTreeSet<IpAddr>>,
    /// Instances (lower case) whose records changed since the last [`Assembler::complete`].
    dirty: BTreeSet<String>,
    /// Hosts whose addresses changed since then.
    dirty_hosts: BTreeSet<String>,
}

impl Assembler {
    /// An assembler for instances of `service_type`.
    pub fn new(service_type: &str) -> Self {
        Assembler {
            service_type: service_type.to_ascii_lowercase(),
            ..Default::default()
        }
    }

    /// Takes one response packet; `scope` is the interface index it came in on (for IPv6
    /// link-local addresses). Fails, changing nothing, on a packet that does not parse.
    pub fn add_packet(&mut self, bytes: &[u8]) -> Result<(), DiscoveryError> {
        for rr in &parse_lenient(bytes)? {
            let owner = format!("{}.", rr.name);
            match &rr.rdata {
                RData::PTR(ptr) if owner.eq_ignore_ascii_case(&self.service_type) => {
                    // A TTL of zero is a goodbye: that instance is going away.
                    let instance = format!("{}.", ptr.0);
                    self.dirty.insert(instance.to_ascii_lowercase());
                    match rr.ttl {
                        0 => self.ptr.remove(&instance),
                        _ => self.ptr.insert(instance),
                    };
                }
                RData::SRV(srv) => {
                    self.dirty.insert(owner.to_ascii_lowercase());
                    self.srv.insert(
                        owner.to_ascii_lowercase(),
                        (format!("{}.", srv.target).to_ascii_lowercase(), srv.port),
                    );
                }
                RData::TXT(txt) => {
                    let mut map = BTreeMap::new();
                    for (k, v) in txt.iter_raw() {
                        let key = String::from_utf8_lossy(k).to_ascii_lowercase();
                        map.entry(key)
                            .or_insert_with(|| v.map(|v| String::from_utf8_lossy(v).into_owned()));
                    }
                    self.dirty.insert(owner.to_ascii_lowercase());
                    self.txt.insert(owner.to_ascii_lowercase(), map);
                }
                RData::A(a) => {
                    self.dirty_hosts.insert(owner.to_ascii_lowercase());
                    self.addrs
                        .entry(owner.to_ascii_lowercase())
                        .or_default()
                        .insert(IpAddr::V4(Ipv4Addr::from(a.address)));
                }
                RData::AAAA(a) => {
                    self.dirty_hosts.insert(owner.to_ascii_lowercase());
                    self.addrs
                        .entry(owner.to_ascii_lowercase())
                        .or_default()
                        .insert(IpAddr::V6(Ipv6Addr::from(a.address)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Instances with PTR, SRV, TXT and at least one address whose records changed since the
    /// last call: each complete instance is handed out once per change, not once per packet.
    pub fn complete(&mut self) -> Vec<Resolution> {
        let dirty = std::mem::take(&mut self.dirty);
        let dirty_hosts = std::mem::take(&mut self.dirty_hosts);
        self.ptr
            .iter()
            .filter_map(|full| {
                let key = full.to_ascii_lowercase();
                let (target, port) = self.srv.get(&key)?;
                if !dirty.contains(&key) && !dirty_hosts.contains(target) {
                    return None;
                }
                let txt = self.txt.get(&key)?;
                let addrs = self.addrs.get(target)?;
                Some(Resolution {
                    fullname: full.clone(),
                    port: *port,
                    addrs: addrs.clone(),
                    txt: txt.clone(),
                })
            })
            .collect()
    }

    /// Questions that would complete the instances still missing records.
    pub fn missing(&self) -> Vec<(String, TYPE)> {
        let mut out = Vec::new();
        for full in &self.ptr {
            let key = full.to_ascii_lowercase();
            match self.srv.get(&key) {
                None => out.push((full.clone(), TYPE::SRV)),
                Some((target, _)) if !self.addrs.contains_key(target) => {
                    out.push((target.clone(), TYPE::A))
                }
                Some(_) => {}
            }
            if !self.txt.contains_key(&key) {
                out.push((full.clone(), TYPE::TXT));
            }
        }
        out
    }
}

struct Sender {
    socket: UdpSocket,
    dest: SocketAddr,
}

/// Opens one querying socket per selected interface and family.
fn open_sockets(opts: &QueryOptions) -> Result<Vec<Sender>, DiscoveryError> {
    let ifaces =
        if_addrs::get_if_addrs().map_err(|e| DiscoveryError::Io("list interfaces".into(), e))?;
    let mut senders = Vec::new();
    let mut errors = Vec::new();
    for iface in ifaces
        .iter()
        .filter(|i| opts.interfaces.allows(&i.name, i.is_loopback()))
    {
        let made = match iface.ip() {
            IpAddr::V4(ip) => v4_socket(ip).map(|s| Sender {
                socket: s,
                dest: SocketAddrV4::new(MDNS_V4, MDNS_PORT).into(),
            }),
            IpAddr::V6(ip) if opts.ipv6 && ip.is_unicast_link_local() && !iface.is_loopback() => {
                let Some(index) = iface.index else { continue };
                v6_socket(ip, index).map(|s| Sender {
                    socket: s,
                    dest: SocketAddrV6::new(MDNS_V6, MDNS_PORT, 0, index).into(),
                })
            }
            IpAddr::V6(_) => continue,
        };
        match made {
            Ok(s) => senders.push(s),
            Err(e) => errors.push(format!("{}: {e}", iface.name)),
        }
    }
    if senders.is_empty() {
        return Err(DiscoveryError::NoInterfaces(if errors.is_empty() {
            "no interface matches the interface selection".into()
        } else {
            errors.join("; ")
        }));
    }
    Ok(senders)
}

fn v4_socket(ip: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddrV4::new(ip, 0).into())?;
    s.set_multicast_if_v4(&ip)?;
    s.set_multicast_ttl_v4(255)?;
    s.set_multicast_loop_v4(true)?; // a responder on this very host answers too
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s.into())
}

fn v6_socket(ip: Ipv6Addr, index: u32) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.bind(&SocketAddrV6::new(ip, 0, 0, index).into())?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_hops_v6(255)?;
    s.set_multicast_loop_v6(true)?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s.into())
}

/// Queries the network until `timeout`, or until `done` says the peers found so far are
/// enough. `on_found` sees each new peer as it resolves. Returns every peer found.
pub fn query(
    opts: &QueryOptions,
    stats: Arc<Stats>,
    mut on_found: impl FnMut(&Peer),
    mut done: impl FnMut(&[Peer]) -> bool,
) -> Result<Vec<Peer>, DiscoveryError> {
    let senders = open_sockets(opts)?;
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(usize, Vec<u8>)>();
    let mut readers = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let socket = s
            .socket
            .try_clone()
            .map_err(|e| DiscoveryError::Io("clone socket".into(), e))?;
        let tx = tx.clone();
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 9000];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = socket.recv_from(&mut buf)
                    && tx.send((i, buf[..n].to_vec())).is_err()
                {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let mut assemblers: Vec<Assembler> = senders
        .iter()
        .map(|_| Assembler::new(&opts.service_type))
        .collect();
    let mut table = PeerTable::new(&opts.service_type, None, stats.clone());
    let mut found: Vec<Peer> = Vec::new();
    let query = build_query(rand_id(), &[(&opts.service_type, TYPE::PTR)])?;
    let mut next_send = 0usize;
    let send_at = |k: usize| start + send_offset(k);

    // Once the caller has enough, a short grace lets answers of the other IP family (sent at
    // the same moment) arrive, so that a peer is listed with all its addresses.
    let mut finish: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let end = finish.unwrap_or(deadline);
        if now >= end {
            break;
        }
        if finish.is_none() && now >= send_at(next_send) {
            for (i, s) in senders.iter().enumerate() {
                let _ = s.socket.send_to(&query, s.dest);
                let missing = assemblers[i].missing();
                if !missing.is_empty() {
                    let qs: Vec<(&str, TYPE)> =
                        missing.iter().map(|(n, t)| (n.as_str(), *t)).collect();
                    if let Ok(pkt) = build_query(rand_id(), &qs) {
                        let _ = s.socket.send_to(&pkt, s.dest);
                    }
                }
            }
            next_send += 1;
            continue;
        }
        let next = if finish.is_some() {
            end
        } else {
            send_at(next_send).min(end)
        };
        let wait = next.saturating_duration_since(now);
        match rx.recv_timeout(wait) {
            Ok((i, bytes)) => {
                if assemblers[i].add_packet(&bytes).is_err() {
                    stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                for r in assemblers[i].complete() {
                    for ev in table.resolved(r) {
                        let peer = ev.peer().clone();
                        match found.iter_mut().find(|p| p.id == peer.id) {
                            Some(known) => *known = peer,
                            None => {
                                on_found(&peer);
                                found.push(peer);
                            }
                        }
                    }
                }
                if finish.is_none() && done(&found) {
                    finish = Some(Instant::now() + FAMILY_GRACE);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Readers wake within their read timeout and end; nobody needs to wait for them.
    drop(readers);
    Ok(found)
}

/// Parses a response, dropping trailing additional records the parser cannot read.
///
/// Responders such as python-zeroconf and Apple's append NSEC records whose next-domain name
/// is compressed, which the parser refuses; they come last and carry nothing we use, so the
/// packet is read again without them rather than thrown away. The count of additionals that
/// still reads is searched for, not tried one by one: a 1.4 KB packet claiming 65,535 of them
/// would otherwise cost 65,535 parses (seconds of CPU per datagram, found by fuzzing).
fn parse_lenient(bytes: &[u8]) -> Result<Vec<ResourceRecord<'static>>, DiscoveryError> {
    let records = |p: Packet<'_>| -> Vec<ResourceRecord<'static>> {
        p.answers
            .into_iter()
            .chain(p.additional_records)
            .map(ResourceRecord::into_owned)
            .collect()
    };
    let first_error = match Packet::parse(bytes) {
        Ok(p) => return Ok(records(p)),
        Err(e) => e,
    };
    if bytes.len() >= 12 {
        let additional = u16::from_be_bytes([bytes[10], bytes[11]]);
        let mut patched = bytes.to_vec();
        let mut parse = |keep: u16| {
            patched[10..12].copy_from_slice(&keep.to_be_bytes());
            Packet::parse(&patched).ok().map(records)
        };
        // Broken before its additionals: no count of them reads.
        if additional > 0 && parse(0).is_some() {
            let keep = longest(additional, |n| parse(n).is_some());
            if let Some(records) = parse(keep) {
                return Ok(records);
            }
        }
    }
    Err(DiscoveryError::Packet(first_error.to_string()))
}

/// The largest count below `below` that `reads`, given that 0 does. Records are read in
/// order, so every count under one that reads reads too: a binary search, at most 16 tries.
fn longest(below: u16, mut reads: impl FnMut(u16) -> bool) -> u16 {
    let (mut lo, mut hi) = (0, below - 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if reads(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// When the `k`th query goes out, counted from the start.
fn send_offset(k: usize) -> Duration {
    let last = SCHEDULE_MS.len() - 1;
    let ms = match SCHEDULE_MS.get(k) {
        Some(ms) => *ms,
        None => SCHEDULE_MS[last] + 1000 * (k - last) as u64,
    };
    Duration::from_millis(ms)
}

fn rand_id() -> u16 {
    // Legacy unicast responders echo the id; any value will do, but a varying one keeps stray
    // answers to an older run apart in captures.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, PTR, SRV, TXT};

    const TY: &str = "_cluster._tcp.local.";

    fn response(instance: &str, with_additionals: bool) -> Vec<u8> {
        let mut p = Packet::new_reply(0);
        let ty = Name::new_unchecked("_cluster._tcp.local");
        let inst = Name::new_unchecked(instance);
        let host = Name::new_unchecked("q-0000000000000001.local");
        p.answers.push(ResourceRecord::new(
            ty,
            CLASS::IN,
            10,
            RData::PTR(PTR(inst.clone())),
        ));
        if with_additionals {
            p.additional_records.push(ResourceRecord::new(
                inst.clone(),
                CLASS::IN,
                10,
                RData::SRV(SRV {
                    priority: 0,
                    weight: 0,
                    port: 7947,
                    target: host.clone(),
                }),
            ));
            let txt = TXT::new()
                .with_string("v=1")
                .expect("txt")
                .with_string("id=0000000000000001")
                .expect("txt")
                .with_string("cl=default")
                .expect("txt")
                .with_string("role=voter")
                .expect("txt")
                .with_string("g=7946")
                .expect("txt")
                .with_string("a=7948")
                .expect("txt")
                .with_string("st=forming")
                .expect("txt")
                .with_string("ver=0.1.0")
                .expect("txt");
            p.additional_records
                .push(ResourceRecord::new(inst, CLASS::IN, 10, RData::TXT(txt)));
            p.additional_records.push(ResourceRecord::new(
                host,
                CLASS::IN,
                10,
                RData::A(A {
                    address: u32::from(Ipv4Addr::new(10, 0, 0, 1)),
                }),
            ));
        }
        p.build_bytes_vec().expect("build")
    }

    #[test]
    fn a_full_response_resolves_an_instance() {
        let mut a = Assembler::new(TY);
        a.add_packet(&response("n1._cluster._tcp.local", true))
            .expect("parse");
        let done = a.complete();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].fullname, "n1._cluster._tcp.local.");
        assert_eq!(done[0].port, 7947);
        assert_eq!(
            done[0].addrs,
            BTreeSet::from([IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))])
        );
        assert_eq!(done[0].txt.get("cl"), Some(&Some("default".to_string())));
        assert!(a.missing().is_empty());
        assert!(a.complete().is_empty(), "handed out once");
        a.add_packet(&response("n1._cluster._tcp.local", true))
            .expect("parse");
        assert_eq!(
            a.complete().len(),
            1,
            "handed out again after fresh records"
        );
    }

    #[test]
    fn a_goodbye_removes_the_instance() {
        let mut a = Assembler::new(TY);
        a.add_packet(&response("n1._cluster._tcp.local", true))
            .expect("parse");
        let mut bye = Packet::new_reply(0);
        bye.answers.push(ResourceRecord::new(
            Name::new_unchecked("_cluster._tcp.local"),
            CLASS::IN,
            0,
            RData::PTR(PTR(Name::new_unchecked("n1._cluster._tcp.local"))),
        ));
        a.add_packet(&bye.build_bytes_vec().expect("build"))
            .expect("parse");
        assert!(a.complete().is_empty());
    }

    #[test]
    fn a_bare_ptr_asks_for_what_is_missing() {
        let mut a = Assembler::new(TY);
        a.add_packet(&response("n1._cluster._tcp.local", false))
            .expect("parse");
        assert!(a.complete().is_empty());
        let missing: Vec<TYPE> = a.missing().into_iter().map(|(_, t)| t).collect();
        assert_eq!(missing, vec![TYPE::SRV, TYPE::TXT]);
    }

    #[test]
    fn junk_is_an_error_and_changes_nothing() {
        let mut a = Assembler::new(TY);
        for junk in [
            &b""[..],
            &[0xff; 7],
            &[0u8, 0, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0, 3, b'a'],
        ] {
            assert!(a.add_packet(junk).is_err(), "{junk:?} parsed");
        }
        assert!(a.complete().is_empty() && a.missing().is_empty());
    }

    #[test]
    fn the_schedule_backs_off_to_once_a_second() {
        let ms: Vec<u128> = (0..14).map(|k| send_offset(k).as_millis()).collect();
        assert_eq!(
            ms,
            vec![
                0, 25, 50, 100, 150, 200, 300, 450, 700, 1000, 1500, 2500, 3500, 4500
            ]
        );
    }

    /// A real response of python-zeroconf: PTR, SRV, A, TXT, and an NSEC with a compressed
    /// name that the parser alone refuses.
    #[test]
    fn a_zeroconf_response_with_nsec_still_resolves() {
        let bytes = include_bytes!("zeroconf_response.bin");
        let mut a = Assembler::new(TY);
        a.add_packet(bytes).expect("lenient parse");
        let done = a.complete();
        assert_eq!(done.len(), 1, "{a:?}");
        assert_eq!(done[0].fullname, "office-printer._cluster._tcp.local.");
        assert_eq!(done[0].port, 9999);
        assert_eq!(done[0].txt.get("path"), Some(&Some("/ipp".to_string())));
    }

    /// A packet that claims far more additionals than it holds, the last one unreadable,
    /// keeps the records it can in a handful of parses: the count is searched for.
    #[test]
    fn an_inflated_additional_count_is_searched_not_scanned() {
        let mut bytes = response("n1._cluster._tcp.local", true);
        bytes.extend_from_slice(&[0x03, b'b', b'a', b'd', 0xc0]); // a name cut off
        bytes[10..12].copy_from_slice(&u16::MAX.to_be_bytes());
        let mut a = Assembler::new(TY);
        a.add_packet(&bytes).expect("lenient parse");
        assert_eq!(a.complete().len(), 1, "{a:?}");

        let mut tries = 0;
        let found = longest(u16::MAX, |n| {
            tries += 1;
            n <= 90
        });
        assert_eq!((found, tries <= 16), (90, true), "{tries} tries");
        assert_eq!(longest(1, |_| unreachable!("0 reads, 0 is below 1")), 0);
        assert_eq!(longest(4, |n| n < 4), 3);
    }

    #[test]
    fn queries_round_trip_through_the_parser() {
        let bytes = build_query(7, &[(TY, TYPE::PTR), ("q-1.local.", TYPE::A)]).expect("build");
        let p = Packet::parse(&bytes).expect("parse");
        assert_eq!(p.id(), 7);
        assert_eq!(p.questions.len(), 2);
        assert_eq!(p.questions[0].qname.to_string(), "_cluster._tcp.local");
        assert!(!p.questions[0].unicast_response);
    }
}
