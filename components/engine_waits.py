"""How long the engine waits for a broker's StatefulSet, read from the manifest itself.

pulumi-kubernetes waits 10 minutes for a StatefulSet to be ready after a create or update.
A rolling update restarts pods one at a time, and each may take its whole grace period to
stop and its startup probe's whole budget to start again: a three-node RabbitMQ (600 s
grace) passes 10 minutes on a routine config edit, and `pulumi up` would fail while the
rollout is going well. The waits here fit the slowest rollout the manifest allows.
"""

from __future__ import annotations

from typing import Any

import pulumi

from .stack_model.stack import ROLLOUT_ALLOWANCE_SECONDS


def _probe_budget(probe: dict[str, Any] | None) -> int:
    """The longest a probe keeps trying before the kubelet gives up (Kubernetes' defaults)."""
    if not probe:
        return 0
    return int(probe.get("initialDelaySeconds", 0)) + int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))


def statefulset_timeouts(manifest: dict[str, Any]) -> pulumi.CustomTimeouts:
    spec = manifest["spec"]
    pod = spec["template"]["spec"]
    replicas = int(spec.get("replicas", 1))
    grace = int(pod.get("terminationGracePeriodSeconds", 30))
    start = max((_probe_budget(c.get("startupProbe")) + _probe_budget(c.get("readinessProbe"))
                 for c in pod["containers"]), default=0)
    # Parallel pods start together; OrderedReady ones one after another.
    starting = start if spec.get("podManagementPolicy") == "Parallel" else replicas * start
    return pulumi.CustomTimeouts(
        create=f"{starting + ROLLOUT_ALLOWANCE_SECONDS}s",
        update=f"{replicas * (grace + start) + ROLLOUT_ALLOWANCE_SECONDS}s",
        delete=f"{grace + ROLLOUT_ALLOWANCE_SECONDS}s",
    )
