"""redis.conf for a broker, and the password snippet that lives only in its Secret."""

from __future__ import annotations

from ..spec import BrokerSpec

REDIS_PORT = 6379
DATA_DIR = "/data"
CONFIG_DIR = "/etc/redis"
# Its own path, not inside the read-only ConfigMap mount at CONFIG_DIR.
AUTH_DIR = "/etc/redis-auth"
CONFIG_FILE = "redis.conf"
# Where workers put tasks past their delivery cap (gru_worker.deliveries writes it).
DEAD_LETTER_KEY = "gru:dead-letter"
AUTH_FILE = "auth.conf"


def redis_conf(spec: BrokerSpec) -> str:
    """The server configuration. No secret in it: the password is `include`d from the Secret."""
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
            f"include {AUTH_DIR}/{AUTH_FILE}",
            "",
        ]
    )


def redis_auth_conf(password: str) -> str:
    """`requirepass` with every byte hex-escaped, so no password character can break the file."""
    escaped = "".join(
        ch if ch.isascii() and ch.isalnum() else "".join(f"\\x{b:02x}" for b in ch.encode())
        for ch in password
    )
    return f'requirepass "{escaped}"\n'
