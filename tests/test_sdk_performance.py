"""The SDK fixes in components/sdk_performance.py keep the SDK's contracts."""

from __future__ import annotations

import pulumi._types as sdk_types
import pulumi_kubernetes as k8s
import pytest

from components import sdk_performance
from components.sdk_performance import OutstandingOutputs


def test_outstanding_outputs_behave_like_the_deque_the_sdk_uses() -> None:
    outputs = OutstandingOutputs()
    for item in ("a", "b", "c"):
        outputs.append(item)
    outputs.remove("b")
    assert len(outputs) == 2
    with pytest.raises(ValueError):
        outputs.remove("b")  # the SDK catches ValueError for an item already gone
    assert outputs.popleft() == "a"
    outputs.append("a")  # the SDK puts a task that is not done yet back at the end
    # What is left comes out in insertion order: "c" (b removed), then the re-appended "a".
    assert [outputs.popleft(), outputs.popleft()] == ["c", "a"]
    with pytest.raises(IndexError):
        outputs.popleft()


def test_install_leaves_an_sdk_that_needs_neither_fix_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from pulumi.runtime import settings

    already = set()  # what newer SDKs keep: it has `add`, not `append`
    cached = functools.cache(lambda cls: {})
    monkeypatch.setattr(settings.SETTINGS, "outputs", already)
    monkeypatch.setattr(sdk_types, "_types_from_py_properties", cached)
    sdk_performance.install()
    assert settings.SETTINGS.outputs is already
    assert sdk_types._types_from_py_properties is cached


def test_property_types_are_cached_per_class_and_equal_the_sdks() -> None:
    sdk_performance.install()
    cls = k8s.core.v1.PodSpecArgs
    expected = sdk_performance._UNCACHED_TYPES(cls)
    first = sdk_types._types_from_py_properties(cls)
    assert first == expected and first
    first.clear()  # a caller altering its copy does not alter the cache
    assert sdk_types._types_from_py_properties(cls) == expected
    assert sdk_performance._cached_types.cache_info().hits >= 1


def test_install_raises_the_first_gc_generation() -> None:
    import gc

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # Python's defaults
        sdk_performance.install()
        assert gc.get_threshold()[0] == sdk_performance.GC_FIRST_GENERATION
    finally:
        gc.set_threshold(*before)


def test_contains_unknowns_answers_as_the_sdks_own() -> None:
    from pulumi.output import Unknown

    original = sdk_performance._SDK_CONTAINS_UNKNOWNS  # as the SDK had it, before install()
    assert original is not sdk_performance.contains_unknowns
    unknown = Unknown()
    shared = {"a": [1, "x"]}
    cyclic: dict[str, object] = {"k": 1}
    cyclic["self"] = cyclic
    values = [
        {"spec": {"template": {"spec": {"containers": [{"env": [{"name": "A", "value": "1"}] * 50}]}}}},
        {"spec": {"containers": [{"image": unknown}]}},
        [shared, shared, {"deep": [[[unknown]]]}],
        cyclic, "text", 7, None, unknown, [], {},
    ]
    for value in values:
        assert sdk_performance.contains_unknowns(value) == original(value), value
    assert sdk_performance.contains_unknowns({"x": [unknown]}) is True
    assert sdk_performance.contains_unknowns(cyclic) is False


def test_install_replaces_a_quadratic_contains_unknowns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi.runtime import rpc

    def quadratic(val: object) -> bool:
        def impl(val: object, stack: list[object]) -> bool:
            return bool(stack)
        return impl(val, [])

    def linear(val: object) -> bool:
        return False

    monkeypatch.setattr(rpc, "contains_unknowns", quadratic)
    sdk_performance.install()
    assert rpc.contains_unknowns is sdk_performance.contains_unknowns
    monkeypatch.setattr(rpc, "contains_unknowns", linear)
    sdk_performance.install()
    assert rpc.contains_unknowns is linear


def test_type_checks_answer_as_the_sdks_own() -> None:
    import pulumi
    from pulumi.output import Unknown
    from pulumi.runtime import known_types

    originals = sdk_performance._SDK_TYPE_CHECKS
    assert set(originals) == set(sdk_performance._known_type_classes())
    assert all(sdk_performance._imports_per_call(f) for f in originals.values())  # the SDK's own, pinned 3.184
    samples = [pulumi.Output.from_input(1), Unknown(), pulumi.StringAsset("x"), pulumi.AssetArchive({}),
               pulumi.CustomTimeouts(create="1m"), 1, "s", None, {}, []]
    sdk_performance.install()
    for name, original in originals.items():
        replaced = getattr(known_types, name)
        assert not sdk_performance._imports_per_call(replaced), name
        for sample in samples:
            assert replaced(sample) == original(sample), (name, sample)
    assert known_types.is_output(samples[0]) and known_types.is_unknown(samples[1])
