"""The TaskServer component: a fleet of Celery workers consuming one broker's queues."""

from __future__ import annotations

import pulumi

from .. import kubernetes_objects
from ..rabbitmq_broker import RabbitMQBroker
from ..redis_broker import RedisBroker
from ..stack_model import TaskServerSpec
from ..stack_model.stack import ROLLOUT_ALLOWANCE_SECONDS
from . import manifests

TYPE_TOKEN = "gru:index:TaskServer"
# What pulumi-kubernetes waits for a Deployment by default (create, update and delete alike).
PROVIDER_DEFAULT_WAIT_SECONDS = ROLLOUT_ALLOWANCE_SECONDS


def engine_timeouts(spec: TaskServerSpec) -> pulumi.CustomTimeouts:
    """Waits long enough for the workers' warm shutdown.

    Deleting the Deployment (removing the task server, `pulumi destroy`) lasts until its pods
    are gone, and a rollout until the old ones are: each may take its full grace period
    (630 s by default), past the provider's 10-minute default, which would fail the update.
    """
    wait = f"{spec.termination_grace_seconds + PROVIDER_DEFAULT_WAIT_SECONDS}s"
    return pulumi.CustomTimeouts(create=f"{PROVIDER_DEFAULT_WAIT_SECONDS}s", update=wait, delete=wait)


class TaskServer(pulumi.ComponentResource):
    """Celery workers for `spec`, always behind their broker.

    The component and every resource in it depend on their broker, so Pulumi creates and awaits
    the broker first and deletes the workers before it; each pod's init container waits for it
    too. With autoscaling on, KEDA owns the replica count above the `replicas` floor and the
    program leaves it alone. Outputs: `deployment_name`, `replicas`, `concurrency`.
    """

    deployment_name: pulumi.Output[str]
    replicas: pulumi.Output[int]
    concurrency: pulumi.Output[int]

    def __init__(self, spec: TaskServerSpec, broker: RedisBroker | RabbitMQBroker, visibility_timeout_seconds: int | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[broker]))
        super().__init__(TYPE_TOKEN, spec.name, None, opts)
        self.spec = spec
        self.names = names = manifests.TaskServerNames(spec)
        child = pulumi.ResourceOptions(parent=self, depends_on=[broker])

        kubernetes_objects.create(manifests.service_account(names), child)
        kubernetes_objects.create(manifests.network_policy(names), child)
        kubernetes_objects.create(manifests.disruption_budget(names), child)
        scaled = spec.autoscaling.enabled
        self.deployment = kubernetes_objects.create(
            manifests.deployment(
                spec,
                names,
                broker_host=broker.host,
                broker_secret=broker.secret_name,
                broker_client_label=broker.spec.client_label_key,
                credentials_hash=broker.credentials_hash,
                visibility_timeout_seconds=visibility_timeout_seconds,
            ),
            pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                # The autoscaler moves spec.replicas; the next `pulumi up` must not move it back.
                ignore_changes=["spec.replicas"] if scaled else None,
                custom_timeouts=engine_timeouts(spec),
            )),
        )
        if scaled:
            auth = kubernetes_objects.create(manifests.trigger_authentication(names, broker.keda_auth()), child)
            kubernetes_objects.create(
                manifests.scaled_object(spec, names, broker.keda_trigger),
                pulumi.ResourceOptions(parent=self, depends_on=[broker, auth, self.deployment]),
            )

        self.deployment_name = pulumi.Output.from_input(names.deployment)
        self.replicas = pulumi.Output.from_input(spec.replicas)
        self.concurrency = pulumi.Output.from_input(spec.concurrency_per_replica)
        self.register_outputs(
            {"deployment_name": self.deployment_name, "replicas": self.replicas, "concurrency": self.concurrency}
        )
