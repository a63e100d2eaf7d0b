"""Hand-written YAML files (job files, hosts.yaml, data YAML) read with line/column marks and
validated by pydantic models, so every error points at its place.

Errors come out as one line, the way compilers print them:
    jobs/x.yaml:7:3: resources.gpuu: unknown field 'gpuu', did you mean 'gpu'?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Tag, ValidationError
from pydantic_core import ErrorDetails

from runner.base.errors import SpecError

# What a job, a host or a dataset may be called: it becomes part of file names and tmux targets.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
MAX_SPEC_BYTES = 1024 * 1024  # these files are hand-written; anything larger is a mistake
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    line: int
    column: int


@dataclass
class Marks:
    """Where each field's key and value start in the file (1-based), by field path."""

    keys: dict[FieldPath, Mark] = field(default_factory=dict)
    values: dict[FieldPath, Mark] = field(default_factory=dict)

    def key_or_value(self, path: FieldPath) -> Mark:
        return self.keys.get(path) or self.nearest_value(path)

    def nearest_value(self, path: FieldPath) -> Mark:
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path, Mark(1, 1))


class StrictModel(BaseModel):
    """A model of a hand-written file: a typo'd key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key '{key}'", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_mapping(path: Path, what: str) -> tuple[dict[str, Any], Marks]:
    text = _read_text(path, what)
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(f"{path}: empty {what}")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "unreadable"
        raise SpecError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"{path}:1:1: a {what} is a mapping of fields, not {type(data).__name__}")
    marks = Marks()
    _collect_marks(node, (), marks)
    return data, marks


def validate(model: type[BaseModel], data: dict[str, Any], marks: Marks, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A typo'd key explains the "missing" error it causes: report it first.
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        loc = _file_location(model, first)
        mark = marks.key_or_value(loc) if first["type"] == "extra_forbidden" else marks.nearest_value(loc)
        raise SpecError(f"{path}:{mark.line}:{mark.column}: {_describe(model, first, loc)}{more}") from None


def dotted(path: FieldPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _read_text(path: Path, what: str) -> str:
    try:
        if path.is_dir():
            raise SpecError(f"{path}: is a directory, not a {what}")
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {size} bytes is too large for a {what} (limit {MAX_SPEC_BYTES})")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except PermissionError:
        raise SpecError(f"{path}: permission denied") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    nul = raw.find(b"\0")
    if nul >= 0:
        raise SpecError(f"{path}: binary data (NUL byte at offset {nul}), not a {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None


def _collect_marks(node: yaml.Node, path: FieldPath, marks: Marks) -> None:
    marks.values[path] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            marks.keys[child] = Mark(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _collect_marks(value_node, child, marks)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_marks(item, (*path, index), marks)


def _file_location(model: type[BaseModel], error: ErrorDetails) -> FieldPath:
    """The error's place in the file: pydantic's location without the tags of tagged unions (the file has
    no such level), and down to the entry a mapping's validator named in its context ("entry")."""
    kept: list[str | int] = []
    current: Any = model
    for part in error["loc"]:
        branch = _tagged_branches(current).get(part) if isinstance(part, str) else None
        if branch is None:
            kept.append(part)
            current = _step(current, part)
        else:
            current = _unwrap(branch)
    entry = (error.get("ctx") or {}).get("entry")
    return tuple(kept) + ((entry,) if isinstance(entry, str) else ())


def _describe(model: type[BaseModel], error: ErrorDetails, loc: FieldPath) -> str:
    where = dotted(loc)
    if error["type"] == "extra_forbidden":
        unknown = str(loc[-1])
        hint = _closest_field(model, loc[:-1], unknown)
        return f"{where}: unknown field '{unknown}'" + (f", did you mean '{hint}'?" if hint else "")
    if error["type"] == "missing":
        return f"{where}: required field missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def _closest_field(model: type[BaseModel], parent: FieldPath, name: str) -> str | None:
    """The field the user most likely meant, found by walking the model's types along the parent path."""
    current: Any = model
    for part in parent:
        current = _step(current, part)
    # A tagged union (`weights: [globs]` or `weights: {paths: ...}`): a mapping's keys are a model branch's.
    options = [_unwrap(branch) for branch in _tagged_branches(current).values()] or [current]
    fields = [name for option in options if isinstance(option, type) for name in getattr(option, "model_fields", {})]
    matches = difflib.get_close_matches(name, fields, n=1)
    return matches[0] if matches else None


def _step(annotation: Any, part: str | int) -> Any:
    """The type one level down: a model's field, or a dict's value / a list's item."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(str(part))
        return _unwrap(info.annotation) if info else None
    if get_origin(annotation) in (dict, list):
        return _unwrap(get_args(annotation)[-1])
    return None


def _tagged_branches(annotation: Any) -> dict[str, Any]:
    """A tagged union's branches by tag (`Union[Annotated[X, Tag("x")], ...]`); {} for any other type."""
    if get_origin(annotation) not in (Union, UnionType):
        return {}
    branches = {}
    for option in get_args(annotation):
        tags = [meta.tag for meta in getattr(option, "__metadata__", ()) if isinstance(meta, Tag)]
        if tags:
            branches[tags[0]] = option
    return branches


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _unwrap(options[0]) if len(options) == 1 else annotation
    return annotation
