"""Is one run submittable? The 3d-unet rules of MLPerf Inference, judged per run from plain facts.

:func:`judge_run` is pure: it takes what a run folder says (scenario, mode, audit test, status, LoadGen's
verdict, the effective settings LoadGen logged in ``mlperf_log_detail.txt``, the dataset and model
provenance recorded in ``run.json``, the keys ``user.conf`` set, the accuracy) and returns whether the
run is *compliant* plus one line per broken rule. A run folder's verdict is
``core.history.RunRecord.compliance``: the record's own facts passed through :func:`judge_run` once (no
second reading of the folder). A run shortened for speed (``--min_duration=10``) stays possible and is
labelled ``shortened``, never compliant. :func:`judge_dataset` and :func:`judge_model` judge a
workspace's data and model by the same rules (the auditor checklist's set-up steps).

The rules (LoadGen ``mlperf.conf``, the submission checker's constants, the inference policies):
min_duration 600 s (Offline and SingleStream); Offline ``min_query_count`` 43 and at least 43 samples
per query; SingleStream at least 1,024 queries and its early-stopping estimate met; performance and
accuracy sample count 43 (the official case list); equal issue (``sample_concatenate_permutation``)
on; the RNG seeds of a round's ``mlperf.conf``; no ``user.conf`` override of a fixed setting (only
``target_qps`` / ``target_latency`` are the submitter's); no LoadGen error; accuracy at least 99 % (or
99.9 %) of the official FP32 DICE 0.86170 with the official model; only TEST01 as an audit test.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.benchmark import FP32_REFERENCE_DICE, TARGET_FRACTIONS
from core.fsio import md5_file

if TYPE_CHECKING:
    from core.harness.logs import LoadgenSettings
    from core.workspace import Workspace

MIN_DURATION_MS = 600_000  # mlperf.conf *.Offline/SingleStream.min_duration; checker TEST_DURATION_MS
OFFLINE_MIN_QUERY_COUNT = 43  # mlperf.conf 3d-unet.Offline.min_query_count; checker samples/query >= 43
SINGLE_STREAM_MIN_QUERIES = 1024  # inference rules' SingleStream minimum (checker min-queries table)
DATASET_SIZE = 43  # performance and accuracy sample count: 42 KiTS19 cases + case_00400
TEST01_SAMPLING_TARGET = 64  # compliance/TEST01/3d-unet/audit.config
USER_CONF_ALLOWED = ("target_qps", "target_latency")  # what a submitter may set; the rest is fixed

# The official model: Zenodo record 5597155, the file the reference and NVIDIA download; the MD5 is
# the one the record publishes (MLCommons' automation checks downloads against the same value).
OFFICIAL_MODEL_FILE = "3dunet_kits19_128x128x128_dynbatch.onnx"
OFFICIAL_MODEL_MD5 = "82f0618fde78f9839e7c712274019b4a"

# (qsl, sample_index, schedule) RNG seeds of each round's mlperf.conf (submission checker, "seeds").
# A run's seeds say which round's LoadGen made it; the checker of another round rejects them.
ROUND_SEEDS: dict[str, tuple[int, int, int]] = {
    "v5.1": (1780908523862526354, 14771362308971278857, 18209322760996052031),
    "v6.0": (2465351861681999779, 14276810075590677512, 3936089224930324775),
    "v6.1": (2085463073848966840, 2747215439041700203, 16159082839903944936),
}

PERFORMANCE_MODES = ("PerformanceOnly", "SubmissionRun")
ACCURACY_MODES = ("AccuracyOnly", "SubmissionRun")
# rules an auditor's test may set aside on purpose: "dataset" (a new validation set: its case list,
# its size and its origin) and "model" (new weights: the official model file)
WAIVABLE = ("dataset", "model")


def round_of_seeds(seeds: Sequence[int | None]) -> str | None:
    """The round whose mlperf.conf sets these (qsl, sample_index, schedule) seeds, or None."""
    for version, known in ROUND_SEEDS.items():
        if tuple(seeds) == known:
            return version
    return None


def accuracy_target(config_ver: str) -> float:
    """The closed-division threshold: 99 % / 99.9 % of the official FP32 DICE 0.86170."""
    return TARGET_FRACTIONS[config_ver] * FP32_REFERENCE_DICE


@dataclass(frozen=True)
class Compliance:
    """``compliant``: True (every rule met), False (at least one broken: ``reasons`` says which, one
    line each), None (nothing broken, but the evidence for some rule is missing: ``reasons`` says
    what). ``shortened``: a performance run cut short on purpose (min_duration or query count)."""

    compliant: bool | None
    reasons: tuple[str, ...] = ()
    shortened: bool = False

    @property
    def label(self) -> str:
        if self.compliant is True:
            return "compliant"
        if self.compliant is None:
            return "unknown"
        return "shortened" if self.shortened else "not compliant"

    @property
    def line(self) -> str:
        """One line for a table cell: the label and the first reason."""
        if not self.reasons:
            return self.label
        first = self.reasons[0]
        return first if first.startswith(f"{self.label}: ") else f"{self.label}: {first}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "compliant": self.compliant,
            "label": self.label,
            "shortened": self.shortened,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Compliance:
        c = d.get("compliant")
        return cls(
            compliant=c if isinstance(c, bool) else None,
            reasons=tuple(str(r) for r in d.get("reasons") or ()),
            shortened=bool(d.get("shortened")),
        )


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"


def judge_run(
    *,
    scenario: str,
    test_mode: str,
    audit_test: str | None = None,
    status: str = "complete",
    valid: bool | None = None,
    settings: LoadgenSettings | None = None,
    dataset: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    user_conf: Mapping[str, str] | None = None,
    accuracy_mean: float | None = None,
    config_ver: str = "default",
    waive: Collection[str] = (),
) -> Compliance:
    """Judge one run against the 3d-unet rules.

    ``settings``: the effective LoadGen settings (core.harness.logs.loadgen_settings). ``dataset``:
    run.json's ``dataset`` ({"cases", "official_case_list", "synthetic"}). ``model``: run.json's
    ``model_provenance`` ({"md5", "official"}). ``user_conf``: key -> value of the keys the run's
    user.conf set (the last component of ``3d-unet.<scenario>.<key>``). ``accuracy_mean``: the mean
    DICE of an accuracy run. ``valid``: LoadGen's VALID/INVALID of a performance run. ``waive``: rules
    of :data:`WAIVABLE` not judged (the auditor's new-weights and new-dataset runs)."""
    unknown_waiver = set(waive) - set(WAIVABLE)
    if unknown_waiver:
        raise ValueError(f"cannot waive {sorted(unknown_waiver)}: only {', '.join(WAIVABLE)}")
    own_data = "dataset" not in waive
    broken: list[str] = []
    short: list[str] = []
    unknown: list[str] = []
    performance = test_mode in PERFORMANCE_MODES or audit_test is not None
    accuracy = test_mode in ACCURACY_MODES and audit_test is None

    if status == "running":
        return Compliance(None, ("run not finished",))
    if status != "complete":
        broken.append(f"run {status}")
    if audit_test == "TEST05":
        broken.append("TEST05 is retired for 3d-unet (since v5.0 only TEST01 applies)")
    elif audit_test not in (None, "TEST01"):
        broken.append(f"{audit_test} does not apply to 3d-unet (only TEST01)")

    s = settings
    if s is None:
        unknown.append("no effective LoadGen settings (mlperf_log_detail.txt missing or unreadable)")
    else:
        if s.errors:
            more = f" (+{len(s.errors) - 1} more)" if len(s.errors) > 1 else ""
            broken.append(f"LoadGen logged an error: {s.errors[0]}{more}")
        if s.sample_concatenate_permutation is not True:
            broken.append("sample_concatenate_permutation (equal issue) is off")
        if None not in s.seeds and round_of_seeds(s.seeds) is None:
            broken.append(f"RNG seeds are no round's mlperf.conf seeds (qsl_rng_seed {s.qsl_rng_seed})")
        if audit_test is None and s.audit_config_found:
            broken.append("an audit.config was applied to a run that is not an audit run")
        if audit_test == "TEST01" and (
            not s.audit_config_found or s.accuracy_log_sampling_target != TEST01_SAMPLING_TARGET
        ):
            broken.append(
                f"TEST01 audit.config not applied (accuracy_log_sampling_target "
                f"{s.accuracy_log_sampling_target}, needs {TEST01_SAMPLING_TARGET})"
            )

    if performance and s is not None:
        if s.min_duration_ms is not None and s.min_duration_ms < MIN_DURATION_MS:
            short.append(
                f"shortened: min_duration {_seconds(s.min_duration_ms)} < {_seconds(MIN_DURATION_MS)}"
            )
        if s.max_duration_ms:
            short.append(f"shortened: max_duration {_seconds(s.max_duration_ms)} caps the run")
        if s.max_query_count:
            short.append(f"shortened: max_query_count {s.max_query_count} caps the run")
        if scenario == "Offline":
            mqc = s.requested_min_query_count
            if mqc is not None and mqc < OFFLINE_MIN_QUERY_COUNT:
                short.append(f"shortened: Offline min_query_count {mqc} < {OFFLINE_MIN_QUERY_COUNT}")
            if s.samples_per_query is not None and s.samples_per_query < OFFLINE_MIN_QUERY_COUNT:
                broken.append(f"Offline samples per query {s.samples_per_query} < {OFFLINE_MIN_QUERY_COUNT}")
        elif scenario == "SingleStream":
            if s.query_count is not None and s.query_count < SINGLE_STREAM_MIN_QUERIES:
                broken.append(f"SingleStream ran {s.query_count} queries < {SINGLE_STREAM_MIN_QUERIES:,}")
            if s.early_stopping_met is False:
                broken.append("SingleStream early-stopping estimate not met")
        if own_data and s.performance_sample_count not in (None, DATASET_SIZE):
            broken.append(f"performance_sample_count {s.performance_sample_count} != {DATASET_SIZE}")
    if performance and status == "complete":
        if valid is False:
            broken.append("LoadGen result INVALID")
        elif valid is None:
            unknown.append("no LoadGen result (VALID/INVALID) in the summary")

    if own_data and accuracy and s is not None and s.accuracy_sample_count not in (None, DATASET_SIZE):
        broken.append(
            f"accuracy run covers {s.accuracy_sample_count} samples, the dataset has {DATASET_SIZE}"
        )

    if own_data:
        _dataset_rules(dataset, broken, unknown)
    official_model = None if model is None else model.get("official")
    if "model" not in waive:
        _model_rules(model, broken, unknown)

    if accuracy and status == "complete":
        if accuracy_mean is None:
            broken.append("no accuracy result")
        elif official_model is True:
            target = accuracy_target(config_ver)
            if accuracy_mean < target:
                pct = f"{TARGET_FRACTIONS[config_ver] * 100:g} %"
                broken.append(
                    f"accuracy {accuracy_mean:.5f} < {target:.6f} ({pct} of {FP32_REFERENCE_DICE:.5f})"
                )

    if user_conf is None:
        unknown.append("user.conf not found")
    else:
        fixed = sorted(k for k in user_conf if k not in USER_CONF_ALLOWED)
        if fixed:
            broken.append(
                f"user.conf overrides {', '.join(fixed)} (fixed by mlperf.conf; only "
                f"{' / '.join(USER_CONF_ALLOWED)} are the submitter's)"
            )

    return _verdict(short, broken, unknown)


def _verdict(short: list[str], broken: list[str], unknown: list[str]) -> Compliance:
    if short or broken:
        return Compliance(False, tuple(short + broken), shortened=bool(short))
    if unknown:
        return Compliance(None, tuple(unknown))
    return Compliance(True)


def _dataset_rules(dataset: Mapping[str, Any] | None, broken: list[str], unknown: list[str]) -> None:
    if dataset is None:
        unknown.append("dataset provenance not recorded")
        return
    if dataset.get("official_case_list") is False:
        broken.append(f"case list is not the official {DATASET_SIZE} cases ({dataset.get('cases')} cases)")
    if dataset.get("synthetic") is True:
        broken.append("synthetic data (demo phantoms), not KiTS19")
    elif dataset.get("synthetic") is None:
        unknown.append("dataset provenance unknown (no DATA_DIR to inspect)")


def _model_rules(model: Mapping[str, Any] | None, broken: list[str], unknown: list[str]) -> None:
    official = None if model is None else model.get("official")
    if official is False:
        md5 = model.get("md5") if model else None
        broken.append(f"model is not the official {OFFICIAL_MODEL_FILE} (md5 {md5}): open division only")
    elif official is None:
        unknown.append("model provenance not recorded")


def judge_dataset(dataset: Mapping[str, Any] | None) -> Compliance:
    """The dataset rules alone (:func:`dataset_provenance`'s facts): the official 43 cases of KiTS19."""
    broken: list[str] = []
    unknown: list[str] = []
    _dataset_rules(dataset, broken, unknown)
    return _verdict([], broken, unknown)


def judge_model(model: Mapping[str, Any] | None) -> Compliance:
    """The model rule alone (:func:`model_provenance`'s facts): the official model file."""
    broken: list[str] = []
    unknown: list[str] = []
    _model_rules(model, broken, unknown)
    return _verdict([], broken, unknown)


# --- provenance written into run.json when a run starts ---------------------------------------------


def model_provenance(model_path: Path | None) -> dict[str, Any]:
    """{"file", "md5", "official"}: whether the model file is the official one (by its MD5); an
    unreadable file says nothing ("official": None)."""
    md5 = None
    if model_path is not None:
        try:
            md5 = md5_file(model_path)
        except OSError:
            md5 = None
    return {
        "file": Path(model_path).name if model_path is not None else None,
        "md5": md5,
        "official": None if md5 is None else md5 == OFFICIAL_MODEL_MD5,
    }


def dataset_provenance(ws: Workspace, cases: Sequence[str]) -> dict[str, Any]:
    """{"cases", "official_case_list", "synthetic"}. ``synthetic``: the demo's generator leaves its
    manifest (core.synthetic.MANIFEST) in DATA_DIR; None when there is no DATA_DIR to look at."""
    from core.cases import OFFICIAL_INFERENCE

    manifest = ws.data_dir / "synthetic.json"  # core.synthetic.MANIFEST (not imported: it pulls scipy)
    if manifest.is_file():
        synthetic: bool | None = True
    elif ws.data_dir.is_dir() and any(p.name.startswith("case_") for p in ws.data_dir.iterdir()):
        synthetic = False
    else:
        synthetic = None
    return {
        "cases": len(cases),
        "official_case_list": list(cases) == OFFICIAL_INFERENCE,
        "synthetic": synthetic,
    }


def run_provenance(ws: Workspace, cases: Sequence[str], model_path: Path | None) -> dict[str, Any]:
    """The run.json fields the rules need: ``dataset`` and ``model_provenance``."""
    return {"dataset": dataset_provenance(ws, cases), "model_provenance": model_provenance(model_path)}
