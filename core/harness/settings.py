"""LoadGen TestSettings for one run: a user.conf written into the run folder, loaded with ONE
``FromConfig`` call (mlperf.conf is compiled into loadgen >= 4.1; a second call logs
``error_invalid_config``), plus the audit.config of a compliance test.

user.conf carries what the rules leave to the submitter: Offline ``target_qps`` and SingleStream
``target_latency`` (from the RunConfig, else derived from the newest performance run of the same
set-up in the log folder, else the per-backend default; see :func:`expected`), and the duration and
query-count overrides
when the RunConfig gives them (short runs; such runs are not submittable, see core.compliance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.benchmark import LOADGEN_MODEL, RunConfig
from core.errors import UsageError
from core.fsio import write_text_atomic as atomic_write_text

# Offline target_qps when the RunConfig has no offline_expected_qps. GPU values are NVIDIA's per-GPU
# H100/H200 Offline config (6.8); the CPU reference runs a 61-TFLOP sample in minutes.
DEFAULT_TARGET_QPS = {"ort": 0.02, "torch": 6.8, "tensorrt": 6.8}
# SingleStream target_latency (ms) when the RunConfig has no single_stream_expected_latency_ms and no
# earlier SingleStream run of the same backend/precision/batch measured one: NVIDIA's H100 SingleStream
# config (572.434 ms) for GPU backends.
DEFAULT_TARGET_LATENCY_MS = {"ort": 60000.0, "torch": 572.434, "tensorrt": 572.434}
# How a measured figure becomes what LoadGen sizes a run from (loadgen test_settings_internal.cc).
# SingleStream: with equal issue LoadGen generates about 2 * min_duration / expected queries (at least
# min_query_count, padded to whole permutations of the set) and the run ends when they are done, so
# min_duration is met only while the true mean latency is at least expected / 2. NVIDIA's 572 ms
# against a measured 151 ms mean is what made a 60 s H200 run end after 215 queries (~32 s) INVALID.
# 1.5 x the measured mean holds while the SUT stays above 75 % of it and makes a run last about
# 1.33 x min_duration.
MEASURED_LATENCY_MARGIN = 1.5
# Offline: one query of 1.1 * min_duration * expected QPS samples, so the run lasts
# 1.1 * min_duration * expected / actual and meets min_duration only while actual <= 1.1 * expected.
# 0.98 x the measured throughput holds while the SUT runs at most 12 % faster than measured (a short
# run's figure carries its ramp) and makes a 600 s run last about 647 s (NVIDIA's per-system configs
# set their measured QPS the same way).
MEASURED_QPS_MARGIN = 0.98
FALLBACK_TARGET_QPS = 1.0  # mlperf.conf's *.Offline.target_qps
FALLBACK_TARGET_LATENCY_MS = 600.0

# Compliance TEST01 for 3d-unet (mlcommons/inference compliance/TEST01/3d-unet/audit.config):
# a performance run that also logs a sample of responses for comparison with the accuracy run.
TEST01_ACCURACY_LOG_RNG_SEED = 720381539243781796
TEST01_ACCURACY_LOG_SAMPLING_TARGET = 64

# Compliance TEST05 (vary the RNG seeds): mlcommons/inference compliance/nvidia/TEST05/audit.config is
# `*.*.test05 = 1`, and the seeds are the `*.*.test05_*_rng_seed` keys of LoadGen's mlperf.conf
# (these values are the ones compiled into mlcommons-loadgen 6.0.17). LoadGen does not read the
# `test05` key (nor RNG seeds) from a user or audit file, so we also set TestSettings.test05 and the
# three test05 seeds directly; the audit.config we write records them for the auditor.
TEST05_QSL_RNG_SEED = 7975553102935885558
TEST05_SAMPLE_INDEX_RNG_SEED = 11403566307062068064
TEST05_SCHEDULE_RNG_SEED = 15816800565822761601

# LoadGen 6.x loads its embedded mlperf.conf only on the FIRST FromConfig(conf_type=1) call of a
# process; a later call in the same process gets none of it (seeds 0, no equal issue, 10 s
# min_duration) and logs error_invalid_config "Multiple conf files are used". So a second run in one
# process reloads mlperf.conf explicitly (conf_type=0) to get correct settings, and is flagged as not
# submittable. Submission runs need a fresh process per run (the CLI is one).
_configured_in_process = False

SUPPORTED_AUDIT_TESTS = ("TEST01", "TEST05")  # TEST04 does not apply to 3d-unet
SUPPORTED_MODES = ("PerformanceOnly", "AccuracyOnly", "SubmissionRun")


def loadgen(lg: Any | None = None) -> Any:
    """The ``mlperf_loadgen`` module (or a stand-in passed by the caller)."""
    if lg is not None:
        return lg
    import mlperf_loadgen  # compiled, no stubs: pyproject's mypy overrides

    return mlperf_loadgen


@dataclass(frozen=True)
class Expected:
    """What LoadGen sizes a performance run from: Offline samples/s, SingleStream latency in ms."""

    value: float
    source: str  # "user", "measured" or "default"
    note: str = ""  # what to tell the user when they did not set it


@dataclass(frozen=True)
class BuiltSettings:
    settings: Any  # mlperf_loadgen.TestSettings
    user_conf: Path
    audit_config: Path  # passed to StartTestWithLogSettings; absent file = no audit
    audit_test: str | None
    target_qps: float | None
    target_latency_ms: float | None
    fresh_process: bool = True  # False: LoadGen was configured before in this process (see above)
    notes: tuple[str, ...] = ()  # lines for the run's log (where a setting came from)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def target_qps(cfg: RunConfig) -> float:
    """The user's Offline expected QPS, else the backend's default (no measurement)."""
    if cfg.offline_expected_qps is not None:
        return float(cfg.offline_expected_qps)
    return DEFAULT_TARGET_QPS.get(cfg.backend, FALLBACK_TARGET_QPS) * max(1, cfg.gpus)


def target_latency_ms(cfg: RunConfig) -> float:
    """The user's SingleStream expected latency, else the backend's default (no measurement)."""
    if cfg.single_stream_expected_latency_ms is not None:
        return float(cfg.single_stream_expected_latency_ms)
    return DEFAULT_TARGET_LATENCY_MS.get(cfg.backend, FALLBACK_TARGET_LATENCY_MS)


USER_CONF_HEADER = "# user.conf written by unet3d for: "


def _setup(cfg: RunConfig) -> tuple[Any, ...]:
    """What a measured figure carries over between runs: scenario, backend, precision, batch, devices
    and engines per device (the model and data are the workspace's)."""
    return (cfg.scenario, cfg.backend, cfg.precision, cfg.gpu_batch_size, cfg.gpus, cfg.inference_streams)


def measured(log_dir: Path, cfg: RunConfig) -> tuple[float, str] | None:
    """(figure, run id) of the newest finished performance run in ``log_dir`` with cfg's set-up:
    Offline samples/s, SingleStream mean latency in ms. VALID or not: an INVALID run measured as well
    (a run ended early is what this corrects); a cancelled or failed one did not finish measuring."""
    from core.history import runs_in

    for rec in runs_in(log_dir):  # newest first
        if rec.config is None or _setup(rec.config) != _setup(cfg) or rec.test_mode != "PerformanceOnly":
            continue
        if not rec.complete or rec.valid is None:
            continue
        if cfg.scenario == "Offline" and rec.metrics.samples_per_s:
            return rec.metrics.samples_per_s, rec.run_id
        if cfg.scenario == "SingleStream" and rec.metrics.latency_ms.get("mean"):
            return rec.metrics.latency_ms["mean"], rec.run_id
    return None


def expected(cfg: RunConfig, log_dir: Path | None = None) -> Expected:
    """What LoadGen sizes ``cfg``'s run from: the user's value; else the newest measurement of the same
    set-up in ``log_dir`` with its margin (Offline: MEASURED_QPS_MARGIN x samples/s, SingleStream:
    MEASURED_LATENCY_MARGIN x mean latency); else the backend's default. Both fallbacks come with a
    note saying so."""
    offline = cfg.scenario == "Offline"
    flag = "--offline_expected_qps" if offline else "--single_stream_expected_latency_ms"
    given = cfg.offline_expected_qps if offline else cfg.single_stream_expected_latency_ms
    if given is not None:
        return Expected(float(given), "user")
    what = f"{cfg.backend}/{cfg.precision}/batch {cfg.gpu_batch_size}"
    if cfg.inference_streams > 1:
        what += f"/{cfg.inference_streams} streams"
    found = measured(log_dir, cfg) if log_dir is not None else None
    if found is not None:
        figure, run = found
        if offline:
            qps = round(MEASURED_QPS_MARGIN * figure, 4)
            note = (f"Offline expected QPS {qps:g} = {MEASURED_QPS_MARGIN:g} x the {figure:.4f} samples/s "
                    f"measured by run {run} ({what}); {flag} overrides it")  # fmt: skip
            return Expected(qps, "measured", note)
        ms = round(MEASURED_LATENCY_MARGIN * figure, 3)
        note = (f"SingleStream expected latency {ms:g} ms = {MEASURED_LATENCY_MARGIN:g} x the mean "
                f"{figure:.3f} ms measured by run {run} ({what}); {flag} overrides it")  # fmt: skip
        return Expected(ms, "measured", note)
    if offline:
        qps = target_qps(cfg)
        note = (f"Offline expected QPS {qps:g} is the {cfg.backend} default (no Offline run of {what} to "
                f"measure it from): a SUT faster than {1.1 * qps:g} samples/s ends INVALID (min duration "
                f"not met); the next run uses this run's measured throughput, or set {flag}")  # fmt: skip
        return Expected(qps, "default", note)
    ms = target_latency_ms(cfg)
    note = (f"SingleStream expected latency {ms:g} ms is the {cfg.backend} default (no SingleStream run of "
            f"{what} to measure it from): a SUT faster than {ms / 2:g} ms per sample ends INVALID (min "
            f"duration not met); the next run uses this run's measured mean, or set {flag}")  # fmt: skip
    return Expected(ms, "default", note)


def user_conf_text(cfg: RunConfig, value: float | None = None) -> str:
    """The user.conf of this run (keys `3d-unet.<scenario>.<key>`; durations in ms). ``value``: what
    LoadGen sizes the run from (:func:`expected`; default: the user's value or the backend's)."""
    m, s = LOADGEN_MODEL, cfg.scenario
    lines = [f"{USER_CONF_HEADER}{cfg.run_args()}"]
    if s == "Offline":
        lines.append(f"{m}.{s}.target_qps = {_num(target_qps(cfg) if value is None else value)}")
    else:
        lat = target_latency_ms(cfg) if value is None else value
        lines.append(f"{m}.{s}.target_latency = {_num(lat)}")
    if cfg.min_duration is not None:
        lines.append(f"{m}.{s}.min_duration = {round(cfg.min_duration * 1000)}")
    if cfg.max_duration is not None:
        lines.append(f"{m}.{s}.max_duration = {round(cfg.max_duration * 1000)}")
    if cfg.min_query_count is not None:
        lines.append(f"{m}.{s}.min_query_count = {int(cfg.min_query_count)}")
    if cfg.max_query_count is not None:
        lines.append(f"{m}.{s}.max_query_count = {int(cfg.max_query_count)}")
    return "\n".join(lines) + "\n"


def read_user_conf(path: str | Path) -> dict[str, str]:
    """key -> value of a user.conf (the last component of ``model.scenario.key``; comments skipped)."""
    out: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip().rsplit(".", 1)[-1]] = value.strip()
    return out


