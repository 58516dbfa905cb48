//! The lab's own properties: multicast between hosts, cutting and healing a host, dropping a
//! share of a host's packets, and leaving nothing behind.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::support::lab::{Lab, netns_list};
use crate::support::wait;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 42, 99);
const PORT: u16 = 42999;

fn multicast_receiver(lab: &Lab, i: usize) -> UdpSocket {
    let ip = lab.host(i).ip;
    lab.in_host(i, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        s.set_reuse_address(true).expect("reuse");
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT).into())
            .expect("bind");
        s.join_multicast_v4(&GROUP, &ip).expect("join");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        s.into()
    })
}

fn multicast_sender(lab: &Lab, i: usize) -> UdpSocket {
    let ip = lab.host(i).ip;
    lab.in_host(i, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        s.set_multicast_if_v4(&ip).expect("multicast if");
        s.set_multicast_loop_v4(false).expect("no loop");
        s.bind(&SocketAddrV4::new(ip, 0).into()).expect("bind");
        s.into()
    })
}

/// Reads datagrams until `want` arrives or `within` passes; returns every payload seen.
fn read_until(sock: &UdpSocket, want: &str, within: Duration) -> (bool, Vec<String>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1500];
    while start.elapsed() < within {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = text == want;
            seen.push(text);
            if hit {
                return (true, seen);
            }
        }
    }
    (false, seen)
}

/// Multicast from one host reaches the other two; a cut host receives nothing while the others
/// still do; once healed it receives again. Afterwards no namespace of the lab is left.
#[test]
fn multicast_reaches_every_host_and_a_cut_host_hears_nothing_until_healed() {
    let lab = Lab::new(3);
    let names = lab.netns_names();
    let (r1, r2) = (multicast_receiver(&lab, 1), multicast_receiver(&lab, 2));
    let tx = multicast_sender(&lab, 0);
    let send = |msg: &str| {
        tx.send_to(msg.as_bytes(), SocketAddrV4::new(GROUP, PORT))
            .expect("send");
    };

    send("hello-1");
    for (i, r) in [(1, &r1), (2, &r2)] {
        let (got, seen) = read_until(r, "hello-1", Duration::from_secs(5));
        assert!(
            got,
            "host {i} did not receive the multicast datagram; saw {seen:?}"
        );
    }

    lab.cut(2);
    send("hello-2");
    let (got, seen) = read_until(&r1, "hello-2", Duration::from_secs(5));
    assert!(
        got,
        "host 1 (not cut) did not receive hello-2; saw {seen:?}"
    );
    // Host 1 has it, so it was sent; a cut host must not get it in a generous window.
    let (got, seen) = read_until(&r2, "hello-2", Duration::from_secs(1));
    assert!(!got && seen.is_empty(), "cut host 2 received {seen:?}");

    lab.heal(2);
    let mut k = 0;
    wait::until(
        "host 2 to receive multicast after heal",
        Duration::from_secs(10),
        || {
            k += 1;
            let msg = format!("hello-3-{k}");
            send(&msg);
            let (got, seen) = read_until(&r2, &msg, Duration::from_millis(200));
            if got { Ok(()) } else { Err(seen) }
        },
    );

    drop(lab);
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// `drop_share` drops about the share asked for of a host's packets, and 0 lifts it.
#[test]
fn drop_share_drops_about_that_share_and_zero_lifts_it() {
    let lab = Lab::new(2);
    let dst = SocketAddrV4::new(lab.host(1).ip, PORT);
    let rx = lab.in_host(1, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        s.set_recv_buffer_size(1 << 20).expect("rcvbuf");
        s.bind(&dst.into()).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        UdpSocket::from(s)
    });
    let tx = lab.in_host(0, || UdpSocket::bind("0.0.0.0:0").expect("bind"));
    let count = |tx: &UdpSocket, n: usize| {
        for i in 0..n {
            tx.send_to(format!("{i}").as_bytes(), dst).expect("send");
        }
        let mut got = 0;
        let mut buf = [0u8; 64];
        // The datagrams are already sent; half a second of silence means no more are coming.
        while rx.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        got
    };

    lab.drop_share(1, 50);
    let got = count(&tx, 400);
    assert!(
        (120..=280).contains(&got),
        "with 50% dropped, {got} of 400 arrived"
    );

    lab.drop_share(1, 0);
    let got = count(&tx, 200);
    assert_eq!(got, 200, "with no drop rule, {got} of 200 arrived");
}
