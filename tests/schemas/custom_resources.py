"""JSON schemas for the custom resources this project renders (KEDA, Prometheus Operator).

kubernetes-validate knows only built-in kinds. These schemas cover the fields this project
writes, typed as the CRDs define them, with unknown fields forbidden, so a typo or a wrong
type in a rendered custom resource fails a test. Written from the KEDA and Prometheus Operator
API references; they are deliberately narrower than the CRDs.
"""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_INT = {"type": "integer"}
_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}
_TRIGGER_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


_AUTH_REF = _object({"name": _STR, "kind": _STR}, ["name"])


_METADATA = _object(
    {"name": _STR, "namespace": _STR, "labels": {"type": "object", "additionalProperties": _STR},
     "annotations": {"type": "object", "additionalProperties": _STR}},
    ["name", "namespace"],
)

SCALED_OBJECT = _object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": _object(
            {
                "scaleTargetRef": _object({"apiVersion": _STR, "kind": _STR, "name": _STR}, ["name"]),
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": _object({
                    "horizontalPodAutoscalerConfig": _object({
                        "behavior": _object({
                            "scaleDown": _object({
                                "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
                                "policies": {"type": "array", "items": _object(
                                    {"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
                                     "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}},
                                    ["type", "value", "periodSeconds"])},
                            }),
                        }),
                    }),
                }),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    # One trigger shape per broker type, each with the metadata its KEDA scaler reads.
                    "items": {"oneOf": [
                        _object(
                            {
                                "type": {"const": "redis"},
                                "name": _TRIGGER_NAME,
                                # KEDA trigger metadata values are all strings.
                                "metadata": _object(
                                    {"address": _STR, "listName": _STR, "listLength": _DIGITS, "databaseIndex": _DIGITS},
                                    ["address", "listName", "listLength"],
                                ),
                                "authenticationRef": _AUTH_REF,
                            },
                            ["type", "metadata"],
                        ),
                        _object(
                            {
                                "type": {"const": "rabbitmq"},
                                "name": _TRIGGER_NAME,
                                "metadata": _object(
                                    {"protocol": {"enum": ["auto", "http", "amqp"]},
                                     "mode": {"enum": ["QueueLength", "MessageRate"]}, "value": _DIGITS,
                                     "queueName": _STR, "vhostName": _STR, "excludeUnacknowledged": {"enum": ["true", "false"]}},
                                    ["mode", "value", "queueName"],
                                ),
                                "authenticationRef": _AUTH_REF,
                            },
                            ["type", "metadata"],
                        ),
                    ]},
                },
            },
            ["scaleTargetRef", "triggers"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)

TRIGGER_AUTHENTICATION = _object(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": _object(
            {"secretTargetRef": {"type": "array", "minItems": 1,
                                 "items": _object({"parameter": {"enum": ["username", "password", "host"]}, "name": _STR, "key": _STR},
                                                  ["parameter", "name", "key"])}},
            ["secretTargetRef"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)

SERVICE_MONITOR = _object(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": _object(
            {
                "selector": _object({"matchLabels": {"type": "object", "additionalProperties": _STR}}),
                "namespaceSelector": _object({"matchNames": {"type": "array", "items": _STR}, "any": {"type": "boolean"}}),
                "endpoints": {"type": "array", "minItems": 1,
                              "items": _object({"port": _STR, "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                                "path": _STR})},
            },
            ["selector", "endpoints"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION, "ServiceMonitor": SERVICE_MONITOR}
