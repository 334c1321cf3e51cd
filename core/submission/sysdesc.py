"""The system description (``systems/<system>.json``), read from the machine where it can be.

Every key the submission checker requires is written. What a probe can read is filled in (CPU from
``lscpu``, memory from ``/proc/meminfo``, OS from ``/etc/os-release``, GPUs, driver and CUDA from
``nvidia-smi``, software versions from the installed packages); what no probe can know (cooling,
memory DIMM layout, networking) is written as ``TO BE FILLED: <hint>``, which the pre-check reports
until a person replaces it.

MLCommons' ``mlperf-sysinfo`` (PyPI) was evaluated for this and is not used: it collects through the
mlc-scripts automation (pinned pre-releases of mlc-scripts/mlcflow) whose scripts detect sudo and may
build or fetch helper tools (lstopo, a CUDA device query), so it neither works offline nor fits a
unit-tested, dependency-light stage step.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from core import __version__
from core.submission.rules import SYSTEM_FIELDS, TO_FILL

# HBM generation by GPU (what nvidia-smi does not report)
GPU_MEMORY_TYPES = {"H200": "HBM3e", "H100": "HBM3", "GH200": "HBM3", "B200": "HBM3e", "A100": "HBM2e"}


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


@dataclass(frozen=True)
class Probe:
    """Where machine facts come from (tests pass canned outputs)."""

    run: Callable[[list[str]], str | None] = _run
    read: Callable[[str], str | None] = _read
    net_devices: Callable[[], list[str]] = field(
        default=lambda: sorted(p.name for p in Path("/sys/class/net").glob("*") if (p / "device").exists())
    )


def fill(hint: str) -> str:
    return f"{TO_FILL}: {hint}"


def _kv(text: str | None, sep: str = ":") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        if sep in line:
            k, _, v = line.partition(sep)
            out.setdefault(k.strip(), v.strip())
    return out


def _gb(n_bytes: float) -> str:
    gb = n_bytes / 1e9
    return f"{gb / 1000:.1f} TB" if gb >= 1000 else f"{gb:.0f} GB"


def package_versions() -> dict[str, str]:
    """Versions of the software the harness runs on (installed distributions; nothing imported)."""
    out = {"unet3d-console": __version__, "Python": platform.python_version()}
    for dist, name in (
        ("numpy", "NumPy"),
        ("mlcommons_loadgen", "LoadGen"),
        ("onnxruntime", "ONNX Runtime"),
        ("onnxruntime-gpu", "ONNX Runtime"),
        ("torch", "PyTorch"),
        ("triton", "Triton"),
        ("tensorrt", "TensorRT"),
    ):
        try:
            out.setdefault(name, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_facts(probe: Probe | None = None, storage_path: Path | None = None) -> dict[str, Any]:
    """What this machine says about itself (missing facts are absent keys)."""
    p = probe or Probe()
    facts: dict[str, Any] = {}
    cpu = _kv(p.run(["lscpu"]))
    if cpu.get("Model name"):
        facts["cpu_model"] = cpu["Model name"]
    for key, name in (("Socket(s)", "sockets"), ("Core(s) per socket", "cores_per_socket")):
        if cpu.get(key, "").isdigit():
            facts[name] = int(cpu[key])
    if cpu.get("CPU max MHz"):
        facts["cpu_max_mhz"] = round(float(cpu["CPU max MHz"]))
    caches = [
        f"{k.replace(' cache', '')} {cpu[k]}"
        for k in ("L1d cache", "L1i cache", "L2 cache", "L3 cache")
        if k in cpu
    ]
    if caches:
        facts["cpu_caches"] = ", ".join(caches)
    mem = _kv(p.read("/proc/meminfo")).get("MemTotal", "")
    if mem.endswith("kB") and mem[:-2].strip().isdigit():
        facts["memory_bytes"] = int(mem[:-2]) * 1024
    osr = _kv(p.read("/etc/os-release"), "=")
    if osr.get("PRETTY_NAME"):
        facts["os"] = osr["PRETTY_NAME"].strip('"')
    facts["kernel"] = platform.release()
    smi = p.run(
        [
            "nvidia-smi",
            "--query-gpu=name,memory.total,driver_version,clocks.max.sm,pcie.link.gen.max,pcie.link.width.max",
            "--format=csv,noheader,nounits",
        ]
    )
    gpus = [[c.strip() for c in line.split(",")] for line in (smi or "").splitlines() if line.count(",") >= 5]
    facts["gpus"] = [
        {
            "name": g[0],
            "memory_mib": g[1],
            "driver": g[2],
            "max_sm_mhz": g[3],
            "pcie_gen": g[4],
            "pcie_width": g[5],
        }
        for g in gpus
    ]
    head = p.run(["nvidia-smi"]) if gpus else None
    if head and "CUDA Version:" in head:
        facts["cuda"] = head.split("CUDA Version:", 1)[1].split()[0].strip("|")
    if storage_path is not None:
        with contextlib.suppress(OSError):
            facts["storage_bytes"] = shutil.disk_usage(storage_path).total
    lsblk = p.run(["lsblk", "-d", "-n", "-o", "NAME,ROTA"]) or ""
    disks = [line.split() for line in lsblk.splitlines() if len(line.split()) == 2]
    if disks and all(name.startswith("nvme") for name, _ in disks):
        facts["storage_type"] = "NVMe SSD"
    nics = p.net_devices()
    if nics:
        facts["nic_count"] = len(nics)
    return facts


def _framework(backend: str | None, versions: Mapping[str, str]) -> str:
    parts = {
        "torch": ["PyTorch", "Triton"],
        "tensorrt": ["TensorRT", "PyTorch", "Triton"],
        "ort": ["ONNX Runtime"],
    }.get(backend or "", ["ONNX Runtime", "PyTorch", "TensorRT"])
    names = [f"{n} {versions[n]}" for n in parts if n in versions]
    return ", ".join([*names, f"unet3d-console {versions.get('unet3d-console', __version__)}"])


def system_description(
    *,
    division: str,
    submitter: str,
    system_name: str,
    system_type: str,
    status: str = "available",
    backend: str | None = None,
    facts: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every field of systems/<system>.json, filled from ``facts`` (machine_facts) where possible."""
    f = dict(facts if facts is not None else machine_facts())
    v = dict(versions if versions is not None else package_versions())
    gpus = f.get("gpus") or []
    kernel = f.get("kernel") or platform.release()
    g = gpus[0] if gpus else None
    sockets = f.get("sockets")
    mem_type = next((t for k, t in GPU_MEMORY_TYPES.items() if g and k in g["name"]), None)
    driver = [f"NVIDIA driver {g['driver']}"] if g else []
    cuda = [f"CUDA {f['cuda']}"] if f.get("cuda") else []
    stack = (
        [f"Python {v['Python']}"] + [f"{n} {v[n]}" for n in ("NumPy", "LoadGen") if n in v] + driver + cuda
    )
    desc: dict[str, Any] = {
        "division": division,
        "submitter": submitter,
        "status": status,
        "system_name": system_name,
        "system_type": system_type,
        "system_type_detail": "",
        "number_of_nodes": 1,
        "host_processor_model_name": f.get("cpu_model") or fill("CPU model"),
        "host_processors_per_node": sockets if sockets else fill("number of CPU sockets"),
        "host_processor_core_count": f.get("cores_per_socket") or fill("cores per CPU"),
        "host_processor_frequency": f"{f['cpu_max_mhz']} MHz"
        if f.get("cpu_max_mhz")
        else fill("max CPU clock"),
        "host_processor_caches": f.get("cpu_caches", ""),
        "host_processor_interconnect": "N/A" if sockets == 1 else fill("CPU interconnect, e.g. 4x xGMI"),
        "host_memory_capacity": _gb(f["memory_bytes"]) if f.get("memory_bytes") else fill("host memory"),
        "host_memory_configuration": fill("DIMMs, e.g. 24x 64GB DDR5-4800"),
        "host_storage_capacity": _gb(f["storage_bytes"]) if f.get("storage_bytes") else fill("storage size"),
        "host_storage_type": f.get("storage_type") or fill("storage type, e.g. NVMe SSD"),
        "host_networking": fill("NICs used, e.g. 1x 25GbE (N/A if not networked)"),
        "host_networking_topology": "N/A",
        "host_network_card_count": f.get("nic_count") or fill("number of NICs"),
        "accelerators_per_node": len(gpus) or "0",  # the checker reads a number 0 as an empty answer
        "accelerator_model_name": g["name"] if g else "N/A",
        "accelerator_memory_capacity": f"{round(int(g['memory_mib']) / 1024)} GB"
        if g and g["memory_mib"].isdigit()
        else "N/A",
        "accelerator_memory_configuration": (mem_type or fill("accelerator memory type, e.g. HBM3e"))
        if g
        else "N/A",
        "accelerator_frequency": f"{g['max_sm_mhz']} MHz" if g else "",
        "accelerator_host_interconnect": f"PCIe Gen{g['pcie_gen']} x{g['pcie_width']}" if g else "N/A",
        "accelerator_interconnect": (fill("GPU interconnect, e.g. 18x NVLink 4") if len(gpus) > 1 else "N/A")
        if g
        else "N/A",
        "accelerator_interconnect_topology": "",
        "accelerator_on-chip_memories": "",
        "cooling": fill("air or liquid"),
        "framework": _framework(backend, v),
        "operating_system": f"{f.get('os') or platform.system()} (kernel {kernel})",
        "other_software_stack": ", ".join(stack),
        "hw_notes": "",
        "sw_notes": f"Runs made and staged with unet3d-console {v.get('unet3d-console', __version__)}",
    }
    assert set(desc) == set(SYSTEM_FIELDS), set(desc) ^ set(SYSTEM_FIELDS)
    return desc


def to_fill(desc: Mapping[str, Any]) -> list[str]:
    """The keys a person still has to fill in."""
    return [k for k, val in desc.items() if isinstance(val, str) and val.startswith(TO_FILL)]
