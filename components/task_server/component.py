"""The TaskServer component: a fleet of Celery workers consuming one broker's queues."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from ..broker import Broker
from ..spec import TaskServerSpec
from . import manifests

TYPE_TOKEN = "gru:index:TaskServer"


class TaskServer(pulumi.ComponentResource):
    """Celery workers for `spec`, always behind their broker.

    The component and every resource in it depend on the Broker, so Pulumi creates and awaits
    Redis first and deletes the workers before it; each pod's init container waits for Redis
    too. Outputs: `deployment_name`, `replicas`, `concurrency`.
    """

    deployment_name: pulumi.Output[str]
    replicas: pulumi.Output[int]
    concurrency: pulumi.Output[int]

    def __init__(self, spec: TaskServerSpec, broker: Broker,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[broker]))
        super().__init__(TYPE_TOKEN, spec.name, None, opts)
        self.spec = spec
        self.names = names = manifests.TaskServerNames(spec)
        child = pulumi.ResourceOptions(parent=self, depends_on=[broker])

        dep = manifests.deployment(
            spec,
            names,
            broker_host=broker.host,
            broker_secret=broker.secret_name,
            broker_image=broker.spec.image,
            credentials_hash=broker.credentials_hash,
        )
        self.deployment = k8s.apps.v1.Deployment(
            names.deployment, metadata=dep["metadata"], spec=dep["spec"], opts=child
        )

        self.deployment_name = pulumi.Output.from_input(names.deployment)
        self.replicas = pulumi.Output.from_input(spec.replicas)
        self.concurrency = pulumi.Output.from_input(spec.concurrency_per_replica)
        self.register_outputs(
            {"deployment_name": self.deployment_name, "replicas": self.replicas, "concurrency": self.concurrency}
        )
