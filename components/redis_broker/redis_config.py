"""redis.conf for a broker, and where the pod finds its other files."""

from __future__ import annotations

from ..stack_model import BrokerSpec

REDIS_PORT = 6379
DATA_DIR = "/data"
CONFIG_DIR = "/etc/redis"
# Its own path, not inside the read-only ConfigMap mount at CONFIG_DIR.
AUTH_DIR = "/etc/redis-auth"
CONFIG_FILE = "redis.conf"
# Where workers put tasks past their delivery cap (gru_worker.deliveries writes it).
DEAD_LETTER_KEY = "gru:dead-letter"
ACL_FILE = "users.acl"
ADMIN_PASSWORD_FILE = "admin-password"
DROP_AFTER_FILE = "drop-after-seconds"
ACL_SYNC_FILE = "acl-sync.sh"


def redis_conf(spec: BrokerSpec) -> str:
    """The server configuration. No secret in it: the users and their password hashes are
    loaded from the ACL file in the Secret."""
    return "\n".join(
        [
            f"# Broker {spec.name!r}, rendered by gru. Edit the stack file, not this.",
            f"port {REDIS_PORT}",
            "bind * -::*",
            f"dir {DATA_DIR}",
            # Queued tasks must survive a restart: append-only file, fsync'd every second.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            # A broker must refuse writes when full, never silently evict queued tasks
            # or kombu's binding keys.
            f"maxmemory {spec.max_memory_mb}mb",
            "maxmemory-policy noeviction",
            f"aclfile {AUTH_DIR}/{ACL_FILE}",
            "",
        ]
    )
