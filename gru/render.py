"""`gru render`: the Kubernetes manifests a stack would create, written without engine or cluster.

The real program runs under the mock engine; every Kubernetes resource it registers becomes
one YAML file, numbered in the order the engine would create them (brokers first). Secret
values are redacted unless asked for.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime import rpc

from components.program import STACKS_DIR, run
from components.stack_model import load_stack_spec, stack_file

from .mock_engine import Evaluation, Registration, Settle, evaluate
from .stack_config import read_stack_config

REDACTED = "<redacted: use --show-secrets to see>"
_RENDERED_FILE = re.compile(r"^\d{3,}-.*\.yaml$")


@dataclass(frozen=True)
class RenderedObject:
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def namespace(self) -> str:
        """The object's namespace, or `cluster` for cluster-scoped objects."""
        return str(self.manifest["metadata"].get("namespace", "cluster"))


def evaluate_stack(stack: str, stacks_dir: Path = STACKS_DIR, secret_config: dict[str, str] | None = None,
                   stable_secrets: bool = False) -> Evaluation:
    """Run the program for `stack` under the mock engine, with the stack's readable config.

    `secret_config` adds secret config values (full keys, e.g. `gru:redis-password`), as
    `pulumi config set --secret` would.
    """
    config, secret_keys = read_stack_config(stacks_dir, stack)
    config = {**config, **(secret_config or {})}
    secret_keys = [*secret_keys, *(secret_config or {})]
    return evaluate(lambda: run(stacks_dir, settle=Settle()), stack=stack, config=config, secret_keys=secret_keys,
                    stable_secrets=stable_secrets)


# Helm's install order: what a workload mounts or runs as exists before the workload.
_KIND_ORDER = [
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget",
    "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "Role", "RoleBinding",
    "Service", "DaemonSet", "Pod", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job",
    "CronJob", "Ingress", "TriggerAuthentication", "ScaledObject", "ServiceMonitor",
]
# Brokers (of every type) before the task servers that depend on them.
_COMPONENT_ORDER = [{"gru:index:RedisBroker", "gru:index:RabbitMQBroker"}, {"gru:index:TaskServer"}]


def creation_order(evaluation: Evaluation, file_order: list[str] | None = None) -> list[Registration]:
    """Kubernetes objects in a stable order the engine could create them in: stack-level
    objects, then component by component (brokers first, each kind in the order of the stack
    file), and within one by kind. The engine registers components concurrently, so the order
    they arrived in is not used: it differs from run to run."""
    components = [r for r in evaluation.registrations if not r.custom]
    position = {name: i for i, name in enumerate(file_order or [])}
    rank = {
        c.urn: (next((i for i, types in enumerate(_COMPONENT_ORDER) if c.type in types), len(_COMPONENT_ORDER)),
                position.get(c.name, len(position)))
        for c in components
    }
    objects = evaluation.kubernetes_objects

    def key(r: Registration) -> tuple[tuple[int, int], int, str]:
        kind = str(r.inputs.get("kind", ""))
        kind_rank = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
        # Stack-level objects (the namespace) come before every component.
        return rank.get(r.parent, (-1, 0)), kind_rank, r.name

    return sorted(objects, key=key)


def render_stack(stack: str, stacks_dir: Path = STACKS_DIR, show_secrets: bool = False,
                 secret_config: dict[str, str] | None = None) -> list[RenderedObject]:
    # Redacted output gets stable stand-in passwords, so renders of the same stack are
    # byte-identical (PR diffs show only real changes); shown secrets are always fresh.
    evaluation = evaluate_stack(stack, stacks_dir, secret_config, stable_secrets=not show_secrets)
    spec = load_stack_spec(stack_file(stacks_dir, stack))
    file_order = [b.name for b in spec.brokers] + [t.name for t in spec.task_servers]
    pending = deque(creation_order(evaluation, file_order))
    # Each registration is let go once it is rendered, so the engine's form and the rendered
    # form of the stack are never both held whole.
    del evaluation
    objects = []
    while pending:
        manifest = _manifest(pending.popleft().inputs)
        if manifest.get("kind") == "Secret" and not show_secrets:
            manifest = _redacted(manifest)
        objects.append(RenderedObject(manifest))
    return objects


def write_manifests(objects: list[RenderedObject], out_dir: Path) -> list[Path]:
    """One file per object, `NNN-<kind>-<namespace>-<name>.yaml`; earlier renders are replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.iterdir():
        if old.is_file() and _RENDERED_FILE.match(old.name):
            old.unlink()
    written = []
    # Padded to the width of the count, so names sort in creation order past 999 objects too.
    width = max(3, len(str(len(objects))))
    for index, obj in enumerate(objects, start=1):
        path = out_dir / f"{index:0{width}d}-{obj.kind.lower()}-{obj.namespace}-{obj.name}.yaml"
        path.write_text(yaml.dump(obj.manifest, Dumper=_ManifestDumper, sort_keys=False), encoding="utf-8")
        if obj.kind == "Secret":
            path.chmod(0o600)
        written.append(path)
    return written


# LibYAML's emitter where PyYAML was built with it (a wheel always is): the pure-Python emitter
# was 29% of a 300-task-server render.
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _ManifestDumper(_SafeDumper):  # type: ignore[valid-type,misc]
    """Multi-line strings (redis.conf, the wait script) as readable `|` blocks."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.startswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _str_presenter)


def _manifest(value: Any) -> Any:
    """Engine values back to manifest values, in one pass: secrets unwrapped (redaction is by
    kind), protobuf's float numbers back to the ints manifests use, and keys in the order
    people write manifests, the rest alphabetical (stable, diffable output)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _manifest(value["value"])
        keys = sorted(value, key=_key_rank)
        return {k: _manifest(value[k]) for k in keys}
    if isinstance(value, list):
        return [_manifest(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_KEY_ORDER = ("apiVersion", "kind", "name", "namespace", "metadata", "labels", "annotations", "type", "spec")


def _key_rank(key: str) -> tuple[int, str]:
    return (_KEY_ORDER.index(key) if key in _KEY_ORDER else len(_KEY_ORDER), key)


def _redacted(manifest: dict[str, Any]) -> dict[str, Any]:
    out = dict(manifest)
    for key in ("data", "stringData"):
        if key in out:
            out[key] = {k: REDACTED for k in out[key]}
    return out
