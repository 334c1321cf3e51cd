"""What a 3d-unet submission tree looks like in each round (mlcommons/inference
tools/submission/submission_structure.md and the submission checker's path tables and field lists).

From v6.0 on, measurements and compliance results sit in each scenario folder of ``results/`` and the
source folder is ``src/``; up to v5.1 they were the top-level ``measurements/`` and ``compliance/``
folders and the source folder was ``code/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.benchmark import MODEL_NAMES
from core.compliance import ROUND_SEEDS

VERSIONS = tuple(ROUND_SEEDS)  # rounds whose layout and seeds we know
DIVISIONS = ("closed", "open")
SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge", "edge,datacenter")
AVAILABILITIES = ("available", "preview", "rdi")
BENCHMARKS = tuple(MODEL_NAMES.values())  # 3d-unet-99, 3d-unet-99.9
# which scenarios a system type must submit for 3d-unet (checker required-scenarios-*)
REQUIRED_SCENARIOS = {"datacenter": ("Offline",), "edge": ("SingleStream", "Offline")}

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"
ACCURACY_TXT = "accuracy.txt"
PERF_FILES = (SUMMARY, DETAIL)
ACCURACY_FILES = (SUMMARY, DETAIL, ACCURACY_TXT, ACCURACY_LOG)
MEASURE_FILES = ("user.conf", "README.md")  # beside measurements.json, never empty
TEST01_FILES = ("verify_accuracy.txt", "verify_performance.txt")
TEST01_FALLBACK_FILES = ("baseline_accuracy.txt", "compliance_accuracy.txt")
CALIBRATION_DOC = "calibration.md"  # <division>/<submitter>/ (or documentation/) in the closed division

# the line the checker reads from accuracy.txt (its constants.py pattern for 3d-unet: the mean DICE)
ACCURACY_LINE = re.compile(r"^Accuracy:\s*mean\s*=\s*([\d.]+)")

MAX_ACCURACY_LOG_BYTES = 10 * 1024  # a truncated accuracy log is at most this big
MAX_FILE_BYTES = 50 * 1024 * 1024  # no file of a submission may be larger
TRUNCATE_KEEP = 4096  # characters kept from each end of a truncated accuracy log

# measurements.json keys, each needing a non-empty value
MEASUREMENT_FIELDS = (
    "input_data_types",
    "retraining",
    "starting_weights_filename",
    "weight_data_types",
    "weight_transformations",
)

# systems/<system>.json: every key must be present; MEANINGFUL ones non-empty
SYSTEM_FIELDS = (
    "division",
    "submitter",
    "status",
    "system_name",
    "system_type",
    "system_type_detail",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_processor_frequency",
    "host_processor_caches",
    "host_processor_interconnect",
    "host_memory_capacity",
    "host_memory_configuration",
    "host_storage_capacity",
    "host_storage_type",
    "host_networking",
    "host_networking_topology",
    "host_network_card_count",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "accelerator_memory_configuration",
    "accelerator_frequency",
    "accelerator_host_interconnect",
    "accelerator_interconnect",
    "accelerator_interconnect_topology",
    "accelerator_on-chip_memories",
    "cooling",
    "framework",
    "operating_system",
    "other_software_stack",
    "hw_notes",
    "sw_notes",
)
SYSTEM_MEANINGFUL_FIELDS = (
    "division",
    "submitter",
    "status",
    "system_name",
    "system_type",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_memory_capacity",
    "host_memory_configuration",
    "host_storage_capacity",
    "host_storage_type",
    "host_networking",
    "host_network_card_count",
    "host_networking_topology",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "accelerator_host_interconnect",
    "accelerator_memory_configuration",
    "accelerator_interconnect",
    "cooling",
    "framework",
    "operating_system",
    "other_software_stack",
)
TO_FILL = "TO BE FILLED"  # prefix of a system field no probe could read: a person must write it


def benchmark_name(config_ver: str) -> str:
    return MODEL_NAMES[config_ver]


@dataclass(frozen=True)
class Layout:
    """Relative paths (POSIX) of one round's tree, below the submission root."""

    version: str
    division: str
    submitter: str

    @property
    def in_results(self) -> bool:
        """v6.0 on: measurements and TEST01 live in the scenario folder."""
        return self.version not in ("v5.0", "v5.1")

    @property
    def root(self) -> PurePosixPath:
        return PurePosixPath(self.division, self.submitter)

    @property
    def source_dir(self) -> PurePosixPath:
        return self.root / ("src" if self.in_results else "code")

    def system_json(self, system: str) -> PurePosixPath:
        return self.root / "systems" / f"{system}.json"

    @property
    def calibration_doc(self) -> PurePosixPath:
        return self.root / CALIBRATION_DOC

    def scenario_dir(self, system: str, benchmark: str, scenario: str) -> PurePosixPath:
        return self.root / "results" / system / benchmark / scenario

    def measurements_dir(self, system: str, benchmark: str, scenario: str) -> PurePosixPath:
        if self.in_results:
            return self.scenario_dir(system, benchmark, scenario)
        return self.root / "measurements" / system / benchmark / scenario

    def measurements_json(self, system: str, benchmark: str, scenario: str) -> PurePosixPath:
        name = "measurements.json" if self.in_results else f"{system}_{scenario}.json"
        return self.measurements_dir(system, benchmark, scenario) / name

    def compliance_dir(self, system: str, benchmark: str, scenario: str) -> PurePosixPath:
        """The folder holding TEST01/ (the -o of the official run_verification.py)."""
        if self.in_results:
            return self.scenario_dir(system, benchmark, scenario)
        return self.root / "compliance" / system / benchmark / scenario


def accuracy_mean(txt: str | Path) -> float | None:
    """The mean DICE of an ``Accuracy: mean = ...`` line in ``txt`` (accuracy.txt, the TEST01 fallback's
    baseline/compliance files), as the checker reads it; None when the file or the line is missing."""
    try:
        lines = Path(txt).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if m := ACCURACY_LINE.match(line):
            return float(m.group(1))
    return None
