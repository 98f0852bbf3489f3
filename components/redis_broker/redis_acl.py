"""Who may do what on a Redis broker: one ACL user per kind of client, least privilege each.

Every user but `admin` holds two passwords: the one its clients use now, and the next one,
staged ahead. A rotation moves clients onto the staged password, which Redis already
accepts, so no client ever sees WRONGPASS; the old password leaves Redis only after every
client that held it is gone (see acl_sync.py). Passwords appear here only as SHA-256 hashes,
the form Redis stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AclUser:
    name: str
    # Redis ACL rules after the passwords: key and channel patterns, then commands.
    rules: str
    # Rotated by `password_rotation`; admin never leaves the Redis pod and is not.
    rotates: bool = True


# Agents that enqueue tasks and read their results: Celery's client side, and `celery control`
# revokes. Kept as the default user, so URLs without a user name (`redis://:pw@host`) work.
AGENT = AclUser(
    "default",
    "~* &* -@all +@connection -@dangerous +select +ping +lpush +rpush +llen +sadd +smembers +sismember +scard "
    "+get +mget +del +exists +expire +publish +subscribe +unsubscribe +psubscribe +punsubscribe "
    "+multi +exec +discard +watch +unwatch",
)
# Celery workers: everything kombu and Celery use (lists, hashes, sorted sets, sets, the
# binding-TTL script, pub/sub), nothing that can destroy or reconfigure the server.
WORKER = AclUser("worker", "~* &* +@all -@dangerous -@admin")
# redis_exporter: server figures and the lengths of the keys it watches. 1.62 reads
# `LATENCY HISTOGRAM` at every scrape (refused, it logs NOPERM and drops those metrics).
EXPORTER = AclUser(
    "exporter",
    "~* &* -@all +@connection -@dangerous +select +ping +info +config|get +client|list +slowlog|get +slowlog|len "
    "+latency|latest +latency|histogram +memory|usage +type +llen +scard +zcard +hlen +strlen +get +scan",
)
# KEDA's redis scaler counts a queue with EVAL of a script that calls TYPE, then LLEN for a
# list (pkg/scalers/redis_scaler.go). Redis checks each command a script calls against the
# caller's rules, so EVAL grants nothing more. (Its keys cannot be read-only, %R~: Redis
# counts the keys of an EVAL as written.)
KEDA = AclUser("keda", "~* -@all +@connection -@dangerous +select +ping +eval +type +llen")
# The Redis pod's own probes and its ACL sync sidecar (never mounted anywhere else).
ADMIN = AclUser(
    "admin",
    "-@all +@connection -@dangerous +ping +acl|setuser +acl|getuser +acl|list",
    rotates=False,
)
USERS: tuple[AclUser, ...] = (AGENT, WORKER, EXPORTER, KEDA, ADMIN)


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def acl_file(passwords: Mapping[str, Sequence[str]]) -> str:
    """The ACL file Redis loads at start and the sync sidecar applies live.

    `passwords` maps each user's name to the passwords it accepts (current first)."""
    lines: list[str] = []  # Redis allows no comments in an ACL file
    for user in USERS:
        hashes = " ".join(f"#{password_hash(p)}" for p in dict.fromkeys(passwords[user.name]))
        lines.append(f"user {user.name} on {hashes} {user.rules}")
    return "\n".join(lines) + "\n"
