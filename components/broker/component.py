"""The Broker component: one Redis server that task servers and agents share."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from ..spec import BrokerSpec
from . import manifests
from .redis_config import REDIS_PORT, redis_auth_conf, redis_conf

TYPE_TOKEN = "gru:index:Broker"


def broker_url(password: str, host: str) -> str:
    """`redis://:<password>@host:6379/0` with the password URL-encoded (`@:/%#?` included)."""
    return f"redis://:{quote(password, safe='')}@{host}:{REDIS_PORT}/0"


def credentials_hash(url: str) -> str:
    """A non-reversible fingerprint of the credentials for the workers' rollout annotation.

    Salted and stretched, because the annotation is plain text and a user-chosen password
    may be weak enough to guess from a bare SHA-256.
    """
    return hashlib.pbkdf2_hmac("sha256", url.encode(), b"gru-broker-credentials", 100_000).hex()[:16]


class Broker(pulumi.ComponentResource):
    """Redis as a Celery broker: Secret, config, Services and a StatefulSet with its volume.

    Outputs: `host`, `port`, `secret_name` (holds `redis-password` and `broker-url`),
    `url` (secret) and `credentials_hash` (changes exactly when the password does).
    """

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    secret_name: pulumi.Output[str]
    url: pulumi.Output[str]
    credentials_hash: pulumi.Output[str]

    def __init__(self, spec: BrokerSpec, password: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, spec.name, None, opts)
        self.spec = spec
        self.names = names = manifests.BrokerNames(spec)
        child = pulumi.ResourceOptions(parent=self)

        if password is None:
            # Generated once and kept in state, so updates never rotate it by accident.
            password = random.RandomPassword(
                f"{names.base}-password", length=32, special=False, opts=child
            ).result
        secret_password: pulumi.Output[str] = pulumi.Output.secret(password)
        # Derived from a secret, so Pulumi keeps these secret too (state, outputs, logs).
        url: pulumi.Output[str] = secret_password.apply(lambda p: broker_url(p, names.host))
        auth_conf: pulumi.Output[str] = secret_password.apply(redis_auth_conf)

        secret_manifest = manifests.credentials_secret(names, secret_password, url, auth_conf)
        self.secret = k8s.core.v1.Secret(
            names.secret,
            metadata=secret_manifest["metadata"],
            type=secret_manifest["type"],
            string_data=secret_manifest["stringData"],
            opts=child,
        )

        conf = redis_conf(spec)
        config_manifest = manifests.config_map(names, conf)
        self.config_map = k8s.core.v1.ConfigMap(
            names.config_map, metadata=config_manifest["metadata"], data=config_manifest["data"], opts=child
        )

        headless = manifests.headless_service(names)
        self.headless_service = k8s.core.v1.Service(
            names.headless_service, metadata=headless["metadata"], spec=headless["spec"], opts=child
        )
        svc = manifests.service(names)
        self.service = k8s.core.v1.Service(names.service, metadata=svc["metadata"], spec=svc["spec"], opts=child)

        # The hash covers the password too (through the auth snippet's Secret), so Redis
        # restarts with a new password at the same time the workers roll to it.
        config_hash = url.apply(
            lambda u: hashlib.sha256((conf + credentials_hash(u)).encode()).hexdigest()[:16]
        )
        sts = manifests.statefulset(spec, names, pulumi.Output.unsecret(config_hash))
        self.statefulset = k8s.apps.v1.StatefulSet(
            names.statefulset,
            metadata=sts["metadata"],
            spec=sts["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.secret, self.config_map]),
        )

        self.host = pulumi.Output.from_input(names.host)
        self.port = pulumi.Output.from_input(REDIS_PORT)
        self.secret_name = self.secret.metadata.apply(lambda m: m.name or names.secret)
        self.url = url
        self.credentials_hash = pulumi.Output.unsecret(url.apply(credentials_hash))
        self.register_outputs(
            {"host": self.host, "port": self.port, "secret_name": self.secret_name, "url": self.url}
        )
