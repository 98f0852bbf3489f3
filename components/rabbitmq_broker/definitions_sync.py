"""The RabbitMQ pod's definitions-sync sidecar: imports the whole definitions file once the
cluster has formed, and again when the Secret changes, so a new password, task server or
delivery limit needs no broker restart.

A node boots with the users, permissions and policies only (definitions.py). Declaring quorum
queues from each node's boot import, while the nodes of a new cluster were still joining, left
task queues with members whose state machines had crashed for good (RabbitMQ 3.10, about one
first formation in six on a loaded 2-core machine; one lost 154 of 231 tasks). So the first
import waits until the cluster has as many running nodes as the StatefulSet has replicas, or
until the topology was imported before (not a first formation), or FORMATION_WAIT_SECONDS
(a node that never comes). The sidecar is ready once that import is done, so the pod takes
agents only when every exchange and queue they may use exists.

The kubelet refreshes a mounted Secret in place. Every few seconds the sidecar compares the
file's checksum with the one it imported; on a change it waits for the local node and runs
`rabbitmqctl import_definitions`, which updates users, permissions and policies on the
running cluster without dropping a connection. It then makes its node a member of every
quorum queue (`rabbitmq-queues grow`): a queue declared while a node was down or still
joining starts without that node, and RabbitMQ 3.x never adds it (4.x's membership
reconciliation does, later). It runs no CLI tool before the server's epmd
is up, so it never starts an epmd of its own. It speaks to its own node only, through the
pod's Erlang cookie, and runs in the RabbitMQ image.

After each import it lists the cluster's users: one this program manages (definitions.py's
`managed_user_pattern`) that is no longer in the users file was rotated out, and is deleted
after the file's `drop-after-seconds` (the longest rollout of the broker's task servers), when
no worker can still log in with it. Users are cluster-wide; every node's sidecar does this,
and a user another one deleted first counts as deleted.

When `cluster-size` (the StatefulSet's replicas) is new, it looks for departed nodes: members
of the cluster with an ordinal at or above it that are down, as a shrunk StatefulSet leaves
them once their pods stopped. It removes each from its quorum queues and from the cluster
(`rabbitmq-queues shrink`, `rabbitmqctl forget_cluster_node`), so a shrink needs no manual
step; a node that is down with an ordinal below the size is only restarting and is left alone.
"""

from __future__ import annotations

from .definitions import managed_user_pattern
from .topology import DELIVERY_EXCHANGE

SYNC_SECONDS = 10
FORMATION_WAIT_SECONDS = 120
STATE_DIR = "/run/definitions-sync"
HEARTBEAT = f"{STATE_DIR}/beat"
IMPORTED = f"{STATE_DIR}/imported"  # the readiness file: the whole definitions are in

