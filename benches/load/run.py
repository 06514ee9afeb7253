#!/usr/bin/env python3
"""Postern's end-to-end load benchmark: Postern and Postfix side by side, in one run.

Both relays take mail from Postfix's smtp-source and relay it to Postfix's smtp-sink on
loopback; every message is durable (fsync'ed) before its 250. For each workload the script
reports, for each relay, the median over repeated runs of:

- accepted msgs/s   (messages / wall time of the smtp-source run)
- end-to-end msgs/s (messages / time until smtp-sink has seen them all)
- CPU ms per message (user + system CPU of the relay's processes, from /usr/bin/time)
- peak RSS (largest resident set of any one relay process)

plus smtp-source straight into smtp-sink as the ceiling of the path, and the ratios.

Usage: benches/load/run.sh [--smoke] [--repeat N] [--only postern|postfix] [--workloads a,b]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SBIN = "/usr/sbin"

# name -> (sessions, messages, payload bytes, messages per session > 1?)
WORKLOADS = {
    "w1_20x10k_10KB": dict(sessions=20, messages=10_000, size=10 * 1024, reuse=False,
                           what="20 sessions x 10,000 messages of 10 KB, one message per connection"),
    "w2_20x10k_10KB_reuse": dict(sessions=20, messages=10_000, size=10 * 1024, reuse=True,
                                 what="the same, many messages per connection"),
    "w3_1x1k_serial": dict(sessions=1, messages=1_000, size=10 * 1024, reuse=False,
                           what="1 session x 1,000 messages (serial latency)"),
    "w4_20x1k_100KB": dict(sessions=20, messages=1_000, size=100 * 1024, reuse=False,
                           what="20 sessions x 1,000 messages of 100 KB"),
}
SMOKE = {
    "w1_20x10k_10KB": dict(sessions=4, messages=40, size=10 * 1024, reuse=False, what="smoke"),
    "w2_20x10k_10KB_reuse": dict(sessions=4, messages=40, size=10 * 1024, reuse=True, what="smoke"),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout}s")


class Sink:
    """smtp-sink on loopback, with its running message counter read from stdout."""

    def __init__(self):
        self.port = free_port()
        self.count = 0
        self.proc = subprocess.Popen(
            [f"{SBIN}/smtp-sink", "-c", "-u", "postfix", f"127.0.0.1:{self.port}", "2048"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(self.port)

    def _read(self):
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                return
            buf += chunk
            *records, buf = buf.split(b"\r")
            for rec in records:
                for field in rec.split():
                    if field.startswith(b"mesg="):
                        self.count = int(field[5:])

    def wait_for(self, target, timeout):
        deadline = time.monotonic() + timeout
        while self.count < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink saw {self.count} of {target} messages within {timeout}s")
            time.sleep(0.002)
        return time.monotonic()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Timed:
    """A relay started under /usr/bin/time, so CPU and peak RSS cover all its processes."""

    def __init__(self, argv, stop_argv=None, env=None, cwd=None):
        self.timefile = tempfile.NamedTemporaryFile(delete=False, suffix=".time").name
        self.stop_argv = stop_argv
        self.proc = subprocess.Popen(
            ["/usr/bin/time", "-o", self.timefile, "-f", "%U %S %M"] + argv,
            stdout=subprocess.DEVNULL, stderr=open(self.timefile + ".log", "w"),
            env=env, cwd=cwd, start_new_session=True)

    def stop(self):
        if self.stop_argv:
            subprocess.run(self.stop_argv, check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        else:
            # /usr/bin/time forwards nothing: signal the relay itself (time's child).
            try:
                child = int(open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()[0])
                os.kill(child, signal.SIGTERM)
            except (OSError, IndexError, ValueError):
                self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        fields = open(self.timefile).read().split()[-3:]
        user, system, max_kb = float(fields[0]), float(fields[1]), int(fields[2])
        return user + system, max_kb * 1024

    def log_tail(self):
        try:
            return open(self.timefile + ".log").read()[-3000:]
        except OSError:
            return ""


def start_postfix(workdir, sink_port):
    """A private Postfix instance relaying everything to the sink (its own config and queue)."""
    port = free_port()
    etc = os.path.join(workdir, "etc")
    os.makedirs(etc)
    queue = os.path.join(workdir, "queue")
    data = os.path.join(workdir, "data")
    for d in (queue, data):
        os.makedirs(d)
    shutil.chown(data, "postfix")
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.bench.example
mydomain = bench.example
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {workdir}/maillog
maillog_file_prefixes = {workdir}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 100
default_destination_concurrency_limit = 20
smtp_destination_concurrency_limit = 20
""")
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write(f"""127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")
    subprocess.run([f"{SBIN}/postfix", "-c", etc, "set-permissions"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = Timed([f"{SBIN}/postfix", "-c", etc, "start-fg"],
                  stop_argv=[f"{SBIN}/postfix", "-c", etc, "stop"])
    try:
        wait_port(port)
    except RuntimeError:
        relay.stop()
        log = os.path.join(workdir, "maillog")
        raise RuntimeError("Postfix did not start:\n" + relay.log_tail() +
                           (open(log).read()[-3000:] if os.path.exists(log) else ""))
    return relay, port


def start_postern(workdir, sink_port, relay_bin):
    port = free_port()
    config = os.path.join(workdir, "postern.toml")
    with open(config, "w") as f:
        f.write(POSTERN_CONFIG.format(port=port, sink_port=sink_port,
                                      spool=os.path.join(workdir, "spool")))
    env = dict(os.environ, RUST_LOG="warn")
    relay = Timed([relay_bin, "serve", "--config", config], env=env, cwd=workdir)
    try:
        wait_port(port)
    except RuntimeError:
        relay.stop()
        raise RuntimeError("Postern did not start:\n" + relay.log_tail())
    return relay, port


# Production settings: every message fsync'ed before its 250 (the spool always does that),
# delivery to the sink over plain SMTP (the sink speaks no TLS).
POSTERN_CONFIG = """
[server]
hostname = "relay.bench.example"

[[listeners]]
name = "bench"
bind = "127.0.0.1:{port}"

[policy]
allowed_networks = ["127.0.0.0/8"]

[limits]
max_connections = 2000
max_connections_per_ip = 2000

[spool]
dir = "{spool}"

[[routes]]
name = "sink"
type = "smtp"
host = "127.0.0.1"
port = {sink_port}
tls = "none"

[[rules]]
routes = ["sink"]
"""


def smtp_source(port, wl):
    argv = [f"{SBIN}/smtp-source", "-s", str(wl["sessions"]), "-m", str(wl["messages"]),
            "-l", str(wl["size"]), "-f", "scanner@bench.example", "-t", "user@bench.example",
            "-M", "scanner.bench.example", "-C", "5"]
    if wl["reuse"]:
        argv.append("-d")
    argv.append(f"127.0.0.1:{port}")
    t0 = time.monotonic()
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)
    t1 = time.monotonic()
    if res.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {res.stderr.decode()[-2000:]}")
    return t0, t1


def run_one(system, wl, sink, relay_bin):
    workdir = tempfile.mkdtemp(prefix=f"postern-load-{system}-")
    os.chmod(workdir, 0o755)  # Postfix's daemons run as the postfix user
    try:
        if system == "postfix":
            relay, port = start_postfix(workdir, sink.port)
        elif system == "postern":
            relay, port = start_postern(workdir, sink.port, relay_bin)
        else:
            relay, port = None, sink.port
        base = sink.count
        t0, t1 = smtp_source(port, wl)
        t2 = sink.wait_for(base + wl["messages"], timeout=600)
        res = dict(accepted=wl["messages"] / (t1 - t0), e2e=wl["messages"] / (t2 - t0),
                   serial_ms=(t1 - t0) * 1000 / wl["messages"])
        if relay is not None:
            cpu, rss = relay.stop()
            res.update(cpu_ms=cpu * 1000 / wl["messages"], rss_mb=rss / 1048576)
        return res
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def median(runs, key):
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few messages, to check the script works")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["postern", "postfix"])
    ap.add_argument("--workloads", help="comma-separated workload names")
    ap.add_argument("--relay-bin", default=os.path.join(ROOT, "target/release/examples/relay"))
    ap.add_argument("--json", default=os.path.join(ROOT, "target/load-results.json"))
    args = ap.parse_args()

    workloads = SMOKE if args.smoke else WORKLOADS
    if args.workloads:
        workloads = {k: v for k, v in workloads.items() if k in args.workloads.split(",")}
    repeat = 1 if args.smoke else args.repeat
    systems = ["ceiling", "postern", "postfix"]
    if args.only:
        systems = [args.only]

    sink = Sink()
    results = {}
    try:
        for name, wl in workloads.items():
            for system in systems:
                runs = []
                for i in range(repeat):
                    r = run_one(system, wl, sink, args.relay_bin)
                    runs.append(r)
                    print(f"{name:24} {system:8} run {i + 1}: " +
                          " ".join(f"{k}={v:.2f}" for k, v in r.items()), flush=True)
                results.setdefault(name, {})[system] = {
                    k: median(runs, k) for k in ("accepted", "e2e", "serial_ms", "cpu_ms", "rss_mb")}
    finally:
        sink.stop()

    print()
    print(f"{'workload':24} {'metric':18} {'postern':>10} {'postfix':>10} {'ratio':>7} {'ceiling':>10}")
    for name, per in results.items():
        for key, label, better_high in (("accepted", "accepted msg/s", True), ("e2e", "end-to-end msg/s", True),
                                        ("serial_ms", "ms per message", False), ("cpu_ms", "CPU ms/msg", False),
                                        ("rss_mb", "peak RSS MB", False)):
            a = per.get("postern", {}).get(key)
            b = per.get("postfix", {}).get(key)
            c = per.get("ceiling", {}).get(key)
            ratio = ""
            if a and b:
                ratio = f"{(a / b if better_high else b / a):.2f}x"
            fmt = lambda v: "-" if v is None else f"{v:.1f}"
            print(f"{name:24} {label:18} {fmt(a):>10} {fmt(b):>10} {ratio:>7} {fmt(c):>10}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(date=time.strftime("%Y-%m-%d"), results=results), f, indent=2)
    print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
