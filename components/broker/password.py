"""A broker password generated once and kept, encrypted, in the stack's state.

A Pulumi dynamic resource: the engine runs `create` once, stores `result` as a secret, and
every later `pulumi up` reads it back from state, so updates never rotate the password by
accident. It needs no provider plugin beyond the Python SDK's own dynamic-provider host.
Changing `length` or `rotation` replaces it, which is the way to rotate on purpose.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

ALPHABET = string.ascii_letters + string.digits
TYPE_TOKEN = "pulumi-python:dynamic/gru:GeneratedPassword"
DEFAULT_LENGTH = 32


def new_password(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


class _PasswordProvider(ResourceProvider):
    """Generates on create; any change of inputs replaces (a new password)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        length = int(props["length"])
        return CreateResult(id_=secrets.token_hex(8),
                            outs={"length": length, "rotation": props.get("rotation", ""), "result": new_password(length)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in ("length", "rotation") if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class GeneratedPassword(Resource, module="gru", name="GeneratedPassword"):
    """`result` is the password (secret). `rotation` is any text; changing it generates a new one."""

    result: pulumi.Output[str]

    def __init__(self, name: str, length: int = DEFAULT_LENGTH, rotation: str = "",
                 opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["result"]))
        super().__init__(_PasswordProvider(), name, {"length": length, "rotation": rotation, "result": None}, opts)
