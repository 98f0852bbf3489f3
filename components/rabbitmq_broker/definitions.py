"""The broker's definitions files: users, permissions, each task server's delivery limit and the
exchanges, queues and bindings Celery uses (topology.py). A node loads the first three at boot
(`boot_definitions`); the definitions-sync sidecar imports all of it once the cluster has
formed, and again on every change (it also gives each quorum queue a member on its node).

The dead-letter exchange and queue the policies name are declared by the workers instead
(worker/gru_worker/dead_letter.py): a quorum queue declared from the definitions at boot,
before the nodes have clustered, would get a single member for good.

It lives in the broker's Secret (it carries password hashes). RabbitMQ stores only salted
SHA-256 hashes; the salt is derived from the password, so the same passwords always render
the same file and a `pulumi up` with no change leaves the Secret alone.

A RabbitMQ user has one password, so a rotation with no failed login needs a user per
password: each role's password in use and its staged successor are two users of the same
rights (`logins`). A rotation moves clients onto the staged user, which every node already
knows; the rotated-out user leaves the file, and the sidecar deletes it only after the
longest rollout of the broker's task servers (definitions_sync.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass

from .rabbitmq_config import VHOST
from .topology import topology

HASHING = "rabbit_password_hashing_sha256"
# What the workers declare (gru_worker.dead_letter; a test holds the two to the same names).
DEAD_LETTER_EXCHANGE = "gru.dead-letter"
DEAD_LETTER_QUEUE = "gru.dead-letter"


@dataclass(frozen=True)
class User:
    name: str
    tags: tuple[str, ...]
    # configure, write, read regexes on the vhost
    permissions: tuple[str, str, str]


FULL = (".*", ".*", ".*")
# Agents publish tasks (and declare the queues they publish to, as Celery does).
AGENT = User("agent", (), FULL)
# Workers consume, and declare their queues and the delayed-delivery topology.
WORKER = User("worker", (), FULL)
# KEDA reads queue depths through the HTTP API: monitoring rights, no message access.
KEDA = User("keda", ("monitoring",), ("^$", "^$", "^$"))
USERS = (AGENT, WORKER, KEDA)


@dataclass(frozen=True)
class Login:
    """One RabbitMQ user: a role's password, in use or staged."""

    role: User
    name: str
    password: str


def login_name(role: User, password: str, *, original: bool) -> str:
    """The user that holds `password`. The password a broker started with keeps the role's own
    name (so brokers made before rotation existed keep their users and URLs); every staged or
    rotated-in one is `<role>-<8 hex digits>`, a salted digest of it that reveals nothing."""
    if original:
        return role.name
    return f"{role.name}-{hashlib.sha256(f'gru-rabbitmq-user:{role.name}:{password}'.encode()).hexdigest()[:8]}"


def logins(role: User, current: str, staged: str | None, *, rotated: bool) -> list[Login]:
    """A role's users, the one in use first: its current password (rotated in, or the original)
    and the staged successor, which RabbitMQ accepts before any client uses it. `staged` is None
    for a password set in stack config, which has no successor."""
    out = [Login(role, login_name(role, current, original=not rotated), current)]
    if staged is not None and staged != current:
        out.append(Login(role, login_name(role, staged, original=False), staged))
    return out


def managed_user_pattern() -> str:
    """The user names this program owns (sh `case` pattern): the sidecar deletes those of them
    that leave the file, and never touches any other user."""
    digit = "[0-9a-f]"
    return "|".join(f"{role.name}|{role.name}-{digit * 8}" for role in USERS)


@dataclass(frozen=True)
class DeliveryLimit:
    """A task server's queues and how often one task may be delivered before it is dead-lettered."""

    server: str
    queues: tuple[str, ...]
    max_deliveries: int


def password_hash(user: str, password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = hashlib.sha256(f"gru-rabbitmq-salt:{user}:{password}".encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def queue_pattern(queues: tuple[str, ...]) -> str:
    return "^(" + "|".join(re.escape(q) for q in sorted(queues)) + ")$"


def policy(limit: DeliveryLimit) -> dict[str, object]:
    """A task returned `max_deliveries` times (its worker died with it each time) goes to the
    dead-letter queue instead of looping forever. RabbitMQ counts returns, so the limit is one
    less than the deliveries allowed. At-least-once dead-lettering keeps the task until the
    dead-letter queue has confirmed it, which RabbitMQ allows only with reject-publish."""
    return {
        "vhost": VHOST,
        "name": f"gru-{limit.server}",
        "pattern": queue_pattern(limit.queues),
        # The pattern names only this server's queues (never Celery's celery_delayed_* ones,
        # whose own dead-lettering a policy would override); "queues" works on every version.
        "apply-to": "queues",
        "priority": 10,
        "definition": {
            "delivery-limit": limit.max_deliveries - 1,
            "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        },
    }


def users_and_permissions(users: list[Login]) -> dict[str, object]:
    """The definitions' users (salted hashes, with their role's tags) and their rights."""
    return {
        "users": [{"name": u.name, "password_hash": password_hash(u.name, u.password),
                   "hashing_algorithm": HASHING, "tags": list(u.role.tags)} for u in users],
        "permissions": [{"user": u.name, "vhost": VHOST, "configure": u.role.permissions[0],
                         "write": u.role.permissions[1], "read": u.role.permissions[2]} for u in users],
    }


def _access(users: list[Login], limits: list[DeliveryLimit]) -> dict[str, object]:
    return {**users_and_permissions(users), "vhosts": [{"name": VHOST}],
            "policies": [policy(limit) for limit in limits]}


def definitions(users: list[Login], limits: list[DeliveryLimit]) -> str:
    """The whole definitions JSON for these users and the task servers' limits: what the sidecar
    imports into the formed cluster."""
    document = {**_access(users, limits), **topology([queue for limit in limits for queue in limit.queues])}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def boot_definitions(users: list[Login], limits: list[DeliveryLimit]) -> str:
    """What a node loads at boot: the same users, permissions and policies, and no exchanges,
    queues or bindings, so no quorum queue is declared while the cluster is still forming."""
    return json.dumps(_access(users, limits), indent=2, sort_keys=True) + "\n"


def user_list(users: list[Login]) -> str:
    """The names the definitions hold, one per line: what the sidecar keeps."""
    return "".join(f"{u.name}\n" for u in users)
