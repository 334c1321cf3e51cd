"""The settings file shared by the CLI and the console: one TOML file, environment overrides, `locate`.

Sources, highest priority first:
  1. values the caller passes explicitly (CLI flags the user typed; the console's form);
  2. the environment: ``UNET3D_<SECTION>__<KEY>`` (e.g. ``UNET3D_RUN__BACKEND=torch``), plus
     NVIDIA's path variables (DATA_DIR, PREPROCESSED_DATA_DIR, MODEL_DIR, LOG_DIR) and
     ``UNET3D_WORKSPACE`` for the root, which :class:`core.workspace.Workspace` already reads;
  3. the nearest config file: ``$UNET3D_CONFIG`` if set, else the first of ``./unet3d.toml``,
     ``<user config dir>/unet3d/config.toml``, ``~/.unet3d.toml`` that exists;
  4. the defaults (NVIDIA's layout under ``<root>/build``; :class:`core.benchmark.RunConfig`).

File layout::

    [workspace]            # all optional; relative paths are relative to the file's folder
    root = "~/mlperf"
    data_dir = "..."       # also preprocessed_dir, model_dir, log_dir

    [run]                  # defaults for RunConfig fields (scenario, config_ver, backend, ...)
    scenario = "Offline"
    backend = "ort"

    [keymap]               # console binding id -> keys, e.g. "job.cancel" = "escape,ctrl+c"
    "job.cancel" = "escape"

    [console]
    theme = "textual-dark"

Tests point :data:`SEARCH_DIRS_OVERRIDE` (or the ``search_dirs`` argument) at a temporary folder so a
developer's own file never leaks in.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.benchmark import RunConfig
from core.errors import UsageError
from core.fsio import write_text_atomic
from core.workspace import ENV_ROOT, Workspace

ENV_CONFIG = "UNET3D_CONFIG"
ENV_PREFIX = "UNET3D_"
FILE_NAME = "unet3d.toml"
SECTIONS = ("workspace", "run", "keymap", "console")
WORKSPACE_KEYS = ("root", "data_dir", "preprocessed_dir", "model_dir", "log_dir")
PATH_ENV = {
    "data_dir": "DATA_DIR",
    "preprocessed_dir": "PREPROCESSED_DATA_DIR",
    "model_dir": "MODEL_DIR",
    "log_dir": "LOG_DIR",
}
CONSOLE_KEYS = ("theme",)
_RUN_FIELDS = {f.name: f for f in fields(RunConfig) if f.name != "extra"}

# Set by tests (monkeypatch) to a list of directories searched instead of the real ones.
SEARCH_DIRS_OVERRIDE: list[Path] | None = None


def user_config_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "unet3d"


def candidates(search_dirs: list[Path] | None = None, env: dict[str, str] | None = None) -> list[Path]:
    """Files looked for, nearest first."""
    dirs = search_dirs if search_dirs is not None else SEARCH_DIRS_OVERRIDE
    if dirs is not None:
        return [Path(d) / FILE_NAME for d in dirs]
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or Path.home())
    return [Path.cwd() / FILE_NAME, user_config_dir(env) / "config.toml", home / f".{FILE_NAME}"]


def locate(search_dirs: list[Path] | None = None, env: dict[str, str] | None = None) -> Path | None:
    """The config file in effect, or None when there is none. ``$UNET3D_CONFIG`` wins (it must exist)."""
    env = dict(os.environ) if env is None else env
    explicit = env.get(ENV_CONFIG)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UsageError(f"{ENV_CONFIG} names a file that does not exist", path)
        return path.absolute()
    for path in candidates(search_dirs, env):
        if path.is_file():
            return path.absolute()
    return None


def default_path(env: dict[str, str] | None = None) -> Path:
    """Where `save` writes when no file exists yet (the user config dir)."""
    return user_config_dir(env) / "config.toml"


@dataclass
class Settings:
    """The merged configuration. ``source`` is the file it came from (None: defaults/env only)."""

    workspace: dict[str, str] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    keymap: dict[str, str] = field(default_factory=dict)
    console: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def resolve_workspace(self, env: dict[str, str] | None = None, **flags: str | Path | None) -> Workspace:
        """The Workspace: flags > environment > this file > defaults."""
        env = dict(os.environ) if env is None else env
        merged: dict[str, Any] = {}
        for key in WORKSPACE_KEYS:
            if flags.get(key) is not None:
                merged[key] = flags[key]
            elif key != "root" and env.get(PATH_ENV[key]):
                merged[key] = env[PATH_ENV[key]]
            elif key == "root" and env.get(ENV_ROOT):
                merged[key] = env[ENV_ROOT]
            elif self.workspace.get(key):
                merged[key] = self.workspace[key]
        root = merged.pop("root", None)
        return Workspace.resolve(root, env=env, **merged)

    def run_config(self, **overrides: Any) -> RunConfig:
        """RunConfig from the file's [run] defaults, then ``overrides``; validated."""
        data = {**self.run, **{k: v for k, v in overrides.items() if v is not None}}
        return RunConfig.from_dict(data).validate()

    def to_toml(self) -> str:
        out: list[str] = []
        for name in SECTIONS:
            table = getattr(self, name)
            if not table:
                continue
            out.append(f"[{name}]")
            out.extend(f"{_key(k)} = {_value(v)}" for k, v in table.items() if v is not None)
            out.append("")
        return "\n".join(out)


