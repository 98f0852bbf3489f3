"""Stack file -> StackSpec, or one SpecError listing every problem with its line and fix."""

from __future__ import annotations

import difflib
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from .broker import BrokerMetrics, BrokerSpec
from .broker_common import BrokerStorage
from .brokers import BROKER_MODELS, SUPPORTED_BROKER_TYPES, AnyBrokerSpec
from .common import ComputeResources, Toleration
from .names import kubernetes_name
from .problems import Path, Problem, SpecError
from .rabbitmq_broker import RabbitMQBrokerSpec, RabbitMQMetrics
from .stack import StackSpec
from .task_server import SUPPORTED_TASK_SERVER_TYPES, Autoscaling, Results, TaskServerSpec
from .yaml_source import YamlDocument, YamlSourceError, parse_yaml, read_yaml

SECTIONS: dict[str, type[BaseModel]] = {"broker": BrokerSpec, "task_server": TaskServerSpec}
SUPPORTED_TYPES = {"broker": SUPPORTED_BROKER_TYPES, "task_server": SUPPORTED_TASK_SERVER_TYPES}
# Models reachable under a field name, to suggest the right key for a typo anywhere.
NESTED_MODELS: dict[str, type[BaseModel]] = {
    "storage": BrokerStorage, "resources": ComputeResources, "metrics": BrokerMetrics,
    "autoscaling": Autoscaling, "tolerations": Toleration, "results": Results,
}
QUANTITY_FIELDS = {"cpu_request", "memory_request", "cpu_limit", "memory_limit", "size", "disk_free_limit"}
# Names pydantic puts in an error's location besides the user's keys: model and type names.
_ALL_MODELS: list[type[BaseModel]] = [*SECTIONS.values(), *NESTED_MODELS.values(), *BROKER_MODELS.values(),
                                      RabbitMQMetrics]
_MODEL_NAMES = {model.__name__ for model in _ALL_MODELS}
EXAMPLES = {
    "type": {"broker": "redis", "task_server": "celery"},
    "name": {"broker": "redis", "task_server": "task_server"},
    "broker_resource_name": {"task_server": "redis"},
}


def stack_file(stacks_dir: FsPath, stack: str) -> FsPath:
    return stacks_dir / f"{stack}.yaml"


def load_stack_spec(path: FsPath, display_name: str | None = None) -> StackSpec:
    display = display_name or str(path)
    hint = (
        f"create {display} declaring this cluster's components "
        "(copy stacks/dev.yaml for a start)"
    )
    try:
        document = read_yaml(path, hint)
    except YamlSourceError as exc:
        raise SpecError(display, [exc.problem]) from None
    return _validate(document, display)


def parse_stack_spec(raw: bytes, display_name: str) -> StackSpec:
    """Validate stack-file bytes that did not come from disk (tests, `gru component setup`)."""
    try:
        document = parse_yaml(raw)
    except YamlSourceError as exc:
        raise SpecError(display_name, [exc.problem]) from None
    return _validate(document, display_name)


def _validate(document: YamlDocument, display: str) -> StackSpec:
    problems: list[Problem] = []

    def add(path: Path, message: str, fix: str) -> None:
        problems.append(Problem(path, message, fix, document.line_of(path)))

    data = document.data
    if not isinstance(data, dict):
        add((), f"the top level is {_describe(data)}, not a mapping",
            "start the file with `broker:` and `task_server:` blocks, as in stacks/dev.yaml")
        raise SpecError(display, problems)

    for key in data:
        if key not in SECTIONS:
            add((str(key),), f"unknown section {key!r}",
                _did_you_mean(str(key), list(SECTIONS), "the sections are `broker` and `task_server`"))
    if not any(key in data for key in SECTIONS) and not problems:
        add((), "the file declares no `broker` and no `task_server`",
            "declare at least a `broker:` block, as in stacks/dev.yaml")

    validated: dict[str, list[tuple[Path, Any]]] = {"broker": [], "task_server": []}
    for section, model in SECTIONS.items():
        if section not in data:
            continue
        for path, item in _entries(section, data[section], add):
            entry_model = _model_of(section, item) or model
            try:
                spec = entry_model.model_validate(item)
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    _add_pydantic_error(section, path, error, add, entry_model)
                continue
            validated[section].append((path, spec))
            for suffix, message, fix in spec.cross_field_problems():  # type: ignore[attr-defined]
                add(path + suffix, message, fix)

    brokers: list[tuple[Path, AnyBrokerSpec]] = validated["broker"]
    servers: list[tuple[Path, TaskServerSpec]] = validated["task_server"]
    _check_names(brokers, servers, add)
    _check_namespace_ownership(brokers, add)
    # Names of brokers that failed validation still count, so their task servers are not
    # also told that their broker does not exist.
    declared = {b.get("name") for _, b in _entries("broker", data.get("broker"), lambda *a: None)}
    resolved_servers = _check_broker_references(brokers, servers, declared, add)

    if problems:
        raise SpecError(display, problems)
    return StackSpec(display, tuple(b for _, b in brokers), tuple(resolved_servers))


