"""Reading a stack file into plain data, safely, with the line of every value.

Everything that can go wrong before validation lives here: a missing file, bytes that are not
UTF-8, YAML syntax, duplicate keys, and alias bombs (`&a [*b, *b, ...]` nested until the
expanded document is astronomically large). The node graph is sized with memoisation, so a
hostile file costs time proportional to its length, not to its expansion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import yaml

from .problems import Path, Problem

MAX_FILE_BYTES = 1024 * 1024
# A real stack file has a few hundred nodes; this allows thousands of components.
MAX_EXPANDED_NODES = 200_000


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    lines: dict[Path, int]

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its closest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class YamlSourceError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.render())
        self.problem = problem


def read_yaml(path: FsPath, create_hint: str) -> YamlDocument:
    """Read one YAML document from `path`; raise YamlSourceError with a fix on any failure."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YamlSourceError(
            Problem((), f"stack file not found (looked for {path})", create_hint)
        ) from None
    except IsADirectoryError:
        raise YamlSourceError(
            Problem((), f"{path} is a directory, not a stack file", create_hint)
        ) from None
    except OSError as exc:
        raise YamlSourceError(
            Problem((), f"cannot read the stack file: {exc.strerror}", "check the file's permissions")
        ) from None
    return parse_yaml(raw)


def parse_yaml(raw: bytes) -> YamlDocument:
    if len(raw) > MAX_FILE_BYTES:
        raise YamlSourceError(
            Problem((), f"file is {len(raw)} bytes; stack files are limited to {MAX_FILE_BYTES}",
                    "split the components across stacks, or remove what is not a component")
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlSourceError(
            Problem((), f"file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                    "save the file as UTF-8", line)
        ) from None
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise YamlSourceError(
            Problem((), "file is empty",
                    "declare at least a `broker:` (see stacks/dev.yaml for a complete example)")
        )

    try:
        # The reader checks the characters as it is built: inside the error handling.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise YamlSourceError(
            Problem((), f"character U+{exc.character:04X} is not allowed in YAML (a control character, "
                        f"at offset {exc.position})",
                    "remove it, or quote it as an escape like \"\\t\" inside a double-quoted string", line)
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise YamlSourceError(Problem((), "file is empty", "declare at least a `broker:`"))
        _check_expansion(node)
        lines: dict[Path, int] = {}
        duplicates: list[Problem] = []
        _walk(node, (), lines, duplicates)
        if duplicates:
            # Raised one at a time keeps this module simple; duplicates are rare.
            raise YamlSourceError(duplicates[0])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        error_line = mark.line + 1 if mark is not None else None
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise YamlSourceError(
            Problem((), f"YAML syntax error: {what}",
                    "fix the YAML at that line (check indentation, colons and quotes)", error_line)
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSourceError(Problem((), f"YAML error: {exc}", "fix the YAML")) from None
    finally:
        loader.dispose()
    return YamlDocument(data, lines)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse documents whose aliases expand past MAX_EXPANDED_NODES, in linear time."""
    sizes: dict[int, int] = {}
    # Iterative post-order over the node graph; aliases are shared nodes, sized once.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 0) for c in children)
        sizes[id(node)] = total
        if total > MAX_EXPANDED_NODES:
            raise YamlSourceError(
                Problem((), f"anchors and aliases expand this file past {MAX_EXPANDED_NODES} values",
                        "write the components out without nested aliases",
                        node.start_mark.line + 1)
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int], dups: list[Problem]) -> None:
    """Record the line of every value; flag duplicate keys, which YAML silently overwrites."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = key_node.value
            if key in seen:
                dups.append(Problem(path + (key,), f"key {key!r} appears twice (first on line {seen[key]})",
                                    "keep one of them", key_node.start_mark.line + 1))
            seen.setdefault(key, key_node.start_mark.line + 1)
            _walk(value_node, path + (key,), lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines, dups)
