"""An independent mDNS/DNS-SD peer for the LAN lab, on python-zeroconf (Debian python3-zeroconf).

publish: advertise one service instance, print "ready" once registered, and stay until
         SIGTERM; then unregister (goodbye).
browse:  browse a service type for --timeout seconds and print one JSON line per instance
         resolved by zeroconf itself: name, server, port, addresses, properties.
"""
import argparse
import json
import signal
import socket
import threading
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, Zeroconf


def publish(args):
    zc = Zeroconf(interfaces=[args.addr], ip_version=IPVersion.V4Only)
    props = {}
    for kv in args.txt:
        k, _, v = kv.partition("=")
        props[k] = v
    info = ServiceInfo(
        args.type,
        f"{args.name}.{args.type}",
        addresses=[socket.inet_aton(args.addr)],
        port=args.port,
        properties=props,
        server=f"{args.name}-host.local.",
    )
    zc.register_service(info)
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    zc.unregister_service(info)
    zc.close()


def browse(args):
    zc = Zeroconf(interfaces=[args.addr], ip_version=IPVersion.V4Only)
    seen = {}

    class Listener:
        def add_service(self, zc, type_, name):
            seen[name] = None

        def update_service(self, zc, type_, name):
            # Resolved and printed again: the TXT record changed.
            seen[name] = None
            printed.discard(name)

        def remove_service(self, zc, type_, name):
            pass

    printed = set()
    matched = set()
    want = tuple(args.until.split("=", 1)) if args.until else None
    ServiceBrowser(zc, args.type, Listener())
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        for name in list(seen):
            if name in printed:
                continue
            info = zc.get_service_info(args.type, name, timeout=1000)
            if info is None:
                continue
            props = {
                k.decode(errors="replace"): (v.decode(errors="replace") if v is not None else None)
                for k, v in info.properties.items()
            }
            print(
                json.dumps(
                    {
                        "name": name,
                        "server": info.server,
                        "port": info.port,
                        "addresses": info.parsed_addresses(),
                        "properties": props,
                    }
                ),
                flush=True,
            )
            printed.add(name)
            if want and props.get(want[0]) == want[1]:
                matched.add(name)
        done = matched if want else printed
        if args.expect and len(done) >= args.expect:
            break
        time.sleep(0.05)
    zc.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--type", default="_cluster._tcp.local.")
    pub.add_argument("--name", required=True)
    pub.add_argument("--addr", required=True)
    pub.add_argument("--port", type=int, default=9999)
    pub.add_argument("--txt", action="append", default=[])
    br = sub.add_parser("browse")
    br.add_argument("--type", default="_cluster._tcp.local.")
    br.add_argument("--addr", required=True)
    br.add_argument("--timeout", type=float, default=10)
    br.add_argument("--expect", type=int, default=0)
    br.add_argument(
        "--until",
        default="",
        help="KEY=VALUE: count an instance towards --expect once its TXT has it (updates are resolved again)",
    )
    args = p.parse_args()
    publish(args) if args.cmd == "publish" else browse(args)


if __name__ == "__main__":
    main()
