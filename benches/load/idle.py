#!/usr/bin/env python3
"""Hold N idle SMTP connections open on a relay and report its memory.

Opens N connections to 127.0.0.1:PORT, reads each greeting (220), then keeps them all open,
silent, and reads the relay's VmRSS and VmHWM from /proc/PID/status (before, and with all N
open). The file-descriptor limit is raised to the hard limit first (each connection is one
descriptor here and one in the relay; start the relay with enough of its own).

    benches/load/idle.py --port 2525 --pid $(pidof relay) -n 10000
    benches/load/run.sh --workloads none --idle 10000     # the same, relay started for you
"""

import argparse
import json
import os
import resource
import selectors
import socket
import sys
import time


def vm(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else n + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        raise SystemExit(f"need {n + 64} file descriptors, the hard limit allows {soft}")


def open_idle(port, n, batch=200, timeout=60.0):
    """N connections, each past its greeting. Opened in batches so the listen backlog keeps up."""
    socks = []
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + timeout
    while len(socks) < n:
        pending = {}
        for _ in range(min(batch, n - len(socks))):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_READ)
            pending[s] = b""
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} connections got no greeting "
                                 f"({len(socks)} open); is max_connections high enough?")
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj
                try:
                    data = s.recv(512)
                except BlockingIOError:
                    continue
                if not data:
                    raise SystemExit("the relay closed a connection before its greeting")
                pending[s] += data
                if b"\n" in pending[s]:
                    if not pending[s].startswith(b"220"):
                        raise SystemExit(f"refused: {pending[s][:200]!r}")
                    sel.unregister(s)
                    del pending[s]
                    socks.append(s)
    return socks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the relay's process id")
    ap.add_argument("-n", type=int, default=10_000, help="connections (default 10,000)")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds to hold them before measuring")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    raise_nofile(args.n)
    before = vm(args.pid)
    t0 = time.monotonic()
    socks = open_idle(args.port, args.n)
    opened_s = time.monotonic() - t0
    time.sleep(args.hold)
    # Still open? A relay that dropped idle connections would make the figure meaningless.
    alive = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        alive += 1
    during = vm(args.pid)
    res = dict(connections=alive, opened_s=round(opened_s, 2),
               vmrss_before_mb=round(before["VmRSS"] / 1048576, 1),
               vmrss_mb=round(during["VmRSS"] / 1048576, 1),
               vmhwm_mb=round(during["VmHWM"] / 1048576, 1),
               kb_per_connection=round((during["VmRSS"] - before["VmRSS"]) / 1024 / max(alive, 1), 1))
    for s in socks:
        s.close()
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:20} {v}")
    if alive < args.n:
        print(f"only {alive} of {args.n} connections stayed open", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