def audit_config_text(audit_test: str) -> str:
    if audit_test == "TEST01":
        return (
            "# Compliance TEST01 for 3d-unet (mlcommons/inference compliance/TEST01/3d-unet/audit.config)\n"
            "*.*.mode = 2\n"
            f"*.*.accuracy_log_rng_seed = {TEST01_ACCURACY_LOG_RNG_SEED}\n"
            f"*.*.accuracy_log_sampling_target = {TEST01_ACCURACY_LOG_SAMPLING_TARGET}\n"
        )
    if audit_test == "TEST05":
        return (
            "# Compliance TEST05 (mlcommons/inference compliance/nvidia/TEST05/audit.config).\n"
            "# LoadGen takes the seeds below from TestSettings.test05_*_rng_seed (set by unet3d to\n"
            "# mlperf.conf's test05 seeds): *.*.test05_qsl_rng_seed = "
            f"{TEST05_QSL_RNG_SEED}, *.*.test05_sample_index_rng_seed = {TEST05_SAMPLE_INDEX_RNG_SEED},\n"
            f"# *.*.test05_schedule_rng_seed = {TEST05_SCHEDULE_RNG_SEED}\n"
            "*.*.mode = 2\n"
            "*.*.test05 = 1\n"
        )
    raise UsageError(
        f"--audit_test={audit_test} does not apply to 3d-unet (supported: {', '.join(SUPPORTED_AUDIT_TESTS)})"
    )


