"""`unet3d`'s arguments: the flags every subcommand takes, NVIDIA's run flags (spelled as NVIDIA spells
them) and the RunConfigs they ask for. The subcommands themselves are listed in core.cli.commands."""

from __future__ import annotations

import argparse
import itertools
import shlex
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, Protocol

from core import __version__
from core.benchmark import AUDIT_TESTS, CONFIG_VERS, PRECISIONS, SCENARIOS, TEST_MODES, RunConfig
from core.errors import UsageError

PROG = "unet3d"
ACCURACY_TARGETS = {"99": "default", "99.9": "high_accuracy"}
PATH_FLAGS = ("data_dir", "preprocessed_data_dir", "model_dir", "log_dir")
ACTIONS = ("run_harness", "run_audit_harness", "calibrate", "generate_engines")

# NVIDIA flags accepted for compatibility and passed to the harness in RunConfig.extra
EXTRA_FLAGS = (
    "gpu_copy_streams",
    "gpu_inference_streams",
    "use_graphs",
    "end_on_device",
    "performance_sample_count",
    "user_conf_path",
    "mlperf_conf_path",
    "log_mode",
    "logfile_suffix",
    "system_name",
    "unet3d_sw_gaussian_patch_path",
    "no_audit_verify",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``error: ...``, exit 2) instead of usage + text."""

    def error(self, message: str) -> NoReturn:
        if self.prog == "RUN_ARGS":
            raise UsageError(f"--run-args: {message}")
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text} must be a non-negative number")
    return value


def common_flags() -> argparse.ArgumentParser:
    """Flags every subcommand accepts (also before the subcommand). Defaults are SUPPRESSed so that a
    flag given before the subcommand is not reset by the subparser."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("workspace")
    s = argparse.SUPPRESS
    g.add_argument("--workspace", metavar="DIR", default=s, help="workspace root (env UNET3D_WORKSPACE; .)")
    g.add_argument("--data_dir", metavar="DIR", default=s, help="raw KiTS19 cases (env DATA_DIR)")
    g.add_argument(
        "--preprocessed_data_dir",
        metavar="DIR",
        default=s,
        help="preprocessed data (env PREPROCESSED_DATA_DIR)",
    )
    g.add_argument("--model_dir", metavar="DIR", default=s, help="model folder (env MODEL_DIR)")
    g.add_argument("--log_dir", metavar="DIR", default=s, help="LoadGen logs (env LOG_DIR)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", default=s, help="JSON on stdout instead of a table")
    o.add_argument("-o", "--output", metavar="PATH", default=s, help="write stdout's bytes to PATH too")
    o.add_argument("-q", "--quiet", action="store_true", default=s, help="no progress on stderr")
    return p


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """NVIDIA's flags, spelled as NVIDIA spells them. Every default is None so that what the user typed
    can be told apart from what --run-args or --fast supply."""
    p.add_argument("--benchmarks", metavar="LIST", help="3d-unet (comma list)")
    p.add_argument(
        "--scenarios", metavar="LIST", help=f"{', '.join(SCENARIOS)} (comma list; default Offline)"
    )
    p.add_argument("--config_ver", metavar="LIST", help=f"{', '.join(CONFIG_VERS)} (comma list)")
    p.add_argument("--accuracy_target", metavar="LIST", help="99 or 99.9 (same as --config_ver)")
    p.add_argument("--test_mode", metavar="LIST", help=f"{', '.join(TEST_MODES)} (comma list)")
    p.add_argument("--action", metavar="ACTION", help=f"{', '.join(ACTIONS)} (default run_harness)")
    p.add_argument("--backend", metavar="NAME", help="ort, torch or tensorrt (default ort)")
    p.add_argument("--precision", metavar="P", help=f"{', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--gpu_batch_size", type=positive_int, metavar="N", help="windows per engine call")
    p.add_argument("--min_duration", type=_number, metavar="S", help="LoadGen min duration, seconds")
    p.add_argument("--max_duration", type=_number, metavar="S", help="LoadGen max duration, seconds")
    p.add_argument("--min_query_count", type=positive_int, metavar="N")
    p.add_argument("--max_query_count", type=positive_int, metavar="N")
    p.add_argument("--offline_expected_qps", type=_number, metavar="QPS")
    p.add_argument("--single_stream_expected_latency_ns", type=positive_int, metavar="NS")
    p.add_argument("--single_stream_expected_latency_ms", type=_number, metavar="MS")
    p.add_argument("--audit_test", metavar="TEST", help=", ".join(AUDIT_TESTS))
    p.add_argument("--gpus", type=positive_int, metavar="N", help="number of GPUs (default 1)")
    p.add_argument(
        "--fast",
        action="store_const",
        const=True,
        help="min_duration 60 s and min_query_count 1 (unless given)",
    )
    shown = {"gpu_inference_streams": "engines per GPU, each with its own stream (default 1)"}
    for name in EXTRA_FLAGS:
        p.add_argument(f"--{name}", metavar="V", help=shown.get(name, argparse.SUPPRESS))


