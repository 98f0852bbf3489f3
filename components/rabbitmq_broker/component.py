"""The RabbitMQBroker component: a RabbitMQ cluster whose task queues are quorum queues."""

from __future__ import annotations

import functools
import hashlib
from typing import Any
from urllib.parse import quote

import pulumi

from .. import kubernetes_objects
from ..engine_waits import statefulset_timeouts
from ..generated_password import GeneratedPassword
from ..redis_broker.component import credentials_hash
from ..stack_model import RabbitMQBrokerSpec
from . import definitions as defs
from . import manifests
from .definitions_sync import SCRIPT as SYNC_SCRIPT
from .rabbitmq_config import AMQP_PORT, MANAGEMENT_PORT, enabled_plugins, rabbitmq_conf

TYPE_TOKEN = "gru:index:RabbitMQBroker"
# Erlang cookies longer than this are accepted but gain nothing.
COOKIE_LENGTH = 48


def _generated_logins(role: defs.User, state: list[Any]) -> list[defs.Login]:
    # By the rotations count, not the `password_rotation` text: setting that back to "" is a
    # rotation too, and must not move clients onto the role's plain name unstaged.
    current, staged, rotations = state
    return defs.logins(role, current, staged, rotated=bool(rotations))


def amqp_url(user: str, password: str, host: str) -> str:
    """`amqp://user:<password>@host:5672//` (the default vhost), the password URL-encoded."""
    return f"amqp://{user}:{quote(password, safe='')}@{host}:{AMQP_PORT}//"


