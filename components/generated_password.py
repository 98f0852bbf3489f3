"""A broker password generated once and kept, encrypted, in the stack's state, with its
successor staged beside it.

A Pulumi dynamic resource: the engine runs `create` once, stores `result` and `next` as
secrets, and every later `pulumi up` reads them back from state, so updates never rotate a
password by accident. A new `rotation` text rotates on purpose, as an update: `next` becomes
`result` and a fresh `next` is generated. With `count_rotations`, `rotations` counts them;
state from before the count gains it (as 0, nothing else changing) on the next `pulumi up`,
since a missing output would be unknown in every preview. Redis accepts `next` before any client uses it, so clients move over
with no failed login. Changing `length` generates both afresh.
It needs no provider plugin beyond the Python SDK's own dynamic-provider host.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

ALPHABET = string.ascii_letters + string.digits
TYPE_TOKEN = "pulumi-python:dynamic/gru:GeneratedPassword"
DEFAULT_LENGTH = 32


def new_password(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


class _PasswordProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        length = int(props["length"])
        outs: dict[str, Any] = {"length": length, "rotation": props.get("rotation", ""),
                                "result": new_password(length), "next": new_password(length)}
        if props.get("count_rotations"):
            outs.update(count_rotations=True, rotations=0)
        return CreateResult(id_=secrets.token_hex(8), outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        rotated = olds.get("rotation", "") != news.get("rotation", "")
        # State written before `next` existed gains one, keeping `result`.
        staged = bool(olds.get("next"))
        # (The engine drops None inputs: the request to count is `count_rotations`.)
        uncounted = bool(news.get("count_rotations")) and olds.get("rotations") is None
        replaces = ["length"] if olds.get("length") != news.get("length") else []
        return DiffResult(changes=bool(replaces) or rotated or not staged or uncounted, replaces=replaces,
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        length = int(news["length"])
        rotated = olds.get("rotation", "") != news.get("rotation", "")
        # Rotated: the staged password (a fresh one for state from before staging); else kept.
        current = (olds.get("next") or new_password(length)) if rotated else olds["result"]
        # A fresh successor only when the old one moved into use (or there was none).
        staged = new_password(length) if rotated or not olds.get("next") else olds["next"]
        outs: dict[str, Any] = {"length": length, "rotation": news.get("rotation", ""),
                                "result": current, "next": staged}
        if news.get("count_rotations"):
            outs.update(count_rotations=True, rotations=int(olds.get("rotations") or 0) + (1 if rotated else 0))
        return UpdateResult(outs=outs)


class GeneratedPassword(Resource, module="gru", name="GeneratedPassword"):
    """`result` is the password in use, `next` the one a rotation moves to (both secret);
    `rotations`, with `count_rotations`, how many rotations `result` is from the first password."""

    result: pulumi.Output[str]
    next: pulumi.Output[str]
    rotations: pulumi.Output[int | None]

    def __init__(self, name: str, length: int = DEFAULT_LENGTH, rotation: str = "", count_rotations: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["result", "next"]))
        props: dict[str, Any] = {"length": length, "rotation": rotation, "result": None, "next": None}
        if count_rotations:
            props.update(count_rotations=True, rotations=None)
        super().__init__(_PasswordProvider(), name, props, opts)
