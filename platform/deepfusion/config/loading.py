"""Reading an experiment YAML: ``--set`` overrides, ``${ENV}`` expansion, validation."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from deepfusion.config.base import ConfigError, is_storage_field
from deepfusion.config.experiment import ExperimentConfig
from deepfusion.storage import check_reachable, is_uri

ModelT = TypeVar("ModelT", bound=BaseModel)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_string(value: str) -> str:
    """Expand ``${NAME}`` and ``${NAME:-default}`` (shell style) and a leading ``~``."""

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is None:
            raise ConfigError(f"environment variable {name} is not set (referenced as {match.group(0)})")
        return default

    return os.path.expanduser(_ENV_REF.sub(substitute, value))


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _expand_string(value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML.

    List items are addressed by index (``datasets.0.root=/data``).
    """
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form dotted.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"override {dotted!r}: {key!r} is not an index of the list at "
                                  f"{'.'.join(keys[:i]) or '<root>'}")
            key = int(key)  # type: ignore[assignment]
        elif not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[key] = yaml.safe_load(raw)
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        # Drop the discriminator tag pydantic inserts into union locations.
        loc = ".".join(str(p) for p in e["loc"] if p not in ("image_folder", "meld", "speech", "manifest"))
        value = e.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
        lines.append(f"  {loc or '<root>'}: {e['msg']}{shown}")
    return "\n".join(lines)


def validate_config(model: type[ModelT], data: Any, source: str = "<config>", base: Path | None = None) -> ModelT:
    """``base``: the folder relative paths resolve in (default: the current one)."""
    try:
        return model.model_validate(_expand_env(data), context={"base": base})
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None


def load_config(
    path: str | os.PathLike, overrides: list[str] = (), model: type[ModelT] = ExperimentConfig,
    base: Path | None = None,
) -> ModelT:
    """``base``: the folder the config's relative paths (and a relative ``path``) resolve
    in; default: the current one."""
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    config = validate_config(model, data, source=str(path), base=base)
    for key, uri in storage_uris(config):
        check_reachable(uri, f"{path}: {key}")
    return config


def storage_uris(config: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """Every storage URI in a validated config (its ``StoragePath`` fields), with its dotted key."""
    found = []
    for name, field in type(config).model_fields.items():
        value, key = getattr(config, name), f"{prefix}{name}"
        if is_uri(value) and is_storage_field(field):
            found.append((key, value))
        elif isinstance(value, BaseModel):
            found += storage_uris(value, key + ".")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found += storage_uris(item, f"{key}.{i}.")
    return found