class RabbitMQBroker(pulumi.ComponentResource):
    """RabbitMQ as a Celery broker: Secret (passwords, Erlang cookie, definitions), config,
    identity, Services, NetworkPolicy, disruption budget and a StatefulSet of `replicas` nodes.

    `delivery_limits` are its task servers' queues and delivery caps (definitions policies);
    `autoscaled` says one of them scales with KEDA, whose operator must then reach the HTTP
    API; `consumer_timeout_seconds` is the longest a task may stay unacknowledged (its task
    servers' longest run and shutdown); `password_drop_after_seconds` how long a rotated-out
    user stays (the longest rollout of its task servers). Outputs: `host`, `port`, `secret_name` (holds
    `rabbitmq-password` and `broker-url` for agents, `worker-url` for workers), `url` (the
    agents', secret) and `credentials_hash` (changes exactly when the workers' password does).
    """

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    secret_name: pulumi.Output[str]
    url: pulumi.Output[str]
    credentials_hash: pulumi.Output[str]

    def __init__(self, spec: RabbitMQBrokerSpec, password: pulumi.Input[str] | None = None,
                 delivery_limits: list[defs.DeliveryLimit] | None = None, autoscaled: bool = False,
                 consumer_timeout_seconds: int = 1800, password_drop_after_seconds: int = 0,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, spec.name, None, opts)
        self.spec = spec
        self.names = names = manifests.RabbitMQNames(spec)
        child = pulumi.ResourceOptions(parent=self)

        # Generated once and kept in state, so updates never change them by accident; each with
        # its successor staged as a second user, which a `password_rotation` moves clients to.
        logins: dict[str, pulumi.Output[list[defs.Login]]] = {}
        for user in defs.USERS:
            generated = GeneratedPassword(f"{names.base}-{user.name}-password", rotation=spec.password_rotation,
                                          count_rotations=True, opts=child)
            if user is defs.AGENT and password is not None:
                # Set in stack config: the agents' password is the user's to rotate.
                logins[user.name] = pulumi.Output.secret(password).apply(
                    lambda p: defs.logins(defs.AGENT, p, None, rotated=False))
            else:
                logins[user.name] = pulumi.Output.all(generated.result, generated.next, generated.rotations).apply(
                    functools.partial(_generated_logins, user))
        cookie = GeneratedPassword(f"{names.base}-erlang-cookie", length=COOKIE_LENGTH, opts=child)

        # Derived from secrets, so Pulumi keeps these secret too (state, outputs, logs).
        def in_use(role: defs.User) -> pulumi.Output[defs.Login]:
            return logins[role.name].apply(lambda users: users[0])

        url: pulumi.Output[str] = in_use(defs.AGENT).apply(lambda u: amqp_url(u.name, u.password, names.host))
        worker_url: pulumi.Output[str] = in_use(defs.WORKER).apply(lambda u: amqp_url(u.name, u.password, names.host))
        keda_url: pulumi.Output[str] = in_use(defs.KEDA).apply(
            lambda u: f"http://{u.name}:{quote(u.password, safe='')}@{names.host}:{MANAGEMENT_PORT}/")
        agent_password: pulumi.Output[str] = in_use(defs.AGENT).apply(lambda u: u.password)
        limits = list(delivery_limits or [])
        every_login = pulumi.Output.all(*logins.values()).apply(lambda groups: [u for g in groups for u in g])
        definitions: pulumi.Output[str] = pulumi.Output.secret(
            every_login.apply(lambda users: defs.definitions(users, limits)))
        boot_definitions: pulumi.Output[str] = pulumi.Output.secret(
            every_login.apply(lambda users: defs.boot_definitions(users, limits)))
        # User names only (digests of passwords reveal nothing), kept secret as derived ones.
        users_file: pulumi.Output[str] = pulumi.Output.secret(every_login.apply(defs.user_list))
        self.credentials_hash = pulumi.Output.unsecret(worker_url.apply(credentials_hash))

        self.secret = kubernetes_objects.create(manifests.credentials_secret(
            spec, names, agent_password, url, worker_url, keda_url, pulumi.Output.secret(cookie.result),
            definitions, boot_definitions, users_file, password_drop_after_seconds), child)
        conf = rabbitmq_conf(spec, names.base, consumer_timeout_seconds)
        plugins = enabled_plugins()
        self.config_map = kubernetes_objects.create(manifests.config_map(names, conf, plugins, SYNC_SCRIPT), child)
        self.service_account = kubernetes_objects.create(manifests.service_account(names), child)
        self.network_policy = kubernetes_objects.create(manifests.network_policy(spec, names, autoscaled), child)
        self.disruption_budget = kubernetes_objects.create(manifests.disruption_budget(spec, names), child)
        self.headless_service = kubernetes_objects.create(manifests.headless_service(names), child)
        self.service = kubernetes_objects.create(manifests.service(spec, names), child)

        # Covers rabbitmq.conf, the plugins and the sync script: a change rolls the nodes.
        # Passwords and delivery limits do not: the sidecar imports them into the running cluster.
        config_hash = hashlib.sha256((conf + plugins + SYNC_SCRIPT).encode()).hexdigest()[:16]
        statefulset = manifests.statefulset(spec, names, config_hash)
        self.statefulset = kubernetes_objects.create(
            statefulset,
            pulumi.ResourceOptions(parent=self, depends_on=[self.secret, self.config_map, self.service_account,
                                                            self.headless_service],
                                   ignore_changes=[manifests.CLAIM_TEMPLATE_SIZE] if spec.storage.enabled else None,
                                   custom_timeouts=statefulset_timeouts(statefulset)),
        )
        if spec.metrics.service_monitor:
            kubernetes_objects.create(manifests.service_monitor(names, spec.metrics.service_monitor_labels), child)
        if spec.storage.enabled:
            for claim in names.data_claims(spec.replicas):
                kubernetes_objects.patch(manifests.data_claim_size(spec, names, claim),
                                         pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset]))

        self.host = pulumi.Output.from_input(names.host)
        self.port = pulumi.Output.from_input(AMQP_PORT)
        self.secret_name = pulumi.Output.from_input(names.secret)
        self.url = url
        # Only non-secret outputs are registered (the SDK logs component outputs unwrapped).
        self.register_outputs({"host": self.host, "port": self.port, "secret_name": self.secret_name})

    def keda_trigger(self, queue: str, target: int) -> manifests.Manifest:
        return manifests.keda_trigger(queue, target)

    def keda_auth(self) -> list[manifests.Manifest]:
        return manifests.keda_auth(self.secret_name)
