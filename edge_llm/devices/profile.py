"""Device profiles: one TOML table per device (profiles/*.toml here, or your own files).

Your own profiles go in ``$EDGE_LLM_CONFIG/devices`` (default ``~/.config/edge-llm/devices``), or
pass the path of a .toml file wherever a device name is taken. ``host`` is this machine, detected.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edge_llm.errors import ConfigError

BUILTIN_DIR = Path(__file__).with_name("profiles")
GPU_BACKENDS = ("none", "cuda", "metal", "vulkan", "opencl", "auto")


def user_dir() -> Path:
    base = os.environ.get("EDGE_LLM_CONFIG")
    return (Path(base) if base else Path.home() / ".config" / "edge-llm") / "devices"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    big_cores: int
    little_cores: int
    ram_gb: float
    app_memory_gb: float  # what one app may use: the budget a model must fit
    bandwidth_gbs: float  # peak memory bandwidth
    cpu_gflops: float  # effective quantized matmul throughput of the big cores (prefill)
    power_w: float  # typical package power while generating
    kind: str = "device"
    arch: str = "unknown"
    bandwidth_efficiency: float = 0.6  # share of peak bandwidth llama.cpp decode reaches
    core_bandwidth_gbs: float = 0.0  # what one core can read (0: bandwidth / big cores)
    gpu_backend: str = "none"
    gpu_memory_gb: float = 0.0
    gpu_bandwidth_gbs: float = 0.0
    gpu_gflops: float = 0.0
    # the largest weight the GPU backend takes (Vulkan: maxStorageBufferRange, 128 MiB on many
    # phone GPUs); bigger ones stay in host memory. 0: no limit
    gpu_max_tensor_mb: float = 0.0
    mlock: bool = False  # pin the weights in RAM (needs RLIMIT_MEMLOCK)
    # plan's objective among files of one model: the most capable file that fits and decodes
    # at least this fast (a comfortable reading pace in a chat)
    min_decode_tokens_per_s: float = 20.0
    source: str = ""  # the file it came from
    # Measured per-type costs by thread count (the host only: edge_llm.devices.calibrate).
    calibration: dict | None = None

    @property
    def cores(self) -> int:
        return self.big_cores + self.little_cores

    @property
    def threads(self) -> int:
        """Big cores only: on big.LITTLE a little core holds every barrier back."""
        return self.big_cores

    @property
    def budget_bytes(self) -> int:
        return int(self.app_memory_gb * 1e9)

    def bandwidth_for(self, threads: int) -> float:
        """Bytes/s llama.cpp decode can read with ``threads`` threads (roofline ceiling)."""
        peak = self.bandwidth_gbs * 1e9 * self.bandwidth_efficiency
        per_core = (self.core_bandwidth_gbs * 1e9 * self.bandwidth_efficiency) or peak / max(
            1, self.big_cores
        )
        return min(peak, per_core * threads)

    def gflops_for(self, threads: int) -> float:
        return self.cpu_gflops * min(threads, self.big_cores) / max(1, self.big_cores)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_REQUIRED_POSITIVE = ("ram_gb", "app_memory_gb", "bandwidth_gbs", "cpu_gflops", "power_w")


def from_dict(data: dict, source: str) -> DeviceProfile:
    """Validate a profile table; a clear ConfigError names the file and the field."""
    where = f"device profile {source}"
    fields = {f.name: f for f in dataclasses.fields(DeviceProfile)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}")
    for name, value in data.items():
        kind = fields[name].type
        if kind in ("int", "float") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ConfigError(f"{where}: {name} must be a number (got {value!r})")
        if kind == "int" and not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be a whole number (got {value!r})")
        if kind in ("int", "float") and value < 0:
            raise ConfigError(f"{where}: {name} must not be negative (got {value})")
        if kind == "str" and not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string (got {value!r})")
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false (got {value!r})")
    for name in _REQUIRED_POSITIVE:
        if data[name] <= 0:
            raise ConfigError(f"{where}: {name} must be greater than 0 (got {data[name]})")
    if data["big_cores"] < 1:
        raise ConfigError(f"{where}: big_cores must be at least 1 (got {data['big_cores']})")
    if data["app_memory_gb"] > data["ram_gb"]:
        raise ConfigError(
            f"{where}: app_memory_gb ({data['app_memory_gb']}) exceeds ram_gb ({data['ram_gb']})"
        )
    if not 0 < data.get("bandwidth_efficiency", 0.6) <= 1:
        raise ConfigError(f"{where}: bandwidth_efficiency must be in (0, 1]")
    backend = data.get("gpu_backend", "none")
    if backend not in GPU_BACKENDS:
        raise ConfigError(
            f"{where}: gpu_backend {backend!r} unknown; use one of {', '.join(GPU_BACKENDS)}"
        )
    if backend not in ("none", "auto") and data.get("gpu_memory_gb", 0) <= 0:
        raise ConfigError(f"{where}: gpu_backend {backend} needs gpu_memory_gb > 0")
    return DeviceProfile(**data, source=source)


def load_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"device profile {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"device profile {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read device profile {path}: {e.strerror or e}") from None
    return from_dict(data, str(path))


def profile_files() -> dict[str, Path]:
    """Profile name -> file; a user file overrides a built-in one of the same name."""
    files = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}
    if user_dir().is_dir():
        files.update({p.stem: p for p in sorted(user_dir().glob("*.toml"))})
    return files


def get(name: str) -> DeviceProfile:
    """A profile by name ("host" is detected), or from a .toml path."""
    if name.endswith(".toml") or os.sep in name:
        return load_file(name)
    if name == "host":
        return host_profile()
    files = profile_files()
    if name not in files:
        known = ", ".join(["host", *files])
        raise ConfigError(
            f"unknown device {name!r}; known: auto, cpu, gpu, {known} (or a .toml file)"
        )
    return load_file(files[name])


def all_profiles() -> list[DeviceProfile]:
    return [load_file(p) for p in profile_files().values()]


def _host_gpu(gpus: list) -> dict:
    if not gpus:
        return {"gpu_backend": "none"}
    g = gpus[0]
    backend = g.backend.lower() if g.backend.lower() in GPU_BACKENDS else "auto"
    return {
        "gpu_backend": backend,
        "gpu_memory_gb": round(g.memory_free / 1e9, 3),
        "gpu_max_tensor_mb": g.max_tensor_bytes / 1e6,
    }


@cache
def host_profile() -> DeviceProfile:
    """This machine as a profile. Speed predictions need the calibration (`edge-llm devices
    --calibrate`, edge_llm.devices.calibrate, about two minutes); without it they use the plain
    roofline."""
    from edge_llm.cpus import available_cpus
    from edge_llm.devices import detect
    from edge_llm.llama.binding import cpu_kernels, gpu_devices

    cal = detect.cached_calibration()
    total, avail = detect.memory_gb()
    big, little = detect.big_little()
    n = available_cpus()
    bw = {int(k): v for k, v in (cal or {}).get("read_bandwidth_by_threads", {}).items()}
    all_bw = bw.get(n) or detect.measure_read_bandwidth(n)
    flags = " ".join(detect.simd_flags())
    return DeviceProfile(
        name="host",
        description=f"this machine: {detect.cpu_model()}, {n} CPUs, llama.cpp CPU kernels"
        f" {cpu_kernels().variant} ({flags})",
        kind="host",
        arch=platform.machine(),
        big_cores=big,
        little_cores=little,
        ram_gb=round(total, 2),
        app_memory_gb=round(min(avail, total), 2),
        bandwidth_gbs=all_bw / 1e9,
        core_bandwidth_gbs=bw.get(1, all_bw / n) / 1e9,
        bandwidth_efficiency=min(1.0, (cal or {}).get("decode_efficiency", 0.6)),
        cpu_gflops=(cal or {}).get("cpu_gflops", 20.0 * n),
        power_w=15.0 * n,  # no sensor read here; the density benchmark reads RAPL where it can
        # the first GPU llama.cpp offloads to, with the memory it reports free now (its speed
        # is not measured: predictions stay the CPU's)
        **_host_gpu(gpu_devices()),
        source="detected",
        calibration=(cal or {}).get("fit"),
    )
