#!/usr/bin/env bash
# Register SuperNode public keys with a SuperLink (Flower 1.41: through its Control API).
# Usage: docker/register-nodes.sh CONNECTION KEY.pub [KEY.pub ...]
#   CONNECTION is a SuperLink connection in $FLWR_HOME/config.toml (default ~/.flwr),
#   e.g. [superlink.fedsim] address = "link.example.org:8000",
#        root-certificates = "/abs/path/ca.crt"
# Only registered keys may join once the SuperLink runs with --enable-supernode-auth,
# and a SuperNode with an unregistered key exits at once: register before starting it.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 CONNECTION KEY.pub [KEY.pub ...]" >&2
  exit 2
fi
connection=$1
shift
# Wait (up to ~60 s) until the SuperLink answers: it takes a few seconds to start.
for _ in $(seq 30); do
  flwr supernode list "$connection" >/dev/null 2>&1 && break
  sleep 2
done
for key in "$@"; do
  flwr supernode register "$key" "$connection"
done
flwr supernode list "$connection"
