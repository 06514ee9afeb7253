#!/usr/bin/env python3
"""Postern's end-to-end load benchmark: Postern and Postfix side by side, in one run.

Both relays take mail from Postfix's smtp-source and relay it to Postfix's smtp-sink on
loopback; every message is durable (fsync'ed) before its 250. For each workload the script
reports, for each relay, the median over repeated runs of:

- accepted msgs/s   (messages / wall time of the smtp-source run)
- end-to-end msgs/s (messages / time from the first connection until smtp-sink has them all)
- ms per message    (wall time of the smtp-source run / messages: the serial latency for w3)
- CPU ms per message (user + system CPU of every process of the relay, read from /proc just
  before it is stopped, so daemons Postfix has not reaped yet are counted too)
- peak RSS          (largest resident set of any one relay process: VmHWM, and /usr/bin/time)

plus smtp-source straight into smtp-sink as the ceiling of the path, and the ratios.

Two more measurements, Postern only unless said:

- `--big`: one 150 MB message through each relay (Postern and Postfix): peak RSS, seconds.
- `--idle [N]`: N idle connections (default 10,000) held open after the greeting
  (benches/load/idle.py): the relay's VmRSS with them open, and VmHWM.

Usage: benches/load/run.sh [--smoke] [--repeat N] [--only postern|postfix] [--workloads a,b|none]
                           [--route smtp|local] [--big] [--idle [N]] [--relay-bin PATH]
"""

import argparse
import json
import os
import resource
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
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_SIZE = 150 * 1000 * 1000

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
    "w3_1x1k_serial": dict(sessions=1, messages=10, size=10 * 1024, reuse=False, what="smoke"),
}


def raise_nofile():
    """Idle connections and 20 parallel sessions need file descriptors (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


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


class Outbox:
    """The local route's directory, standing in for the sink with `--route local`."""

    def __init__(self, path):
        self.path = path

    def count(self):
        try:
            return sum(1 for e in os.scandir(self.path) if e.name.endswith(".eml"))
        except FileNotFoundError:
            return 0

    def wait_for(self, target, timeout):
        deadline = time.monotonic() + timeout
        while (n := self.count()) < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox has {n} of {target} messages after {timeout}s")
            time.sleep(0.02)
        return time.monotonic()


def tree_usage(root):
    """CPU seconds used so far by `root` and every process descended from it (each with the
    children it has reaped), and the largest VmHWM among them, in bytes. Postfix's master
    starts its own session, so the process tree is followed, not the session."""
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            fields = stat[stat.rindex(")") + 2:].split()
            ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            procs[int(pid)] = (int(fields[1]), ticks)  # ppid
        except (OSError, ValueError, IndexError):
            continue
    children = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    cpu_ticks, hwm, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        if pid not in procs:
            continue
        cpu_ticks += procs[pid][1]
        todo.extend(children.get(pid, []))
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]) * 1024)
        except OSError:
            pass
    return cpu_ticks / CLK_TCK, hwm