SCRIPT = r"""#!/bin/sh
# gru definitions sync: see components/rabbitmq_broker/definitions_sync.py.
set -u
# PID 1 of its container: without a handler SIGTERM is ignored and the pod would sit out its
# whole grace period; the sleep runs in the background so the trap runs at once.
trap 'exit 0' TERM INT
file="$DEFINITIONS_FILE"
imported=""
formation_deadline="$(($(date +%s) + ${FORMATION_WAIT_SECONDS:-120}))"
pending=""  # lines of "<deadline> <user>": rotated-out users and when they go
cluster_users() { rabbitmqctl -s list_users </dev/null 2>/dev/null | cut -f1; }
kept() { grep -qx "$1" "$USERS_FILE" 2>/dev/null; }
# Without its users file (unreadable, or a Secret from before it existed) nothing is deleted.
have_users() { [ -s "$USERS_FILE" ]; }
members() {  # <field> of cluster_status: disk_nodes or running_nodes, space-separated
  printf '%s' "$status" | sed -n "s/.*\"$1\":\[\([^]]*\)\].*/\1/p" | tr -d '"' | tr ',' ' '
}
ordinal() { printf '%s\n' "$1" | grep -o -- '-[0-9][0-9]*[.@]' | head -n 1 | tr -dc '0-9'; }
# Before the first import: every replica's node runs, or this is no first formation (the
# topology is there already), or the wait for a missing node is over.
formed() {
  [ "$(date +%s)" -ge "$formation_deadline" ] && return 0
  status="$(rabbitmqctl -s cluster_status --formatter json </dev/null 2>/dev/null)" \
    && [ "$(members running_nodes | wc -w)" -ge "$(cat "$CLUSTER_SIZE_FILE" 2>/dev/null || echo 1)" ] && return 0
  rabbitmqctl -s list_exchanges name </dev/null 2>/dev/null | grep -qx '@TOPOLOGY@'
}
shrunk_to=""  # the cluster size whose departed nodes are all gone
while true; do
  touch "$STATE_DIR/beat"
  sum="$(cksum "$file" 2>/dev/null | cut -d' ' -f1)"
  if [ -n "$sum" ] && [ "$sum" != "$imported" ]; then
    # Read before the import, so the definitions imported are at least as new as this list: a
    # user the list lacks but the import brought (a Secret update landing in between) is kept
    # by the check below, which reads the file as it is then.
    listed="$(cat "$USERS_FILE" 2>/dev/null)"
    drop_after="$(cat "$DROP_AFTER_FILE" 2>/dev/null || echo 0)"
    # Only once the server's own epmd answers: any rabbitmqctl call would otherwise start an
    # epmd in this container, which the server then registers with and which dies with this
    # sidecar, leaving the node unreachable to its peers and CLI tools. (`epmd -names` only
    # asks; it starts nothing. An image without it on PATH keeps the old behaviour.)
    if ! { ! command -v epmd >/dev/null || epmd -names >/dev/null 2>&1; } \
        || ! rabbitmqctl -q await_startup --timeout 30 </dev/null >/dev/null 2>&1; then
      echo "definitions-sync: node not ready for import yet; retrying"
    elif [ -z "$imported" ] && ! formed; then
      echo "definitions-sync: waiting for the cluster to form before the first import"
    elif rabbitmqctl -q import_definitions "$file" </dev/null >/dev/null 2>&1 \
        && rabbitmq-queues -q grow "$RABBITMQ_NODENAME" all </dev/null >/dev/null 2>&1; then
      echo "definitions-sync: imported definitions ($sum)"
      imported="$sum"
      touch "$STATE_DIR/imported"
      now="$(date +%s)"
      [ -n "$listed" ] && for user in $(cluster_users); do
        case "$user" in @MANAGED@) ;; *) continue;; esac
        printf '%s\n' "$listed" | grep -qx "$user" && continue
        printf '%s\n' "$pending" | grep -q " $user\$" && continue
        pending="$pending
$((now + drop_after)) $user"
        echo "definitions-sync: user $user was rotated out; deleted in ${drop_after}s"
      done
    else
      echo "definitions-sync: import failed; retrying"
    fi
  fi
  size="$(cat "$CLUSTER_SIZE_FILE" 2>/dev/null)"
  if [ -n "$imported" ] && [ -n "$size" ] && [ "$size" != "$shrunk_to" ] \
      && status="$(rabbitmqctl -s cluster_status --formatter json </dev/null 2>/dev/null)"; then
    running=" $(members running_nodes) "
    waiting=0
    for node in $(members disk_nodes); do
      index="$(ordinal "$node")"
      [ -n "$index" ] && [ "$index" -ge "$size" ] || continue
      case "$running" in *" $node "*) waiting=1; continue;; esac  # still stopping
      if rabbitmq-queues -q shrink "$node" </dev/null >/dev/null 2>&1 \
          && rabbitmqctl -q forget_cluster_node "$node" </dev/null >/dev/null 2>&1; then
        echo "definitions-sync: removed departed node $node (cluster size $size)"
      else
        waiting=1
        echo "definitions-sync: could not remove departed node $node yet; retrying"
      fi
    done
    [ "$waiting" = 0 ] && shrunk_to="$size"
  fi
  now="$(date +%s)"
  left=""
  while read -r deadline user; do
    [ -n "$deadline" ] || continue
    kept "$user" && continue  # back in the file (a rotation undone): it stays
    if [ "$deadline" -le "$now" ] && have_users; then
      # </dev/null: the CLI reads its standard input, which is this loop's list.
      if rabbitmqctl -q delete_user "$user" </dev/null >/dev/null 2>&1 || ! cluster_users | grep -qx "$user"; then
        echo "definitions-sync: deleted rotated-out user $user"
        continue
      fi
    fi
    left="$left
$deadline $user"
  done <<PENDING
$pending
PENDING
  pending="$left"
  # Every 2 s until the first import, so the pod is ready soon after the cluster formed.
  if [ -n "$imported" ]; then sleep "$SYNC_SECONDS" & else sleep 2 & fi
  wait $!
done
""".replace("@MANAGED@", managed_user_pattern()).replace("@TOPOLOGY@", DELIVERY_EXCHANGE)
