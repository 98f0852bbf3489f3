"""Settling under the mock engine: a render lets registrations finish as the program goes, so
its memory follows the few task servers in flight rather than the whole stack, and what it
registers does not change."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pulumi_kubernetes as k8s

from components.program import run
from components.task_server import TaskServer
from gru.mock_engine import Evaluation, Settle, evaluate

from .conftest import ROOT, dumps

sys.path.insert(0, str(ROOT / "benchmarks"))

from evaluate import stack_yaml  # noqa: E402  (the stack the render benchmark measures)


def config_maps(count: int, after_each: object) -> None:
    for i in range(count):
        k8s.core.v1.ConfigMap(f"cm-{i}", metadata={"name": f"cm-{i}"}, data={"k": "v"})
        if callable(after_each):
            after_each()


def test_settling_registers_what_was_constructed_before_the_program_goes_on() -> None:
    def registered_along_the_way(settle_every: int | None) -> list[int]:
        seen: list[int] = []
        result = Evaluation()

        def program() -> None:
            settle = Settle(settle_every) if settle_every else None

            def after_each() -> None:
                if settle is not None:
                    settle()
                seen.append(len(result.registrations))

            config_maps(6, after_each)

        evaluate(program, stack="settle", into=result)
        assert len(result.registrations) == 6
        return seen

    # Unsettled, the SDK registers nothing until the program has constructed everything.
    assert registered_along_the_way(None) == [0, 0, 0, 0, 0, 0]
    settled = registered_along_the_way(2)
    assert settled[1] >= 2 and settled[3] >= 4 and settled[5] == 6


def test_settling_leaves_no_pile_of_placeholders_on_the_ready_queue() -> None:
    lengths: list[int] = []

    def program() -> None:
        settle = Settle(1)

        def after_each() -> None:
            settle()
            lengths.append(len(asyncio.get_event_loop()._ready))  # type: ignore[attr-defined]

        config_maps(100, after_each)

    evaluation = evaluate(program, stack="settle")
    assert len(evaluation.registrations) == 100
    # The SDK's reentrant pump alone leaves one placeholder per handle it found queued, and
    # they add up from one settle to the next: thousands here.
    assert max(lengths) <= 2, lengths


def test_a_settled_render_registers_exactly_what_an_unsettled_one_does(stacks_dir: Path) -> None:
    (stacks_dir / "big.yaml").write_text(stack_yaml(45))  # two settles, and a remainder

    def registrations(settle: bool) -> list[tuple[str, str, tuple[str, ...], str]]:
        evaluation = evaluate(lambda: run(stacks_dir, settle=Settle() if settle else None), stack="big",
                              stable_secrets=True)
        return sorted((r.urn, r.parent, tuple(sorted(r.dependencies)), dumps(r.inputs))
                      for r in evaluation.registrations)

    unsettled = registrations(False)
    assert len(unsettled) > 45 * 4
    assert registrations(True) == unsettled


def test_task_servers_are_let_go_once_registered(stacks_dir: Path) -> None:
    (stacks_dir / "big.yaml").write_text(stack_yaml(30))
    alive: list[int] = []

    def program() -> None:
        settle = Settle(1)

        def settle_and_count() -> None:
            settle()
            gc.collect()
            alive.append(sum(isinstance(o, TaskServer) for o in gc.get_objects()))

        run(stacks_dir, settle=settle_and_count)

    evaluate(program, stack="big")
    assert len(alive) == 30
    # Only the one the program's loop still names; holding all 30 made a render's memory grow
    # with every task server's resources, outputs and futures.
    assert max(alive) <= 1, alive


def test_settling_outside_an_evaluation_is_harmless() -> None:
    settle = Settle(1)  # no loop running: nothing to pump placeholders for
    evaluation = evaluate(lambda: config_maps(3, settle), stack="settle")
    assert [r.name for r in evaluation.registrations] == ["cm-0", "cm-1", "cm-2"]
