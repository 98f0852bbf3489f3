"""The Redis pod's ACL sync sidecar: applies the users file from the Secret to the running
server, so a password rotation needs no Redis restart.

The kubelet refreshes a mounted Secret in place. Every few seconds the sidecar compares the
file with what it applied; on a change it runs `ACL SETUSER` for each line, which adds the
new password hashes and keeps authenticated connections (`ACL LOAD` would disconnect every
client). A hash that is in Redis but no longer in the file is removed only after the file's
`drop-after-seconds` (the longest rollout of the broker's task servers): workers still
running on it have been replaced by then. Runs in the Redis image (sh and redis-cli only),
so the worker image never becomes part of the broker pod.
"""

from __future__ import annotations

SYNC_SECONDS = 5
# A heartbeat the loop touches each turn, for the sidecar's probes (an emptyDir).
STATE_DIR = "/run/acl-sync"
HEARTBEAT = f"{STATE_DIR}/beat"

# The script's text is in the broker's ConfigMap and its hash rolls Redis: its first comment
# keeps the path this module had until 0.3.0 (components/broker/) so that the rename restarts
# no Redis. Change it only with a change that must restart Redis anyway.
SCRIPT = r"""#!/bin/sh
# gru ACL sync: see components/broker/acl_sync.py.
set -u
# PID 1 of its container: the kernel gives it no default SIGTERM action, so without a handler
# the pod would sit out its whole grace period. The sleep below runs in the background so
# the trap runs at once, not after it.
trap 'exit 0' TERM INT
acl="$AUTH_DIR/users.acl"
export REDISCLI_AUTH="$(cat "$AUTH_DIR/admin-password")"
cli() { redis-cli --no-auth-warning --user admin -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
applied=""
pending=""  # lines of "<deadline> <user> <hash>"
while true; do
  touch "$STATE_DIR/beat"
  sum="$(md5sum "$acl" 2>/dev/null | cut -d' ' -f1)"
  if [ -n "$sum" ] && [ "$sum" != "$applied" ] && [ "$(cli ping 2>/dev/null)" = "PONG" ]; then
    ok=1
    drop_after="$(cat "$AUTH_DIR/drop-after-seconds" 2>/dev/null || echo 0)"
    now="$(date +%s)"
    while read -r kind name rules; do
      [ "$kind" = "user" ] || continue
      # shellcheck disable=SC2086  # rules are space-separated ACL tokens, none quoted
      [ "$(cli ACL SETUSER "$name" $rules)" = "OK" ] || { ok=0; echo "acl-sync: ACL SETUSER $name failed" >&2; }
      for hash in $(cli ACL GETUSER "$name" | sed -n '/^passwords$/,/^commands$/p' | grep -E '^[0-9a-f]{64}$'); do
        case " $rules " in *" #$hash "*) continue;; esac
        case "$pending" in *" $name $hash"*) continue;; esac
        pending="$pending
$((now + drop_after)) $name $hash"
        echo "acl-sync: a password of $name leaves in ${drop_after}s"
      done
    done < "$acl"
    [ "$ok" = 1 ] && applied="$sum" && echo "acl-sync: applied users file $sum"
  fi
  now="$(date +%s)"
  left=""
  while read -r deadline name hash; do
    [ -n "$deadline" ] || continue
    if [ "$deadline" -le "$now" ] && [ "$(cli ACL SETUSER "$name" "!$hash")" = "OK" ]; then
      echo "acl-sync: an old password of $name removed"
    else
      left="$left
$deadline $name $hash"
    fi
  done <<PENDING
$pending
PENDING
  pending="$left"
  sleep "$SYNC_SECONDS" & wait $!
done
"""