def expected_samples(settings: Any, scenario: str, test_mode: str, count: int) -> int:
    """Samples LoadGen will issue, as far as it can be known up front (0 = unknown until it issues).

    AccuracyOnly: every sample once. SingleStream performance: max(min_query_count,
    2 * min_duration / target_latency), rounded up past a whole number of permutations of the loaded
    samples when equal issue is on (more follow if min_duration is not met yet). Offline performance
    is one query whose size the SUT learns when it arrives."""
    if test_mode == "AccuracyOnly":
        return count
    if scenario == "SingleStream":
        lat_s = float(settings.single_stream_expected_latency_ns) / 1e9
        q = int(settings.min_query_count)
        if lat_s > 0:
            q = max(q, int(2.0 * float(settings.min_duration_ms) / 1000.0 / lat_s))
        if settings.sample_concatenate_permutation and count > 0:
            q += count - q % count
        if int(settings.max_query_count) > 0:
            q = min(q, int(settings.max_query_count))
        return q + (count if test_mode == "SubmissionRun" else 0)
    return 0


def check_config(cfg: RunConfig) -> RunConfig:
    """UsageError for what RunConfig.validate allows but a 3d-unet LoadGen run cannot do."""
    cfg.validate()
    if cfg.test_mode not in SUPPORTED_MODES:
        raise UsageError(
            f"--test_mode={cfg.test_mode} is not supported for {cfg.scenario} "
            f"(use one of {', '.join(SUPPORTED_MODES)})"
        )
    if cfg.audit_test is not None and cfg.audit_test not in SUPPORTED_AUDIT_TESTS:
        audit_config_text(cfg.audit_test)  # raises the UsageError
    return cfg