def _key(k: str) -> str:
    return k if k.replace("_", "").isalnum() else _value(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise UsageError(f"cannot write non-finite number {v} to a config file")
        return repr(v)
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _coerce_run(key: str, raw: Any, where: str) -> Any:
    """Check/convert one [run] value against the RunConfig field type."""
    f = _RUN_FIELDS.get(key)
    if f is None:
        raise UsageError(f"unknown key run.{key} (known: {', '.join(_RUN_FIELDS)})", where)
    kind = str(f.type)
    try:
        if "float" in kind:
            return float(raw)
        if "int" in kind:
            if isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
                raise ValueError(raw)
            return int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"run.{key} = {raw!r} is not a number", where) from None
    return str(raw)


def parse(text: str, where: str | Path = "<config>") -> Settings:
    """Parse TOML text into Settings; unknown sections or keys are a UsageError naming the file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"not valid TOML: {exc}", where) from None
    settings = Settings()
    for section, table in data.items():
        if section not in SECTIONS:
            raise UsageError(f"unknown section [{section}] (known: {', '.join(SECTIONS)})", where)
        if not isinstance(table, dict):
            raise UsageError(f"{section} must be a table", where)
        for key, value in table.items():
            if section == "workspace":
                if key not in WORKSPACE_KEYS:
                    raise UsageError(
                        f"unknown key workspace.{key} (known: {', '.join(WORKSPACE_KEYS)})", where
                    )
                settings.workspace[key] = str(value)
            elif section == "run":
                settings.run[key] = _coerce_run(key, value, str(where))
            elif section == "keymap":
                settings.keymap[str(key)] = str(value)
            else:
                if key not in CONSOLE_KEYS:
                    raise UsageError(f"unknown key console.{key} (known: {', '.join(CONSOLE_KEYS)})", where)
                settings.console[key] = value
    return settings


def _apply_env(settings: Settings, env: dict[str, str]) -> None:
    """UNET3D_<SECTION>__<KEY>=value overrides one entry (keymap keys use '.' as given)."""
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section = section.lower()
        if section not in SECTIONS or not key:
            continue
        where = f"${name}"
        if section == "keymap":
            settings.keymap[key.lower().replace("__", ".")] = value
        elif section == "run":
            settings.run[key.lower()] = _coerce_run(key.lower(), value, where)
        elif section == "workspace":
            if key.lower() not in WORKSPACE_KEYS:
                raise UsageError(f"unknown key workspace.{key.lower()}", where)
            settings.workspace[key.lower()] = value
        else:
            if key.lower() not in CONSOLE_KEYS:
                raise UsageError(f"unknown key console.{key.lower()}", where)
            settings.console[key.lower()] = value


def load(
    path: str | Path | None = None,
    *,
    search_dirs: list[Path] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Read the config (``path``, else the located file, else none) and apply env overrides."""
    env = dict(os.environ) if env is None else env
    file = Path(path) if path is not None else locate(search_dirs, env)
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError("config file not found", file) from None
        except OSError as exc:
            raise UsageError(f"cannot read config file: {exc.strerror}", file) from None
        settings = parse(text, file)
        settings.source = file.absolute()
        base = file.absolute().parent
        for key, value in list(settings.workspace.items()):  # relative paths: relative to the file
            p = Path(value).expanduser()
            settings.workspace[key] = str(p if p.is_absolute() else base / p)
    else:
        settings = Settings()
    _apply_env(settings, env)
    if settings.run:
        settings.run_config()  # validate early: a bad scenario in the file is a usage error now
    return settings


def save(settings: Settings, path: str | Path | None = None) -> Path:
    """Write atomically (temp file in the same folder, fsync, rename). Returns the path written."""
    target = Path(path) if path is not None else (settings.source or default_path())
    write_text_atomic(target, settings.to_toml())
    return target
