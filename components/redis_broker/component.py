"""The RedisBroker component: one Redis server that task servers and agents share."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pulumi

from .. import kubernetes_objects
from ..engine_waits import statefulset_timeouts
from ..generated_password import GeneratedPassword
from ..stack_model import BrokerSpec
from . import manifests, redis_acl
from .acl_sync import SCRIPT as ACL_SYNC_SCRIPT
from .redis_config import REDIS_PORT, redis_conf

TYPE_TOKEN = "gru:index:RedisBroker"
# Its type until 0.3.0: stacks created then keep their objects (the children's URNs follow the
# parent's alias), with no replace.
PREVIOUS_TYPE_TOKENS = ("gru:index:Broker",)


def broker_url(password: str, host: str, user: str = "") -> str:
    """`redis://[user]:<password>@host:6379/0` with the password URL-encoded (`@:/%#?` included)."""
    return f"redis://{user}:{quote(password, safe='')}@{host}:{REDIS_PORT}/0"


def credentials_hash(url: str) -> str:
    """A non-reversible fingerprint of credentials, for rollout annotations.

    Salted and stretched, because the annotation is plain text and a user-chosen password
    may be weak enough to guess from a bare SHA-256.
    """
    return hashlib.pbkdf2_hmac("sha256", url.encode(), b"gru-broker-credentials", 100_000).hex()[:16]


class RedisBroker(pulumi.ComponentResource):
    """Redis as a Celery broker: Secret, config, identity, Services, NetworkPolicy,
    disruption budget and a StatefulSet with its volume (plus the exporter when enabled).

    Each kind of client has its own ACL user and password (redis_acl.py). `queues` are the
    queues its task servers consume, for the metrics exporter; `autoscaled` says one of them
    scales with KEDA, whose operator must then reach Redis; `password_drop_after_seconds` is
    how long a rotated-out password stays valid (the longest rollout of its task servers).
    Outputs: `host`, `port`, `secret_name` (holds `redis-password` and `broker-url` for agents,
    `worker-url` for workers), `url` (the agents' URL, secret) and `credentials_hash`
    (changes exactly when the workers' password does).
    """

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    secret_name: pulumi.Output[str]
    url: pulumi.Output[str]
    credentials_hash: pulumi.Output[str]

    def __init__(self, spec: BrokerSpec, password: pulumi.Input[str] | None = None,
                 queues: list[str] | None = None, autoscaled: bool = False,
                 password_drop_after_seconds: int = 0,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        aliases = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=token) for token in PREVIOUS_TYPE_TOKENS])
        super().__init__(TYPE_TOKEN, spec.name, None, pulumi.ResourceOptions.merge(opts, aliases))
        self.spec = spec
        self.names = names = manifests.BrokerNames(spec)
        child = pulumi.ResourceOptions(parent=self)

        accepted: dict[str, pulumi.Output[list[str]]] = {}
        current: dict[str, pulumi.Output[str]] = {}
        for user in redis_acl.USERS:
            # The agents' password keeps the name it has had since the broker had one user.
            resource = f"{names.base}-password" if user is redis_acl.AGENT else f"{names.base}-{user.name}-password"
            # Generated once and kept in state, so updates never rotate it by accident; with its
            # successor staged, which Redis accepts before any client uses it. Generated even
            # when one is set in config, so that setting or unsetting one never creates or
            # deletes a resource, and the generated one is there to fall back to.
            generated_password = GeneratedPassword(
                resource, rotation=spec.password_rotation if user.rotates else "", opts=child)
            if user is redis_acl.AGENT and password is not None:
                # Set in stack config: the agents' password is the user's to rotate.
                current[user.name] = pulumi.Output.secret(password)
                accepted[user.name] = current[user.name].apply(lambda p: [p])
            else:
                current[user.name] = pulumi.Output.secret(generated_password.result)
                accepted[user.name] = pulumi.Output.all(generated_password.result, generated_password.next)

        # Derived from secrets, so Pulumi keeps these secret too (state, outputs, logs).
        url: pulumi.Output[str] = current[redis_acl.AGENT.name].apply(lambda p: broker_url(p, names.host))
        worker_url: pulumi.Output[str] = current[redis_acl.WORKER.name].apply(
            lambda p: broker_url(p, names.host, redis_acl.WORKER.name))
        users_file: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(**accepted).apply(lambda by_user: redis_acl.acl_file(by_user)))
        self.credentials_hash = pulumi.Output.unsecret(worker_url.apply(credentials_hash))
        exporter_hash = pulumi.Output.unsecret(current[redis_acl.EXPORTER.name].apply(credentials_hash))

        self.secret = kubernetes_objects.create(
            manifests.credentials_secret(names, current, url, worker_url, users_file, password_drop_after_seconds), child)
        conf = redis_conf(spec)
        self.config_map = kubernetes_objects.create(manifests.config_map(names, conf, ACL_SYNC_SCRIPT), child)
        self.service_account = kubernetes_objects.create(manifests.service_account(names), child)
        self.network_policy = kubernetes_objects.create(manifests.network_policy(spec, names, autoscaled), child)
        self.disruption_budget = kubernetes_objects.create(manifests.disruption_budget(names), child)
        self.headless_service = kubernetes_objects.create(manifests.headless_service(names), child)
        self.service = kubernetes_objects.create(manifests.service(names), child)

        # Covers redis.conf and the sync script: a change restarts Redis. Passwords do not:
        # the sidecar applies a new users file to the running server.
        config_hash = hashlib.sha256((conf + ACL_SYNC_SCRIPT).encode()).hexdigest()[:16]
        statefulset = manifests.statefulset(spec, names, config_hash)
        self.statefulset = kubernetes_objects.create(
            statefulset,
            pulumi.ResourceOptions(parent=self, depends_on=[self.secret, self.config_map, self.service_account],
                                   ignore_changes=[manifests.CLAIM_TEMPLATE_SIZE] if spec.storage.enabled else None,
                                   custom_timeouts=statefulset_timeouts(statefulset)),
        )
        if spec.metrics.enabled:
            after_redis = pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset])
            kubernetes_objects.create(manifests.metrics_network_policy(names), child)
            kubernetes_objects.create(manifests.metrics_deployment(spec, names, sorted(set(queues or [])), exporter_hash), after_redis)
            kubernetes_objects.create(manifests.metrics_service(names), child)
            if spec.metrics.service_monitor:
                kubernetes_objects.create(manifests.service_monitor(names, spec.metrics.service_monitor_labels), child)
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

    def keda_trigger(self, queue: str, target: int) -> manifests.Manifest:
        return manifests.keda_trigger(self.names, queue, target)

    def keda_auth(self) -> list[manifests.Manifest]:
        return manifests.keda_auth(self.secret_name)