def build_settings(cfg: RunConfig, run_dir: Path, lg: Any | None = None) -> BuiltSettings:
    """TestSettings for ``cfg``; writes ``user.conf`` (and ``audit.config``) into ``run_dir``."""
    lg = loadgen(lg)
    check_config(cfg)
    run_dir = Path(run_dir)
    user_conf = run_dir / "user.conf"
    sized = expected(cfg, run_dir.parent)
    atomic_write_text(user_conf, user_conf_text(cfg, sized.value))
    audit = run_dir / "audit.config"
    if cfg.audit_test is not None:
        atomic_write_text(audit, audit_config_text(cfg.audit_test))

    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, cfg.scenario)
    s.mode = getattr(lg.TestMode, cfg.test_mode)
    global _configured_in_process
    fresh = not _configured_in_process
    if not fresh:  # restore mlperf.conf's values that LoadGen would silently drop (see above)
        s.FromConfig(str(user_conf), LOADGEN_MODEL, cfg.scenario, 0)
    rc = s.FromConfig(str(user_conf), LOADGEN_MODEL, cfg.scenario)  # once per run
    _configured_in_process = True
    if rc != 0:
        raise UsageError(f"LoadGen rejected the generated user.conf (code {rc})", user_conf)
    if cfg.audit_test == "TEST05":
        s.test05 = True
        s.test05_qsl_rng_seed = TEST05_QSL_RNG_SEED
        s.test05_sample_index_rng_seed = TEST05_SAMPLE_INDEX_RNG_SEED
        s.test05_schedule_rng_seed = TEST05_SCHEDULE_RNG_SEED
    return BuiltSettings(
        settings=s,
        user_conf=user_conf,
        audit_config=audit,
        audit_test=cfg.audit_test,
        target_qps=sized.value if cfg.scenario == "Offline" else None,
        target_latency_ms=sized.value if cfg.scenario == "SingleStream" else None,
        fresh_process=fresh,
        # an accuracy run issues every sample once whatever the expected figure: nothing to say
        notes=(sized.note,) if sized.note and cfg.test_mode != "AccuracyOnly" else (),
    )
