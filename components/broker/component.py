"""The Broker component: one Redis server that task servers and agents share."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pulumi

from .. import kubernetes_objects
from ..spec import BrokerSpec
from . import manifests
from .password import GeneratedPassword
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
    """Redis as a Celery broker: Secret, config, identity, Services, NetworkPolicy,
    disruption budget and a StatefulSet with its volume (plus metrics when enabled).

    `queues` are the queues its task servers consume, for the metrics exporter; `autoscaled`
    says one of them scales with KEDA, whose operator must then reach Redis.
    Outputs: `host`, `port`, `secret_name` (holds `redis-password` and `broker-url`),
    `url` (secret) and `credentials_hash` (changes exactly when the password does).
    """

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    secret_name: pulumi.Output[str]
    url: pulumi.Output[str]
    credentials_hash: pulumi.Output[str]

    def __init__(self, spec: BrokerSpec, password: pulumi.Input[str] | None = None,
                 queues: list[str] | None = None, autoscaled: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, spec.name, None, opts)
        self.spec = spec
        self.names = names = manifests.BrokerNames(spec)
        child = pulumi.ResourceOptions(parent=self)

        if password is None:
            # Generated once and kept in state, so updates never rotate it by accident.
            password = GeneratedPassword(f"{names.base}-password", opts=child).result
        secret_password: pulumi.Output[str] = pulumi.Output.secret(password)
        # Derived from a secret, so Pulumi keeps these secret too (state, outputs, logs).
        url: pulumi.Output[str] = secret_password.apply(lambda p: broker_url(p, names.host))
        auth_conf: pulumi.Output[str] = secret_password.apply(redis_auth_conf)
        self.credentials_hash = pulumi.Output.unsecret(url.apply(credentials_hash))

        self.secret = kubernetes_objects.create(
            manifests.credentials_secret(names, secret_password, url, auth_conf), child)
        conf = redis_conf(spec)
        self.config_map = kubernetes_objects.create(manifests.config_map(names, conf), child)
        self.service_account = kubernetes_objects.create(manifests.service_account(names), child)
        self.network_policy = kubernetes_objects.create(manifests.network_policy(spec, names, autoscaled), child)
        self.disruption_budget = kubernetes_objects.create(manifests.disruption_budget(names), child)
        self.headless_service = kubernetes_objects.create(manifests.headless_service(names), child)
        self.service = kubernetes_objects.create(manifests.service(names), child)

        # Covers redis.conf and the password, so either change restarts Redis.
        config_hash = self.credentials_hash.apply(
            lambda creds: hashlib.sha256((conf + creds).encode()).hexdigest()[:16]
        )
        self.statefulset = kubernetes_objects.create(
            manifests.statefulset(spec, names, config_hash),
            pulumi.ResourceOptions(parent=self, depends_on=[self.secret, self.config_map, self.service_account],
                                   ignore_changes=[manifests.CLAIM_TEMPLATE_SIZE] if spec.storage.enabled else None),
        )
        if spec.metrics.enabled:
            after_redis = pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset])
            kubernetes_objects.create(manifests.metrics_network_policy(names), child)
            kubernetes_objects.create(manifests.metrics_deployment(spec, names, sorted(set(queues or []))), after_redis)
            kubernetes_objects.create(manifests.metrics_service(names), child)
            if spec.metrics.service_monitor:
                kubernetes_objects.create(manifests.service_monitor(names), child)
        if spec.storage.enabled:
            kubernetes_objects.patch(manifests.data_claim_size(spec, names),
                                     pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset]))

        self.host = pulumi.Output.from_input(names.host)
        self.port = pulumi.Output.from_input(REDIS_PORT)
        self.secret_name = pulumi.Output.from_input(names.secret)
        self.url = url
        # Not the URL: the SDK logs a component's outputs at debug level with secrets unwrapped
        # (seen in the engine's event log), so only non-secret outputs are registered.
        self.register_outputs({"host": self.host, "port": self.port, "secret_name": self.secret_name})
