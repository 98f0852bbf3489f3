"""Merging a component file into a stack file, by section and name (pure: no engine, no disk)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from components.stack_model import Problem, SpecError, StackSpec, parse_stack_spec
from components.stack_model.problems import format_path
from components.stack_model.yaml_source import YamlDocument, YamlSourceError, parse_yaml

from .errors import GruError, ProblemReport
from .results import ComponentRef

__all__ = ["SECTIONS", "MergePlan", "merge_components", "plan_merge"]

SECTIONS = ("broker", "task_server")


@dataclass(frozen=True)
class _Origin:
    """Where a merged component came from: a file, its parsed document, and its path there."""

    file: str
    document: YamlDocument
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class _Entry:
    ref: ComponentRef
    body: dict[Any, Any]
    origin: _Origin


@dataclass(frozen=True)
class MergePlan:
    """The merged stack file's text and what the merge did. `origins` maps each component's
    path in the merged text to where it came from, so problems can be reported there."""

    text: str
    added: tuple[ComponentRef, ...]
    replaced: tuple[ComponentRef, ...]
    kept: tuple[ComponentRef, ...]
    origins: dict[tuple[str | int, ...], _Origin]
    dropped_comments: bool = False


def _has_content(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def _header_comments(text: str) -> str:
    """The comment block at the top of a file (kept when the file is rewritten)."""
    lines = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def _read_components(text: str, file: str) -> list[_Entry]:
    """The components of one file, in order, after checking just what merging needs: YAML
    that parses, known sections holding mappings, and a unique text `name` on each."""
    try:
        document = parse_yaml(text.encode("utf-8"))
    except YamlSourceError as error:
        raise GruError(_problems_message(file, [ProblemReport.of(file, error.problem)]),
                       problems=[ProblemReport.of(file, error.problem)]) from None
    problems: list[ProblemReport] = []

    def add(path: tuple[str | int, ...], message: str, fix: str) -> None:
        problems.append(ProblemReport(file, format_path(path), message, fix, document.line_of(path)))

    data = document.data
    entries: list[_Entry] = []
    if not isinstance(data, dict):
        add((), "the top level is not a mapping", "start the file with `broker:` and/or `task_server:` blocks, as in stacks/dev.yaml")
    else:
        for key in data:
            if key not in SECTIONS:
                add((str(key),), f"unknown section {key!r}", "the sections are `broker` and `task_server`")
        if not any(section in data for section in SECTIONS) and not problems:
            add((), "the file declares no `broker` and no `task_server`", "declare at least one component, as in stacks/dev.yaml")
        seen: dict[ComponentRef, str] = {}
        for section in SECTIONS:
            if section not in data:
                continue
            value = data[section]
            if isinstance(value, dict):
                items: list[tuple[tuple[str | int, ...], Any]] = [((section,), value)]
            elif isinstance(value, list) and value:
                items = [((section, index), item) for index, item in enumerate(value)]
            else:
                add((section,), "is an empty list" if isinstance(value, list) else "is not a mapping",
                    f"write {section} as a mapping (or a list of mappings) with `type:` and `name:` under it")
                continue
            for path, item in items:
                if not isinstance(item, dict):
                    add(path, "is not a mapping", f"write each {section} as a mapping with `type:` and `name:` under it")
                    continue
                name = item.get("name")
                if not isinstance(name, str) or not name:
                    add(path + ("name",), "a component needs a text `name` (components are matched by it)",
                        f"add `name: <{section} name>`")
                    continue
                ref = ComponentRef(section, name)
                if ref in seen:
                    add(path + ("name",), f"{ref} is declared twice in this file (first at {seen[ref]})", "keep one of them")
                    continue
                seen[ref] = format_path(path)
                entries.append(_Entry(ref, item, _Origin(file, document, path)))
    if problems:
        raise GruError(_problems_message(file, problems), problems=problems)
    return entries


def _problems_message(what: str, problems: Sequence[ProblemReport], outcome: str = "nothing was written or deployed") -> str:
    count = len(problems)
    header = f"{what}: {count} problem{'s' if count != 1 else ''} found; {outcome}"
    return "\n".join([header] + [f"  - {p.render()}" for p in problems])


class _StackFileDumper(yaml.SafeDumper):
    """Block style, lists indented under their key, no anchors: a file people edit."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def plan_merge(
    existing_yaml_text: str | None,
    new_yaml_text: str,
    *,
    existing_name: str = "the stack file",
    new_name: str = "the component file",
    header_if_new: str = "",
) -> MergePlan:
    """Upsert the components of `new_yaml_text` into `existing_yaml_text` by (section, name).

    Components already there are kept in place; one with the same section and name as a new
    one is replaced in place by it; the others are appended. The result is not validated as a
    stack (a task server's broker may be missing, for instance): `setup` does that on it.
    Shape problems (YAML syntax, unknown sections, components without a name) raise GruError
    naming the file they are in. The existing file's leading comment block is kept (or
    `header_if_new` starts a file that had none); other comments are not (`dropped_comments`).
    """
    existing: list[_Entry] = []
    header = ""
    dropped = False
    if existing_yaml_text is not None:
        header = _header_comments(existing_yaml_text)
        if _has_content(existing_yaml_text):
            existing = _read_components(existing_yaml_text, existing_name)
            body_lines = existing_yaml_text.splitlines()[len(header.splitlines()):]
            dropped = any(line.lstrip().startswith("#") or " #" in line for line in body_lines)
    header = header or header_if_new
    incoming = _read_components(new_yaml_text, new_name)

    merged: dict[str, list[_Entry]] = {section: [e for e in existing if e.ref.section == section] for section in SECTIONS}
    added: list[ComponentRef] = []
    replaced: list[ComponentRef] = []
    for entry in incoming:
        entries = merged[entry.ref.section]
        index = next((i for i, e in enumerate(entries) if e.ref == entry.ref), None)
        if index is None:
            entries.append(entry)
            added.append(entry.ref)
        else:
            entries[index] = entry
            replaced.append(entry.ref)
    kept = tuple(e.ref for e in existing if e.ref not in replaced)

    document: dict[str, Any] = {}
    origins: dict[tuple[str | int, ...], _Origin] = {}
    for section, entries in merged.items():
        if len(entries) == 1:
            document[section] = entries[0].body
            origins[(section,)] = entries[0].origin
        elif entries:
            document[section] = [e.body for e in entries]
            origins.update({(section, i): e.origin for i, e in enumerate(entries)})
    # One block per section, a blank line between them, as people write these files.
    body = "\n".join(
        yaml.dump({section: value}, Dumper=_StackFileDumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
        for section, value in document.items()
    )
    return MergePlan(header + body, tuple(added), tuple(replaced), kept, origins, dropped)


def merge_components(
    existing_yaml_text: str | None,
    new_yaml_text: str,
    *,
    existing_name: str = "the stack file",
    new_name: str = "the component file",
    header_if_new: str = "",
) -> str:
    """The merged stack file's text: see `plan_merge`."""
    return plan_merge(existing_yaml_text, new_yaml_text, existing_name=existing_name, new_name=new_name,
                      header_if_new=header_if_new).text


def _validate_merge(plan: MergePlan, display: str, what: str) -> StackSpec:
    """Validate the merged text; report each problem in the file and at the line it came from."""
    try:
        return parse_stack_spec(plan.text.encode("utf-8"), display)
    except SpecError as error:
        reports = [_locate(problem, plan, display) for problem in error.problems]
        raise GruError(_problems_message(what, reports, "nothing was written or deployed"), problems=reports) from None


def _locate(problem: Problem, plan: MergePlan, merged_display: str) -> ProblemReport:
    for length in range(len(problem.path), 0, -1):
        origin = plan.origins.get(problem.path[:length])
        if origin is not None:
            path = origin.path + problem.path[length:]
            return ProblemReport(origin.file, format_path(path), problem.message, problem.fix, origin.document.line_of(path))
    return ProblemReport(f"{merged_display} (merged)", format_path(problem.path), problem.message, problem.fix)
