"""The RabbitMQ pod's definitions-sync sidecar: re-imports the definitions file when the
Secret changes, so a new password, task server or delivery limit needs no broker restart.

The kubelet refreshes a mounted Secret in place. Every few seconds the sidecar compares the
file's checksum with the one it imported; on a change it waits for the local node and runs
`rabbitmqctl import_definitions`, which updates users, permissions and policies on the
running cluster without dropping a connection. It then makes its node a member of every
quorum queue (`rabbitmq-queues grow`): the queues a node imports at boot, before its peers
have joined, start with that node alone, and RabbitMQ 3.x never adds the others (4.x's
membership reconciliation does, later). It runs no CLI tool before the server's epmd
is up, so it never starts an epmd of its own. It speaks to its own node only, through the
pod's Erlang cookie, and runs in the RabbitMQ image.
"""

from __future__ import annotations

SYNC_SECONDS = 10
STATE_DIR = "/run/definitions-sync"
HEARTBEAT = f"{STATE_DIR}/beat"

SCRIPT = r"""#!/bin/sh
# gru definitions sync: see components/rabbitmq_broker/definitions_sync.py.
set -u
# PID 1 of its container: without a handler SIGTERM is ignored and the pod would sit out its
# whole grace period; the sleep runs in the background so the trap runs at once.
trap 'exit 0' TERM INT
file="$DEFINITIONS_FILE"
imported=""
while true; do
  touch "$STATE_DIR/beat"
  sum="$(cksum "$file" 2>/dev/null | cut -d' ' -f1)"
  if [ -n "$sum" ] && [ "$sum" != "$imported" ]; then
    # Only once the server's own epmd answers: any rabbitmqctl call would otherwise start an
    # epmd in this container, which the server then registers with and which dies with this
    # sidecar, leaving the node unreachable to its peers and CLI tools. (`epmd -names` only
    # asks; it starts nothing. An image without it on PATH keeps the old behaviour.)
    if { ! command -v epmd >/dev/null || epmd -names >/dev/null 2>&1; } \
        && rabbitmqctl -q await_startup --timeout 30 >/dev/null 2>&1 \
        && rabbitmqctl -q import_definitions "$file" >/dev/null 2>&1 \
        && rabbitmq-queues -q grow "$RABBITMQ_NODENAME" all >/dev/null 2>&1; then
      echo "definitions-sync: imported definitions ($sum)"
      imported="$sum"
    else
      echo "definitions-sync: node not ready for import yet; retrying"
    fi
  fi
  sleep "$SYNC_SECONDS" & wait $!
done
"""
