"""Evaluate the real Pulumi program under the SDK's mock engine and record what it registers.

No Pulumi CLI, provider plugin or cluster is involved: `pulumi.runtime.set_mocks` stands in for
the engine, and a MockMonitor subclass records every registration in order, with its parent
and dependencies, so tests and `gru render` see exactly what `pulumi up` would ask for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_pulumi_func, wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from components import sdk_performance
from components.generated_password import TYPE_TOKEN as PASSWORD_TYPE
from components.generated_password import new_password

PROJECT = "gru"


@dataclass(frozen=True)
class Registration:
    """One resource as the program registered it."""

    type: str
    name: str
    urn: str
    parent: str
    dependencies: tuple[str, ...]
    custom: bool
    inputs: dict[str, Any]
    ignore_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    delete_timeout: str = ""  # customTimeouts.delete, e.g. "1230s"; "" for the provider's default
    create_timeout: str = ""
    update_timeout: str = ""


@dataclass
class Evaluation:
    registrations: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_token]

    @property
    def kubernetes_objects(self) -> list[Registration]:
        """The objects the program owns; not server-side-apply patches of objects owned elsewhere."""
        return [r for r in self.registrations
                if r.custom and r.type.startswith("kubernetes:") and not r.type.endswith("Patch")]


class _Mocks(pulumi_mocks.Mocks):
    """Resources echo their inputs. Generated passwords are fresh random values, or, with
    `stable_secrets`, derived from the resource name so that repeated evaluations (and the
    hashes of credentials in rendered annotations) do not change between runs. Stable values
    are only for output where Secret values are redacted: they are predictable."""

    def __init__(self, stable_secrets: bool = False) -> None:
        self.stable_secrets = stable_secrets

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == PASSWORD_TYPE:
            for key in ("result", "next"):
                if self.stable_secrets:
                    state[key] = hashlib.sha256(f"gru-mock-password:{key}:{args.name}".encode()).hexdigest()[:32]
                else:
                    state[key] = new_password(int(state["length"]))
            state.pop("__provider", None)  # the pickled provider: not part of what the program declares
        return f"{args.name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also keeps each registration's parent and dependencies, in order."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            state = self.resources[response.urn].state
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    dependencies=tuple(request.dependencies),
                    custom=bool(request.custom),
                    inputs=state,
                    ignore_changes=tuple(request.ignoreChanges),
                    retain_on_delete=bool(request.retainOnDelete),
                    delete_timeout=request.customTimeouts.delete if request.HasField("customTimeouts") else "",
                    create_timeout=request.customTimeouts.create if request.HasField("customTimeouts") else "",
                    update_timeout=request.customTimeouts.update if request.HasField("customTimeouts") else "",
                )
            )
        return response


class Settle:
    """A program's `settle` hook under the mock engine: every `every` calls, run the event loop
    until the registrations made so far have finished.

    The SDK only queues a registration when a resource is constructed; without this, a program
    that constructs 3,000 task servers holds every one's inputs, serialized form and futures at
    once (0.6 MiB per task server at the peak). Settling every 20 task servers keeps the peak to
    what the render itself holds, and is faster too: settling after each one pays the loop's
    fixed cost too often. `benchmarks/evaluate.py` measures both.

    Construct it inside the program (where the evaluation's own step is running), as
    `evaluate(lambda: run(..., settle=Settle()))` does.
    """

    def __init__(self, every: int = 20) -> None:
        self.every = every
        self.calls = 0
        self._loop = asyncio.get_event_loop()
        # What the step running the program still has to take off the ready queue.
        self._owed = len(self._loop._ready) if self._loop.is_running() else None  # type: ignore[attr-defined]

    def __call__(self) -> None:
        self.calls += 1
        if self.calls % self.every != 0:
            return
        # Reentrant: the program itself runs inside the event loop this pumps.
        _sync_await(wait_for_rpcs(await_all_outstanding_tasks=False))
        if self._owed is None:
            return
        # _sync_await leaves a cancelled placeholder for every handle that was queued when it
        # began, so the step it interrupted finds as many as it expects. Handles the program
        # queued since are counted too, so placeholders pile up, 60 per task server; only as
        # many as the interrupted step is owed are kept.
        ready = self._loop._ready  # type: ignore[attr-defined]
        while len(ready) > self._owed and ready[-1]._cancelled:
            ready.pop()


def evaluate(
    program: Callable[[], Any],
    *,
    stack: str,
    config: dict[str, str] | None = None,
    secret_keys: list[str] | None = None,
    preview: bool = False,
    into: Evaluation | None = None,
    stable_secrets: bool = False,
) -> Evaluation:
    """Run `program` as stack `stack` of this project and return what it registered and exported.

    `config` keys are full Pulumi keys (`gru:redis-password`). Exceptions the program raises
    propagate unchanged; pass `into` to see what was registered before one was raised.
    """
    mocks = _Mocks(stable_secrets)
    monitor = RecordingMonitor(mocks)
    settings.reset_options(project=PROJECT, stack=stack, preview=preview)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    sdk_performance.install()
    set_all_config(dict(config or {}), list(secret_keys or []))
    result = into if into is not None else Evaluation()
    result.registrations = monitor.registrations

    def run() -> Any:
        program()
        root = settings.get_root_resource()
        exported: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})

        def keep(values: dict[str, Any]) -> None:
            result.outputs.update(values)

        return pulumi.Output.all(**exported).apply(keep).future()  # type: ignore[union-attr]

    pending: list[Any] = []

    async def run_and_wait() -> None:
        # The SDK's run_pulumi_func awaits what the program returns only in newer releases;
        # so the program runs synchronously, and the exports are awaited once the RPCs are done.
        await run_pulumi_func(lambda: pending.append(run()))
        if pending and pending[0] is not None:
            await pending[0]

    try:
        _sync_await(run_and_wait())
    finally:
        # The SDK keeps its monitor until the next evaluation; the monitor lets go of every
        # registered state here, so the Evaluation is the one copy and callers may free it.
        monitor.resources.clear()
        monitor.registrations = []
    return result
