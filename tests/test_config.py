"""core.config: file discovery, parsing, env overrides, priorities, atomic save."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import config
from core.benchmark import RunConfig
from core.errors import UsageError


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No developer config leaks in: search only empty temp dirs."""
    monkeypatch.setattr(config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "near", tmp_path / "far"])
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_locate_none_then_nearest_wins(tmp_path):
    assert config.locate(env={}) is None
    far = write(tmp_path / "far" / config.FILE_NAME, "[run]\nbackend = 'torch'\n")
    assert config.locate(env={}) == far
    near = write(tmp_path / "near" / config.FILE_NAME, "[run]\nbackend = 'ort'\n")
    assert config.locate(env={}) == near
    assert config.load(env={}).run == {"backend": "ort"}


def test_explicit_env_config_must_exist(tmp_path):
    f = write(tmp_path / "x.toml", "")
    assert config.locate(env={config.ENV_CONFIG: str(f)}) == f
    with pytest.raises(UsageError, match="does not exist"):
        config.locate(env={config.ENV_CONFIG: str(tmp_path / "nope.toml")})


def test_real_search_dirs_order(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "SEARCH_DIRS_OVERRIDE", None)
    monkeypatch.chdir(tmp_path)
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    c = config.candidates(env=env)
    assert c == [
        tmp_path / "unet3d.toml",
        tmp_path / "xdg" / "unet3d" / "config.toml",
        tmp_path / "home" / ".unet3d.toml",
    ]


def test_parse_full_file_and_run_config(tmp_path):
    f = write(
        tmp_path / "near" / config.FILE_NAME,
        """
[workspace]
root = "ws"
log_dir = "/abs/logs"
[run]
scenario = "SingleStream"
config_ver = "high_accuracy"
gpu_batch_size = 4
min_duration = 60
[keymap]
"job.cancel" = "escape,ctrl+c"
[console]
theme = "nord"
""",
    )
    s = config.load(env={})
    assert s.source == f
    assert s.workspace["root"] == str(f.parent / "ws")  # relative to the file
    assert s.workspace["log_dir"] == "/abs/logs"
    rc = s.run_config()
    assert rc == RunConfig(
        scenario="SingleStream", config_ver="high_accuracy", gpu_batch_size=4, min_duration=60.0
    )
    assert rc.run_args().endswith("--min_duration=60")
    assert s.keymap == {"job.cancel": "escape,ctrl+c"}
    assert s.console == {"theme": "nord"}
    ws = s.resolve_workspace(env={})
    assert ws.root == f.parent / "ws"
    assert ws.log_dir == Path("/abs/logs")
    assert ws.data_dir == f.parent / "ws" / "build" / "data" / "KiTS19"


def test_priorities_flag_env_file_default(tmp_path):
    write(tmp_path / "near" / config.FILE_NAME, "[workspace]\nroot = '/from/file'\ndata_dir = '/file/data'\n")
    s = config.load(env={})
    assert s.resolve_workspace(env={}).data_dir == Path("/file/data")
    assert s.resolve_workspace(env={"DATA_DIR": "/env/data"}).data_dir == Path("/env/data")
    assert s.resolve_workspace(env={"DATA_DIR": "/env/data"}, data_dir="/flag/data").data_dir == Path(
        "/flag/data"
    )
    assert s.resolve_workspace(env={}).root == Path("/from/file")
    assert s.resolve_workspace(env={"UNET3D_WORKSPACE": "/env/root"}).root == Path("/env/root")
    assert config.Settings().resolve_workspace(env={}, root="/r").log_dir == Path("/r/build/logs")


def test_env_overrides_file(tmp_path):
    write(tmp_path / "near" / config.FILE_NAME, "[run]\nbackend = 'ort'\ngpu_batch_size = 2\n")
    env = {
        "UNET3D_RUN__BACKEND": "torch",
        "UNET3D_RUN__GPU_BATCH_SIZE": "8",
        "UNET3D_KEYMAP__JOB__CANCEL": "ctrl+c",
        "UNET3D_CONSOLE__THEME": "gruvbox",
        "UNET3D_WORKSPACE": "/not/a/section/override",
    }
    s = config.load(env=env)
    assert s.run == {"backend": "torch", "gpu_batch_size": 8}
    assert s.keymap == {"job.cancel": "ctrl+c"}
    assert s.console == {"theme": "gruvbox"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[nope]\na = 1\n", r"unknown section \[nope\]"),
        ("[run]\nscenraio = 'Offline'\n", "unknown key run.scenraio"),
        ("[run]\ngpu_batch_size = 'four'\n", "is not a number"),
        ("[run]\nscenario = 'Server'\n", "--scenarios=Server is not one of"),
        ("[workspace]\nroot = \n", "not valid TOML"),
        ("[console]\ncolour = 'red'\n", "unknown key console.colour"),
    ],
)
def test_bad_files_name_the_file(tmp_path, text, match):
    f = write(tmp_path / "near" / config.FILE_NAME, text)
    with pytest.raises(UsageError, match=match) as info:
        config.load(env={})
    if "Server" not in match:
        assert str(f) in str(info.value)


def test_save_roundtrip_atomic(tmp_path):
    s = config.Settings(
        workspace={"root": "/w"},
        run={"scenario": "Offline", "min_duration": 1.5, "gpu_batch_size": 2},
        keymap={"job.cancel": "escape"},
        console={"theme": 'a "quoted" name'},
    )
    target = tmp_path / "cfg" / "config.toml"
    assert config.save(s, target) == target
    back = config.load(target, env={})
    assert (back.workspace, back.run, back.keymap, back.console) == (s.workspace, s.run, s.keymap, s.console)
    assert [p.name for p in target.parent.iterdir()] == ["config.toml"]  # no temp file left