def _entries(section: str, value: Any, add: Any) -> list[tuple[Path, Any]]:
    """A section holds one mapping or a list of them; anything else is reported."""
    example = "`type:` and `name:`"
    if isinstance(value, dict):
        return [((section,), value)]
    if isinstance(value, list):
        entries: list[tuple[Path, Any]] = []
        if not value:
            add((section,), "is an empty list", f"list at least one {section} or remove the key")
        for index, item in enumerate(value):
            if isinstance(item, dict):
                entries.append(((section, index), item))
            else:
                add((section, index), f"is {_describe(item)}, not a mapping",
                    f"write each {section} as a mapping with {example} under it")
        return entries
    add((section,), f"is {_describe(value)}, not a mapping",
        f"write {section} as a mapping (or a list of mappings) with {example} indented under it")
    return []


def _model_of(section: str, item: dict[str, Any]) -> type[BaseModel] | None:
    """The model a broker's `type:` selects (None: let the default model report the type)."""
    if section != "broker":
        return None
    kind = item.get("type")
    return BROKER_MODELS.get(kind) if isinstance(kind, str) else None


def _nested_model(model: type[BaseModel], field_name: str) -> type[BaseModel] | None:
    """The model a field of `model` holds (itself, in a list, or optional), for did-you-mean."""
    field = model.model_fields.get(field_name)
    if field is None:
        return NESTED_MODELS.get(field_name)
    candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
    for candidate in candidates:
        for inner in [candidate, *getattr(candidate, "__args__", ())]:
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return NESTED_MODELS.get(field_name)


def _add_pydantic_error(section: str, base: Path, error: Any, add: Any, model: type[BaseModel] | None = None) -> None:
    # Drop pydantic's type-name and `[key]` segments: the path is the one the user wrote.
    loc = tuple(part for part in error["loc"]
                if not (isinstance(part, str) and (part in _MODEL_NAMES or "[" in part)))
    path: Path = base + loc
    field = str(loc[-1]) if loc else section
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")

    if kind == "extra_forbidden":
        parent = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), None)
        entry = model or SECTIONS[section]
        owner = (_nested_model(entry, parent) or entry) if parent else entry
        valid = list(owner.model_fields)
        add(path, f"unknown field {field!r}",
            _did_you_mean(field, valid, "remove it; valid fields are " + ", ".join(valid)))
    elif kind == "missing":
        example = EXAMPLES.get(field, {}).get(section, "...")
        add(path, "required field is missing", f"add `{field}: {example}`")
    elif kind == "literal_error" and field == "type":
        supported = ", ".join(SUPPORTED_TYPES[section])
        add(path, f"unsupported {section} type {got!r}", f"use one of: {supported}")
    elif kind == "literal_error":
        add(path, f"{got!r} is not allowed", f"use one of: {ctx.get('expected', '')}")
    elif kind == "gru_invalid":
        add(path, ctx["reason"], ctx["fix"])
    elif kind == "int_type":
        add(path, f"must be a whole number, got {_describe(got)}",
            "write a plain number without quotes or decimals, like 4")
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": "at least", "greater_than": "more than",
                 "less_than_equal": "at most", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()))
        add(path, f"must be {bound} {limit}, got {got!r}", f"use a value {bound} {limit}")
    elif kind == "float_type":
        add(path, f"must be a number, got {_describe(got)}", "write a plain number without quotes, like 0.6")
    elif kind == "string_type" and field in QUANTITY_FIELDS:
        add(path, f"must be a quantity, got {_describe(got)}",
            "write it like 0.5 or '500m' for CPU, '256Mi' or '8Gi' for memory and storage")
    elif kind == "string_type":
        text_example = EXAMPLES.get(field, {}).get(section)
        add(path, f"must be text, got {_describe(got)}",
            f"write it as text in quotes, like {text_example!r}" if text_example else
            "put it in quotes (YAML reads yes/no/on/off as booleans and bare digits as numbers)")
    elif kind == "bool_type":
        add(path, f"must be true or false, got {_describe(got)}", "write true or false, without quotes")
    elif kind in ("list_type", "too_short"):
        example = "[celery]" if field == "queues" else "[gru-agents]" if field == "client_namespaces" else "[...]"
        add(path, f"must be a non-empty list, got {_describe(got)}", f"write a list, like {example}")
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        add(path, f"must be a mapping, got {_describe(got)}", "indent its fields under it")
    else:
        add(path, error["msg"], "correct the value")