class Timed:
    """A relay started under /usr/bin/time. CPU and peak RSS are read from /proc for every
    process descended from it just before the stop (Postfix's master does not reap its
    daemons when it stops, so rusage alone would miss them), and /usr/bin/time's peak RSS
    covers what ran and was reaped."""

    def __init__(self, argv, stop_argv=None, env=None, cwd=None):
        self.timefile = tempfile.NamedTemporaryFile(delete=False, suffix=".time").name
        self.stop_argv = stop_argv
        self.proc = subprocess.Popen(
            ["/usr/bin/time", "-o", self.timefile, "-f", "%U %S %M"] + argv,
            stdout=subprocess.DEVNULL, stderr=open(self.timefile + ".log", "w"),
            env=env, cwd=cwd, start_new_session=True)

    def child_pid(self):
        """The relay's own process (time's child)."""
        try:
            return int(open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def usage(self):
        return tree_usage(self.proc.pid)

    def stop(self):
        cpu, hwm = self.usage()
        if self.stop_argv:
            subprocess.run(self.stop_argv, check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        else:
            # /usr/bin/time forwards nothing: signal the relay itself (time's child).
            child = self.child_pid()
            if child:
                os.kill(child, signal.SIGTERM)
            else:
                self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            fields = open(self.timefile).read().split()[-3:]
            hwm = max(hwm, int(fields[2]) * 1024)
        except (OSError, ValueError, IndexError):
            pass
        return cpu, hwm

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
message_size_limit = 209715200
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


# Production settings: every message fsync'ed before its 250 (the spool always does that: file
# fdatasync, rename, group-committed directory fsync), logging at warn, delivery to the sink over
# plain SMTP (the sink speaks no TLS). Limits are raised so that the benchmark measures the relay,
# not its admission control: Postfix gets the same (no connection or rate limits, 20 deliveries
# in parallel to the sink, like `smtp_destination_concurrency_limit = 20` above).
POSTERN_CONFIG = """
hostname = "relay.bench.example"
default_routes = ["sink"]

[[listeners]]
name = "bench"
bind = "127.0.0.1:{port}"

[policy]
allowed_networks = ["127.0.0.0/8"]

[limits]
max_connections = {max_connections}
max_connections_per_ip = {max_connections}
max_message_size = {max_message_size}

[spool]
path = "{spool}"

[queue]
concurrency = 20

{route}
"""

ROUTE_SMTP = """[routes.sink]
type = "smtp"
host = "127.0.0.1"
port = {sink_port}
tls = "none"
max_connections = 20
pool_size = 20
"""

# `--route local`: the accept path alone (the end-to-end figure is then when the local sink
# has written every message).
ROUTE_LOCAL = """[routes.sink]
type = "local"
dir = "{outbox}"
"""




def start_postern(workdir, sink_port, relay_bin, route="smtp", max_connections=2000):
    port = free_port()
    config = os.path.join(workdir, "postern.toml")
    outbox = os.path.join(workdir, "outbox")
    route_text = (ROUTE_SMTP if route == "smtp" else ROUTE_LOCAL).format(
        sink_port=sink_port, outbox=outbox)
    with open(config, "w") as f:
        f.write(POSTERN_CONFIG.format(port=port, spool=os.path.join(workdir, "spool"),
                                      max_connections=max_connections,
                                      max_message_size=BIG_SIZE + 50 * 1000 * 1000,
                                      route=route_text))
    env = dict(os.environ, RUST_LOG="warn")
    relay = Timed([relay_bin, "serve", "--config", config], env=env, cwd=workdir)
    try:
        wait_port(port)
    except RuntimeError:
        relay.stop()
        raise RuntimeError("Postern did not start:\n" + relay.log_tail())
    return relay, port, Outbox(outbox)


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


def start_relay(system, workdir, sink, args):
    """(relay or None, port, what to wait on for end-to-end)."""
    if system == "postfix":
        relay, port = start_postfix(workdir, sink.port)
        return relay, port, sink
    if system == "postern":
        relay, port, outbox = start_postern(workdir, sink.port, args.relay_bin, args.route)
        return relay, port, (outbox if args.route == "local" else sink)
    return None, sink.port, sink


def run_one(system, wl, sink, args):
    workdir = tempfile.mkdtemp(prefix=f"postern-load-{system}-")
    os.chmod(workdir, 0o755)  # Postfix's daemons run as the postfix user
    relay = None
    try:
        relay, port, target = start_relay(system, workdir, sink, args)
        base = sink.count if target is sink else 0
        t0, t1 = smtp_source(port, wl)
        t2 = target.wait_for(base + wl["messages"], timeout=600)
        res = dict(accepted=wl["messages"] / (t1 - t0), e2e=wl["messages"] / (t2 - t0),
                   serial_ms=(t1 - t0) * 1000 / wl["messages"])
        if relay is not None:
            cpu, rss = relay.stop()
            relay = None
            res.update(cpu_ms=cpu * 1000 / wl["messages"], rss_mb=rss / 1048576)
        return res
    finally:
        if relay is not None:
            relay.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_big(system, sink, args):
    """One 150 MB message: seconds until the sink has it, and the relay's peak RSS."""
    workdir = tempfile.mkdtemp(prefix=f"postern-big-{system}-")
    os.chmod(workdir, 0o755)
    relay = None
    try:
        relay, port, target = start_relay(system, workdir, sink, args)
        base = sink.count if target is sink else 0
        wl = dict(sessions=1, messages=1, size=BIG_SIZE, reuse=False)
        t0, t1 = smtp_source(port, wl)
        t2 = target.wait_for(base + 1, timeout=600)
        cpu, rss = relay.stop()
        relay = None
        return dict(accept_s=t1 - t0, e2e_s=t2 - t0, cpu_s=cpu, rss_mb=rss / 1048576)
    finally:
        if relay is not None:
            relay.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_idle(n, sink, args):
    """N idle connections to Postern (benches/load/idle.py): RSS with them open."""
    workdir = tempfile.mkdtemp(prefix="postern-idle-")
    relay = None
    try:
        relay, port, _ = start_postern(workdir, sink.port, args.relay_bin, args.route,
                                       max_connections=n + 1000)
        pid = relay.child_pid()
        res = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benches/load/idle.py"), "--port", str(port),
             "--pid", str(pid), "-n", str(n), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"idle.py failed: {res.stderr.decode()[-2000:]}")
        out = json.loads(res.stdout)
        relay.stop()
        relay = None
        return out
    finally:
        if relay is not None:
            relay.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def median(runs, key):
    vals = [r[key] for r in runs if key in r]
    return statistics.median(vals) if vals else None


def snapshot_binary(path):
    """A private copy of the relay binary: others may rebuild target/ during a long run."""
    if not os.path.exists(path):
        raise SystemExit(f"no relay binary at {path}: run benches/load/run.sh (it builds it)")
    d = tempfile.mkdtemp(prefix="postern-bench-bin-")
    dst = os.path.join(d, "relay")
    shutil.copy2(path, dst)
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few messages, to check the script works")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["postern", "postfix", "ceiling"])
    ap.add_argument("--workloads", help="comma-separated workload names ('none' for none)")
    ap.add_argument("--route", choices=["smtp", "local"], default="smtp",
                    help="Postern's route: smtp to the sink (default), or the local sink "
                         "(accept path alone)")
    ap.add_argument("--big", action="store_true", help="also relay one 150 MB message")
    ap.add_argument("--idle", type=int, nargs="?", const=10_000, default=None,
                    help="also hold N idle connections to Postern (default 10,000)")
    ap.add_argument("--relay-bin", default=os.path.join(ROOT, "target/release/examples/relay"))
    ap.add_argument("--json", default=os.path.join(ROOT, "target/load-results.json"))
    args = ap.parse_args()

    raise_nofile()
    bin_dir = None
    args.relay_bin = snapshot_binary(args.relay_bin)
    bin_dir = os.path.dirname(args.relay_bin)

    workloads = SMOKE if args.smoke else WORKLOADS
    if args.workloads:
        wanted = args.workloads.split(",")
        unknown = [w for w in wanted if w not in workloads and w != "none"]
        if unknown:
            raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(workloads)}")
        workloads = {k: v for k, v in workloads.items() if k in wanted}
    repeat = 1 if args.smoke else args.repeat
    systems = ["ceiling", "postern", "postfix"]
    if args.only:
        systems = [args.only]

    sink = Sink()
    results, big, idle = {}, {}, None
    try:
        for name, wl in workloads.items():
            # Rounds interleave the systems, so a slow spell of the machine hits all of them.
            runs = {system: [] for system in systems}
            for i in range(repeat):
                for system in systems:
                    r = run_one(system, wl, sink, args)
                    runs[system].append(r)
                    print(f"{name:24} {system:8} run {i + 1}: " +
                          " ".join(f"{k}={v:.2f}" for k, v in r.items()), flush=True)
            for system in systems:
                results.setdefault(name, {})[system] = {
                    k: median(runs[system], k)
                    for k in ("accepted", "e2e", "serial_ms", "cpu_ms", "rss_mb")}
                results[name][system]["runs"] = runs[system]
        if args.big:
            for system in [s for s in systems if s != "ceiling"]:
                big[system] = run_big(system, sink, args)
                print(f"{'big_150MB':24} {system:8}: " +
                      " ".join(f"{k}={v:.2f}" for k, v in big[system].items()), flush=True)
        if args.idle:
            idle = run_idle(args.idle, sink, args)
            print(f"{'idle':24} postern : " + " ".join(f"{k}={v}" for k, v in idle.items()),
                  flush=True)
    finally:
        sink.stop()
        shutil.rmtree(bin_dir, ignore_errors=True)

    print()
    if results:
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
            fmt = lambda v: "-" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
            print(f"{name:24} {label:18} {fmt(a):>10} {fmt(b):>10} {ratio:>7} {fmt(c):>10}")
    for system, r in big.items():
        print(f"big 150 MB message via {system}: accepted in {r['accept_s']:.1f} s, at the sink after "
              f"{r['e2e_s']:.1f} s, CPU {r['cpu_s']:.2f} s, peak RSS {r['rss_mb']:.1f} MB")
    if idle:
        print(f"{idle['connections']} idle connections to Postern: VmRSS {idle['vmrss_mb']:.1f} MB "
              f"(before {idle['vmrss_before_mb']:.1f} MB), VmHWM {idle['vmhwm_mb']:.1f} MB")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(date=time.strftime("%Y-%m-%d"), route=args.route, repeat=repeat,
                       smoke=args.smoke, results=results, big=big, idle=idle), f, indent=2)
    print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
