"""The Pulumi program: a stack file's components, brokers first, and their exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pulumi
from pulumi.runtime.config import get_config, is_config_secret

from . import kubernetes_objects
from .namespace import namespace as namespace_manifest
from .rabbitmq_broker import RabbitMQBroker
from .rabbitmq_broker.definitions import DeliveryLimit
from .redis_broker import RedisBroker
from .stack_model import AnyBrokerSpec, RabbitMQBrokerSpec, StackSpec, load_stack_spec, stack_file
from .task_server import TaskServer

AnyBroker = RedisBroker | RabbitMQBroker

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = PROJECT_ROOT / "stacks"


def password_config_key(broker_name: str) -> str:
    """`pulumi config set --secret <broker>-password ...` sets a broker's password."""
    return f"{broker_name}-password"


def run(stacks_dir: Path = STACKS_DIR, settle: Callable[[], None] | None = None) -> None:
    """The whole program: read and validate this stack's file, then register its components."""
    deploy(load_current_stack(stacks_dir), settle)


def load_current_stack(stacks_dir: Path = STACKS_DIR) -> StackSpec:
    path = stack_file(stacks_dir, pulumi.get_stack())
    try:
        display = str(path.relative_to(Path.cwd()))
    except ValueError:
        display = str(path)
    return load_stack_spec(path, display)


class PlaintextPasswordError(Exception):
    """A broker password set in stack config without `--secret`."""


def _configured_password(config: pulumi.Config, broker_name: str) -> pulumi.Output[str] | None:
    key = password_config_key(broker_name)
    full_key = config.full_key(key)
    if get_config(full_key) is None:
        return None
    if not is_config_secret(full_key):
        raise PlaintextPasswordError(
            f"stack config {full_key} holds broker {broker_name!r}'s password in plaintext. "
            f"Fix: pulumi config rm {key} && pulumi config set --secret {key} (it prompts for the value)"
        )
    return config.require_secret(key)


def deploy(spec: StackSpec, settle: Callable[[], None] | None = None) -> None:
    """Register every component of `spec`; brokers first, each task server behind its broker.

    Task servers are not kept once constructed: nothing reads them again, and holding every one
    (with its resources, outputs and futures) was most of a big render's memory. `settle`, if
    given, is called after each task server. The mock engine passes one that lets the
    registrations made so far finish, so a render holds a few task servers' resources in flight
    rather than all of them. `pulumi up` passes none: the engine's concurrency is its own.
    """
    config = pulumi.Config()
    brokers: dict[str, AnyBroker] = {}
    # Every password is checked before anything is registered: nothing half-applied.
    passwords = {b.name: _configured_password(config, b.name) for b in spec.brokers}
    namespaces: dict[str, pulumi.Resource] = {}
    for broker_spec in spec.brokers:
        if broker_spec.create_namespace and broker_spec.namespace not in namespaces:
            # Kept on `pulumi destroy`: deleting a namespace deletes the broker's volume with it.
            namespaces[broker_spec.namespace] = kubernetes_objects.create(
                namespace_manifest(broker_spec.namespace), pulumi.ResourceOptions(retain_on_delete=True)
            )
    for broker_spec in spec.brokers:
        owned = namespaces.get(broker_spec.namespace) if broker_spec.create_namespace else None
        broker = _broker(spec, broker_spec, passwords[broker_spec.name],
                         pulumi.ResourceOptions(depends_on=[owned] if owned else None))
        brokers[broker_spec.name] = broker
        pulumi.export(f"{broker_spec.name}_host", broker.host)
        pulumi.export(f"{broker_spec.name}_port", broker.port)
        pulumi.export(f"{broker_spec.name}_secret_name", broker.secret_name)
    # Once per broker: asked per task server, it scanned every task server each time.
    visibility_timeouts = {b.name: spec.visibility_timeout_of(b) for b in spec.brokers}
    for server_spec in spec.task_servers:
        broker = brokers[server_spec.broker_resource_name]
        server = TaskServer(server_spec, broker,
                            visibility_timeout_seconds=visibility_timeouts[server_spec.broker_resource_name])
        pulumi.export(f"{server_spec.name}_deployment_name", server.deployment_name)
        pulumi.export(f"{server_spec.name}_replicas", server.replicas)
        pulumi.export(f"{server_spec.name}_concurrency", server.concurrency)
        if settle is not None:
            settle()


def _broker(spec: StackSpec, broker_spec: AnyBrokerSpec, password: pulumi.Output[str] | None,
            opts: pulumi.ResourceOptions) -> AnyBroker:
    """The component a broker's `type:` selects, told what its task servers need of it."""
    servers = spec.task_servers_of(broker_spec)
    autoscaled = any(server.autoscaling.enabled for server in servers)
    if isinstance(broker_spec, RabbitMQBrokerSpec):
        limits = [DeliveryLimit(s.name, tuple(s.queues), s.max_deliveries) for s in servers]
        return RabbitMQBroker(broker_spec, password=password, delivery_limits=limits, autoscaled=autoscaled,
                              consumer_timeout_seconds=spec.unacknowledged_limit_of(broker_spec),
                              password_drop_after_seconds=spec.password_drop_after_of(broker_spec), opts=opts)
    return RedisBroker(broker_spec, password=password, queues=[q for s in servers for q in s.queues],
                  autoscaled=autoscaled, password_drop_after_seconds=spec.password_drop_after_of(broker_spec),
                  opts=opts)
