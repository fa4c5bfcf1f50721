"""Settings as dataclasses, filled from defaults, then an optional `--config` YAML file, then flags.

Each field of a settings dataclass becomes a flag (`hub_listen` -> `--hub-listen`) whose help
is the field's `help` metadata; YAML keys are the field names (dashes allowed). A flag given on
the command line wins over the file, the file over the default. Settings are loaded once, at the
entry point, and passed down; nothing reads them from a global.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from common.errors import ConfigError

T = TypeVar("T")


def setting(default: Any, help: str, *, required: bool = False) -> Any:
    """A settings field: its default and the one line of help its flag shows."""
    return dataclasses.field(default=default, metadata={"help": help, "required": required})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _convert(name: str, tp: Any, value: Any) -> Any:
    target = _scalar_type(tp)
    if value is None:
        return None
    if not isinstance(value, str) and not _fits(target, value):
        raise ConfigError(f"setting {name}: {value!r} is not a {target.__name__}")
    try:
        if target is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target is Path:
            return Path(value)
        return target(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {value!r} as {target.__name__}") from exc


def _fits(target: Any, value: Any) -> bool:
    """Whether a value from YAML already has the field's type (ints may stand for floats)."""
    if target is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if target is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if target is Path:
        return isinstance(value, Path)
    return isinstance(value, target)


def build_parser(cls: type[Any], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config", type=Path, help="YAML file with settings (keys are the flag names)"
    )
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _scalar_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if not f.metadata.get("required"):
            help_text += f" (default: {f.default})"
        else:
            help_text += " (required)"
        if kind is bool:
            parser.add_argument(
                _flag(f.name), action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(_flag(f.name), metavar=f.name.upper(), help=help_text)
    return parser


def load(cls: type[T], argv: list[str] | None, prog: str, description: str) -> T:
    """Parse flags (and the --config file they name) into a `cls` instance."""
    parser = build_parser(cls, prog, description)
    args = vars(parser.parse_args(argv))
    try:
        return from_sources(cls, args.pop("config", None), args)
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def from_sources(cls: type[T], config_file: Path | None, flags: dict[str, Any]) -> T:
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_yaml(config_file))
    values.update(flags)
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    kwargs = {name: _convert(name, hints[name], v) for name, v in values.items()}
    missing = [_flag(n) for n, f in known.items() if f.metadata.get("required") and n not in kwargs]
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)}")
    return cls(**kwargs)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 in brackets) -> (host, port); raises ConfigError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"{what} must be HOST:PORT with a port from 0 to 65535, got {value!r}")
    return host.strip("[]"), int(port)
