#!/usr/bin/env bash
# End-to-end load benchmark: Postern vs Postfix, same machine, same run.
#
#   benches/load/run.sh            full run (about 12 minutes on 2 cores; --big, --idle N add more)
#   benches/load/run.sh --smoke    a few messages per workload, to check it still works
#                                  (debug build: its figures mean nothing)
#
# Installs Postfix if missing (for smtp-source, smtp-sink and Postfix itself), builds a
# release Postern, then runs benches/load/run.py (see its header for what it measures).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/sbin"
if ! command -v smtp-sink >/dev/null || ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix >/dev/null
fi
command -v /usr/bin/time >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
case " $* " in
    *" --smoke "*)
        # The smoke checks that the script still works, not speed: the debug build that
        # `cargo test` already made is enough and saves CI a release build.
        cargo build --locked -p postern-examples --example relay
        exec python3 benches/load/run.py --relay-bin target/debug/examples/relay "$@" ;;
    *)
        cargo build --release --locked -p postern-examples --example relay
        exec python3 benches/load/run.py "$@" ;;
esac