def _check_names(brokers: list[tuple[Path, AnyBrokerSpec]], servers: list[tuple[Path, TaskServerSpec]],
                 add: Any) -> None:
    """Logical names are unique, and so are the Kubernetes names they become."""
    seen: dict[str, tuple[str, str]] = {}
    components: list[tuple[Path, AnyBrokerSpec | TaskServerSpec]] = [*brokers, *servers]
    for path, spec in components:
        k8s = kubernetes_name(spec.name)
        kind = "task_server" if isinstance(spec, TaskServerSpec) else "broker"
        if k8s in seen:
            other_kind, other = seen[k8s]
            if other == spec.name:
                add(path + ("name",), f"{spec.name!r} is already the name of a {other_kind}",
                    "give every component in the stack its own name")
            else:
                add(path + ("name",),
                    f"{spec.name!r} and {other!r} ({other_kind}) both become the Kubernetes name {k8s!r}",
                    "rename one of them")
        else:
            seen[k8s] = (kind, spec.name)


def _check_namespace_ownership(brokers: list[tuple[Path, AnyBrokerSpec]], add: Any) -> None:
    """Brokers sharing a namespace must agree on whether the stack creates it."""
    first: dict[str, tuple[str, bool]] = {}
    for path, broker in brokers:
        if broker.namespace not in first:
            first[broker.namespace] = (broker.name, broker.create_namespace)
            continue
        other, creates = first[broker.namespace]
        if creates != broker.create_namespace:
            add(path + ("create_namespace",),
                f"broker {other!r} in namespace {broker.namespace!r} has create_namespace: {str(creates).lower()}",
                f"set the same create_namespace on every broker in namespace {broker.namespace!r}")


def _check_broker_references(brokers: list[tuple[Path, AnyBrokerSpec]],
                             servers: list[tuple[Path, TaskServerSpec]], declared: set[Any],
                             add: Any) -> list[TaskServerSpec]:
    by_name = {b.name: b for _, b in brokers}
    resolved = []
    for path, server in servers:
        broker = by_name.get(server.broker_resource_name)
        if broker is None and server.broker_resource_name in declared:
            continue  # its broker is invalid and already reported
        if broker is None:
            existing = ", ".join(sorted(str(n) for n in declared if n)) or "none"
            add(path + ("broker_resource_name",),
                f"no broker named {server.broker_resource_name!r} in this stack (brokers here: {existing})",
                _did_you_mean(server.broker_resource_name, [str(n) for n in declared if n],
                              "name one of this stack's brokers, or add a `broker:` with that name"))
            continue
        if isinstance(broker, RabbitMQBrokerSpec) and server.results.enabled:
            add(path + ("results", "enabled"),
                f"broker {broker.name!r} is RabbitMQ; stored task results need a Redis broker to keep them",
                "remove `results` (agents may still use Celery's rpc:// results, which need nothing here), "
                "or point this task server at a Redis broker")
            continue
        if server.namespace is not None and server.namespace != broker.namespace:
            add(path + ("namespace",),
                f"namespace {server.namespace!r} differs from its broker's ({broker.namespace!r}); "
                "workers read the broker's Secret, which only pods in its namespace can",
                f"remove `namespace` or set it to {broker.namespace!r}")
            continue
        resolved.append(server.model_copy(update={"namespace": broker.namespace}))
    return resolved


def _did_you_mean(word: str, candidates: list[str], otherwise: str) -> str:
    same_but_case = [c for c in candidates if c.lower() == word.lower()]
    if same_but_case:
        return f"keys are lowercase: write {same_but_case[0]!r}"
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else otherwise


def _describe(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value!r} (text)"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