class Subcommand(Protocol):
    """What the parser needs of a subcommand (core.cli.commands.Command)."""

    @property
    def name(self) -> str: ...
    @property
    def help(self) -> str: ...
    @property
    def arguments(self) -> Callable[[argparse.ArgumentParser], None]: ...


def build_parser(commands: Iterable[Subcommand]) -> argparse.ArgumentParser:
    common = common_flags()
    parser = _Parser(
        prog=PROG,
        description="MLPerf Inference 3D-UNet (KiTS19): headless CLI.",
        parents=[common],
        epilog="Exit codes: 0 ok, 1 run INVALID or accuracy below target, 2 usage, 3 missing input, "
        "4 bad input, 75 workspace busy (retry later), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])  # type: ignore[list-item]
        cmd.arguments(p)
    return parser


def _run_parser() -> argparse.ArgumentParser:
    """A parser of RUN_ARGS strings alone (the same run flags)."""
    p = _Parser(prog="RUN_ARGS", add_help=False)
    add_run_flags(p)
    for name in PATH_FLAGS:  # NVIDIA's RUN_ARGS may carry paths too; flags typed outside win
        p.add_argument(f"--{name}", metavar="DIR")
    return p


# --------------------------------------------------------------------------- run configuration


def run_flag_names() -> list[str]:
    """The destinations of the run flags (and the path flags RUN_ARGS may carry)."""
    return [a.dest for a in _run_parser()._actions if a.dest != "help"]


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_run_args(text: str) -> dict[str, Any]:
    """Parse an NVIDIA RUN_ARGS string into the run flags that were given (None for absent ones)."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--run-args: {exc}") from None
    return vars(_run_parser().parse_args(tokens))


def merge_flags(explicit: dict[str, Any], run_args: str | None) -> dict[str, Any]:
    """Flags typed on the command line win over the same flags inside --run-args."""
    merged = parse_run_args(run_args) if run_args else {}
    for key, value in explicit.items():
        if value is not None or key not in merged:
            merged[key] = value
    return merged


def configs_from_flags(flags: dict[str, Any]) -> list[RunConfig]:
    """Every (scenario, config_ver, test_mode) combination the flags ask for, validated."""
    benchmarks = split_list(flags.get("benchmarks")) or ["3d-unet"]
    for b in benchmarks:
        if b not in ("3d-unet", "3d-unet-99", "3d-unet-99.9"):
            raise UsageError(f"--benchmarks={b}: this tool runs only 3d-unet")
    scenarios = split_list(flags.get("scenarios")) or ["Offline"]
    config_vers = split_list(flags.get("config_ver"))
    for t in split_list(flags.get("accuracy_target")):
        if t not in ACCURACY_TARGETS:
            raise UsageError(f"--accuracy_target={t} is not one of 99, 99.9")
        config_vers.append(ACCURACY_TARGETS[t])
    config_vers = list(dict.fromkeys(config_vers)) or ["default"]
    test_modes = split_list(flags.get("test_mode")) or ["PerformanceOnly"]

    min_duration = flags.get("min_duration")
    min_query_count = flags.get("min_query_count")
    if flags.get("fast"):
        min_duration = 60.0 if min_duration is None else min_duration
        min_query_count = 1 if min_query_count is None else min_query_count
    latency_ms = flags.get("single_stream_expected_latency_ms")
    if latency_ms is None and flags.get("single_stream_expected_latency_ns") is not None:
        latency_ms = flags["single_stream_expected_latency_ns"] / 1e6
    extra = {k: str(flags[k]) for k in EXTRA_FLAGS if flags.get(k) is not None}
    backend = flags.get("backend") or "ort"
    from core.backends import backend_names

    if backend not in backend_names():
        raise UsageError(f"--backend={backend} is not one of {', '.join(backend_names())}")

    configs = []
    for scenario, config_ver, test_mode in itertools.product(scenarios, config_vers, test_modes):
        cfg = RunConfig(
            scenario=scenario,
            config_ver=config_ver,
            test_mode=test_mode,
            backend=backend,
            precision=flags.get("precision") or "fp32",
            gpu_batch_size=flags.get("gpu_batch_size") or 1,
            min_duration=min_duration,
            max_duration=flags.get("max_duration"),
            min_query_count=min_query_count,
            max_query_count=flags.get("max_query_count"),
            offline_expected_qps=flags.get("offline_expected_qps"),
            single_stream_expected_latency_ms=latency_ms,
            audit_test=flags.get("audit_test"),
            gpus=flags.get("gpus") or 1,
            extra=extra,
        )
        configs.append(cfg.validate())
    return configs
