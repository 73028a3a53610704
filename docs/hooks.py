"""MkDocs hooks: the README is the home page, and the reference pages are generated from the code.

`{{ cli_reference }}` becomes every `workbench` command with its arguments and options, read from
the Typer app; `{{ config_reference: module:Model }}` becomes a table of a typed config's keys,
read from its pydantic model. Neither can drift from the code: a renamed option or key changes
the page, and `mkdocs build --strict` (run by tests/test_docs.py) fails on a broken link.
"""

from __future__ import annotations

import enum
import importlib
import re
import types
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG_MARKER = re.compile(r"\{\{\s*config_reference:\s*([\w.]+):(\w+)\s*\}\}")
# README links into docs/ point at the page itself on the site; links elsewhere in the repo stay text.
README_DOCS_LINK = re.compile(r"\]\(docs/([^)]+)\)")


def on_files(files, config):
    from mkdocs.structure.files import File

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=README_DOCS_LINK.sub(r"](\1)", readme)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "{{ cli_reference }}" in markdown:
        markdown = markdown.replace("{{ cli_reference }}", cli_reference())
    return CONFIG_MARKER.sub(lambda match: config_reference(match.group(1), match.group(2)), markdown)


# --- the CLI ------------------------------------------------------------------------------------


def cli_reference() -> str:
    """Markdown for every command of the `workbench` CLI: usage, help text, arguments and options."""
    import typer.main

    from workbench.cli import app

    sections = []
    for path, command in _commands(typer.main.get_command(app), ["workbench"]):
        params = [param for param in command.params if not param.hidden and param.name != "help"]
        lines = [f"### `{' '.join(path)}`", "", f"```\n{' '.join([*path, *map(_usage, params)])}\n```", ""]
        lines += [_help(command), ""]
        if params:
            lines += ["| argument or option | type | default | what it does |", "|---|---|---|---|"]
            lines += [_param_row(param) for param in params] + [""]
        sections.append("\n".join(lines))
    return "\n".join(sections)


def _commands(group, path):
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if hasattr(command, "commands"):  # a group of commands (`workbench cache …`)
            yield from _commands(command, [*path, name])
        else:
            yield [*path, name], command


def _is_argument(param) -> bool:
    return not any(opt.startswith("-") for opt in param.opts)


def _usage(param) -> str:
    if _is_argument(param):
        word = param.name.upper()
    else:
        word = param.opts[0] if getattr(param, "is_flag", False) else f"{param.opts[0]} {param.name.upper()}"
    return word if param.required else f"[{word}]"


def _help(command) -> str:
    text = (command.help or command.short_help or "").strip()
    return re.sub(r"\s*\n\s*", " ", text.split("\f")[0])


def _param_row(param) -> str:
    if _is_argument(param):
        name = f"`{param.name.upper()}`"
    else:
        name = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
    is_flag = getattr(param, "is_flag", False)
    if param.required:
        default = "required"
    elif param.default is None or (is_flag and not param.default):
        default = ""
    else:
        default = f"`{param.default}`"
    kind = "flag" if is_flag else _type_name(param.type_descriptor.annotation)
    help_text = re.sub(r"\s+", " ", (getattr(param, "help", None) or "").strip()).replace("|", "\\|")
    return f"| {name} | {kind} | {default} | {help_text} |"


# --- typed configs ------------------------------------------------------------------------------


def config_reference(module_name: str, model_name: str) -> str:
    """A table of every key of a pydantic config model, nested tables flattened to dotted keys."""
    model = getattr(importlib.import_module(module_name), model_name)
    rows = ["| key | type | default | constraints |", "|---|---|---|---|"]
    rows += list(_model_rows(model, ""))
    return "\n".join(rows)


def _model_rows(model, prefix: str):
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = _config_models(annotation)
        if nested and all(issubclass(m, BaseModel) for m in nested) and len(nested) == 1:
            yield from _model_rows(nested[0], f"{key}.")
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "required"
        elif field.default_factory is not None:
            default = f"`{_format_default(field.default_factory())}`"
        else:
            default = f"`{_format_default(field.default)}`"
        constraints = ", ".join(_constraint(item) for item in field.metadata if _constraint(item))
        yield f"| `{key}` | {_type_name(annotation)} | {default} | {constraints} |"


def _config_models(annotation) -> list:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _format_default(value) -> str:
    from pydantic import BaseModel

    if isinstance(value, (tuple, list)) and value and all(isinstance(item, BaseModel) for item in value):
        return "[" + ", ".join(f'{{kind = "{item.kind}"}}' for item in value) + "]"  # the first stages
    if isinstance(value, BaseModel):
        return "{" + ", ".join(f"{key} = {_format_default(item)}" for key, item in value if item is not None) + "}"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Path):
        value = str(value)
    return repr(value).replace("'", '"')


def _constraint(item) -> str:
    for attribute, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥")):
        value = getattr(item, attribute, None)
        if value is not None:
            return f"{symbol} {value}"
    pattern = getattr(item, "pattern", None)
    return f"matches `{pattern}`" if pattern else ""


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{value}"`' if isinstance(value, str) else f"`{value}`" for value in arguments)
    if origin is typing.Annotated:
        return _type_name(arguments[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in arguments)
    if origin in (list, tuple):
        inner = [a for a in arguments if a is not Ellipsis]
        return f"list of {_type_name(inner[0])}" if inner else "list"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)
