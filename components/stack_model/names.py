"""Logical component names and the Kubernetes names they become.

A stack file names components the way people write them (`task_server`); Kubernetes
objects need DNS-1035 labels (`task-server`). The mapping is one rule, applied in one
place, so the rendered names are predictable from the YAML.
"""

from __future__ import annotations

import re

# Services must be DNS-1035 labels (start with a letter). Derived names add suffixes
# such as `-headless`, `-credentials` and the StatefulSet's `-<revision hash>` label
# value, all of which must stay within Kubernetes' 63-character label limit.
MAX_NAME_LENGTH = 40
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def kubernetes_name(logical_name: str) -> str:
    """`task_server` -> `task-server`: the one mapping from YAML names to Kubernetes names."""
    return logical_name.replace("_", "-")


def kubernetes_name_problem(logical_name: str) -> str | None:
    """Why `logical_name` cannot become a Kubernetes name, or None when it can."""
    k8s = kubernetes_name(logical_name)
    if not k8s:
        return "is empty"
    if len(k8s) > MAX_NAME_LENGTH:
        return f"is {len(k8s)} characters long; the limit is {MAX_NAME_LENGTH}"
    if not _DNS_1035_LABEL.match(k8s):
        return (
            f"becomes the Kubernetes name {k8s!r}, which is not a valid DNS-1035 label "
            "(lowercase letters, digits and '-' or '_', starting with a letter and "
            "ending with a letter or digit)"
        )
    return None
