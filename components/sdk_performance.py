"""Five fixes to the Python SDK's per-resource costs, so big stacks register in linear time.

The first two were found with cProfile under the mock engine at 300 task servers
(`benchmarks/evaluate.py` has the figures) and apply to the SDK that requirements-dev.txt pins
(3.184); later SDKs fixed those costs themselves (a set of outputs, a cached
`_types_from_py_properties`), and `install` then leaves them alone. None changes what is
registered: the render tests compare every object.

1. Outstanding outputs. The Python SDK keeps every Output's future in `SETTINGS.outputs`, a
deque, and removes each one when it resolves: `deque.remove` scans, so a program with n
outputs in flight spends O(n^2) there. Measured under the mock engine: 8.5 s of 48 s at 300 task servers, and the larger
part of the time beyond that (about 160 outputs per task server). The SDK uses only
`append`, `remove`, `popleft`, `len` and `clear` on it; this container does each in O(1), in
insertion order, with the same errors.

2. Property types. For every typed input (each nested pod-spec field of every object) the SDK
calls `_types_from_py_properties(cls)`, which runs `typing.get_type_hints` on each property of
the class: 37% of the time at 300 task servers, though the answer depends on the class alone.
It is cached per class (a copy is returned, so callers cannot alter the cache).

3. Garbage collection. Registration builds hundreds of thousands of long-lived objects, and
Python's default thresholds (700 allocations) rescan them over and over: time grows faster than
the stack. With a first generation of 50,000, 500 task servers registered in 13.9 s instead of
20.6 s, measured back to back. Objects are still freed by reference counting as usual.

4. Unknown values. Before it resolves an Output, the SDK walks the value for unknowns
(`rpc.contains_unknowns`), and keeps the nodes it has seen in a list it scans at every node:
quadratic in the size of the value. A Deployment's manifest has hundreds of nodes, and the
walk ran 6.6 million scan steps at 300 task servers. Here the nodes seen are a set of ids,
with the same answer for every value (cycles included).

5. Type checks. `known_types.is_output`, `is_unknown`, `is_resource` and their siblings each
import their class inside the function, at every call: 800,000 import-machinery calls at 300
task servers, for what is one `isinstance`. Each becomes the same `isinstance` on the class
imported once.
"""

from __future__ import annotations

import collections
import dis
import functools
import gc
from collections.abc import Callable
from typing import Any

import pulumi._types as sdk_types
from pulumi.output import Unknown
from pulumi.runtime import known_types, rpc, settings


class OutstandingOutputs:
    """An insertion-ordered set with the deque methods the SDK calls."""

    def __init__(self) -> None:
        self._items: dict[Any, None] = {}

    def append(self, item: Any) -> None:
        self._items[item] = None

    def remove(self, item: Any) -> None:
        try:
            del self._items[item]
        except KeyError:
            raise ValueError("not outstanding") from None

    def popleft(self) -> Any:
        if not self._items:
            raise IndexError("pop from an empty OutstandingOutputs")
        item = next(iter(self._items))
        del self._items[item]
        return item

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _install_outputs() -> None:
    """Swap the SDK's deque for OutstandingOutputs, keeping anything already in it. Newer SDKs
    keep a set instead (constant time already, with another interface): left alone."""
    current = settings.SETTINGS.outputs
    if not isinstance(current, collections.deque):
        return
    replacement = OutstandingOutputs()
    for item in list(current):
        replacement.append(item)
    settings.SETTINGS.outputs = replacement


_UNCACHED_TYPES = sdk_types._types_from_py_properties
GC_FIRST_GENERATION = 50_000


@functools.cache
def _cached_types(cls: type) -> dict[str, type]:
    return dict(_UNCACHED_TYPES(cls))


def _types_from_py_properties(cls: type) -> dict[str, type]:
    return dict(_cached_types(cls))


_SDK_CONTAINS_UNKNOWNS = rpc.contains_unknowns


def contains_unknowns(val: Any) -> bool:
    """The SDK's `contains_unknowns`, walking each node once by identity."""
    seen: set[int] = set()

    def walk(value: Any) -> bool:
        if isinstance(value, Unknown):  # known_types.is_unknown, without its import per call
            return True
        if id(value) in seen:
            return False
        seen.add(id(value))
        if isinstance(value, dict):
            return any(walk(value[k]) for k in value)
        if isinstance(value, list):
            return any(walk(item) for item in value)
        return False

    return walk(val)


def _scans_a_list(function: Any) -> bool:
    """Whether the SDK's contains_unknowns keeps the nodes it has seen in a list (`stack`)."""
    code = getattr(function, "__code__", None)
    nested = [c for c in (code.co_consts if code is not None else ()) if hasattr(c, "co_varnames")]
    return any("stack" in c.co_varnames for c in nested)


def _known_type_classes() -> dict[str, type]:
    """The class each `known_types.is_<x>` checks against, imported once."""
    import pulumi
    from pulumi.runtime.stack import Stack

    return {"is_asset": pulumi.Asset, "is_archive": pulumi.Archive, "is_resource": pulumi.Resource,
            "is_custom_resource": pulumi.CustomResource, "is_custom_timeouts": pulumi.CustomTimeouts,
            "is_stack": Stack, "is_output": pulumi.Output, "is_unknown": Unknown}


_KNOWN_TYPE_CHECKS = ("is_asset", "is_archive", "is_resource", "is_custom_resource", "is_custom_timeouts",
                      "is_stack", "is_output", "is_unknown")
# As the SDK had them, before install(), for the tests to compare against.
_SDK_TYPE_CHECKS = {name: getattr(known_types, name) for name in _KNOWN_TYPE_CHECKS if hasattr(known_types, name)}


def _isinstance_of(cls: type) -> Callable[[Any], bool]:
    def check(obj: Any) -> bool:
        return isinstance(obj, cls)
    return check


def _imports_per_call(function: Any) -> bool:
    return any(i.opname == "IMPORT_NAME" for i in dis.get_instructions(function))


def _install_type_checks() -> None:
    for name, cls in _known_type_classes().items():
        current = getattr(known_types, name, None)
        if current is not None and _imports_per_call(current):
            setattr(known_types, name, _isinstance_of(cls))


def install() -> None:
    """The fixes the installed SDK still needs; call before the program registers
    anything (idempotent)."""
    _install_outputs()
    if gc.get_threshold()[0] < GC_FIRST_GENERATION:
        gc.set_threshold(GC_FIRST_GENERATION, 20, 100)
    if not hasattr(sdk_types._types_from_py_properties, "cache_info"):  # newer SDKs cache it
        sdk_types._types_from_py_properties = _types_from_py_properties
    if _scans_a_list(rpc.contains_unknowns):
        rpc.contains_unknowns = contains_unknowns
    _install_type_checks()
