"""Where a model runs: CPU threads and GPU offload for a device name.

``device`` is "auto" (GPU offload when this llama.cpp build has a GPU backend, else CPU),
"cpu", "gpu", or a device profile (``edge-llm devices`` lists them; a .toml path works too): then
the context, KV-cache type, batch, threads and GPU layers are chosen to fit the profile's memory
budget (edge_llm.devices.plan).

Threads: given explicitly, they are used as given. Otherwise they adapt to the host's load.
llama.cpp's threads meet at a barrier after every operation, so a thread that loses its core to
another process stalls all the others: on a 2-CPU machine with one CPU busy elsewhere, 2 threads
decode at half the speed of 1 (scripts/runtime_overhead.py). So the runtime measures how much CPU
*other* processes use (``CpuLoad``) and runs on the CPUs they leave free, checking again before
each generation.
"""

from __future__ import annotations

from dataclasses import dataclass

# the host's CPUs and their load (re-exported: edge_llm.devices.available_cpus, ...)
from edge_llm.cpus import MAX_AUTO_THREADS, CpuLoad, available_cpus, threads_for  # noqa: F401
from edge_llm.errors import ConfigError

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    threads: int
    threads_batch: int
    n_gpu_layers: int  # -1: all layers
    adaptive_threads: bool = False  # threads follow the host's load (no explicit threads given)
    # Chosen for a device profile (None: the caller's or the runtime's defaults).
    n_ctx: int | None = None
    kv_type: str | None = None
    n_batch: int | None = None
    use_mlock: bool = False
    plan: object | None = None  # the edge_llm.devices.plan.Plan behind the choice


def resolve_device(
    device: str = "auto",
    *,
    threads: int | None = None,
    model_path=None,
    n_ctx: int | None = None,
    kv_type: str | None = None,
    n_batch: int | None = None,
    gpu_layers: int | None = None,
) -> DeviceConfig:
    """Threads, GPU layers and (for a profile) context, KV type and batch for ``device``;
    ``gpu_layers`` (llama.cpp's count: the output layer first, then the last repeating layers;
    -1 all) overrides the device's choice."""
    from edge_llm.llama.binding import gpu_devices

    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1 (got {threads})")
    if gpu_layers is not None and gpu_layers < -1:
        raise ConfigError(f"--gpu-layers must be -1 (all), 0 or a count (got {gpu_layers})")
    name = device or "auto"
    if name.lower() == "cpu" and gpu_layers:
        raise ConfigError("--gpu-layers offloads to a GPU; drop it, or use device 'gpu' or 'auto'")
    gpu = bool(gpu_devices())
    if (name.lower() == "gpu" or gpu_layers) and not gpu:
        raise ConfigError(gpu_absent())
    if name.lower() in DEVICES:
        name = name.lower()
        layers = -1 if (name == "gpu" or (name == "auto" and gpu)) else 0
        if gpu_layers is not None:  # (with 'cpu' only 0 gets here)
            layers = gpu_layers
        n = threads or threads_for(available_cpus(), None)
        return DeviceConfig(name, n, n, layers, adaptive_threads=threads is None)

    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import get

    profile = get(name)
    if model_path is None:
        raise ConfigError("a device profile needs the model to plan for")
    p = planning.require_fit(
        planning.plan(
            model_path,
            profile,
            n_ctx=n_ctx,
            kv_type=kv_type,
            n_batch=n_batch,
            overhead=planning.process_rss() + 20_000_000,  # what this process holds, for real
        )
    )
    c = p.config
    adaptive = threads is None and profile.name == "host"
    n = threads or min(c.threads, available_cpus())
    layers = (c.n_gpu_layers if gpu_layers is None else gpu_layers) if gpu else 0
    return DeviceConfig(
        profile.name,
        n,
        n,
        layers,
        adaptive_threads=adaptive,
        n_ctx=c.n_ctx,
        kv_type=c.kv_type,
        n_batch=c.n_batch,
        use_mlock=c.use_mlock,
        plan=p,
    )


def gpu_absent() -> str:
    """Why there is no GPU to offload to, and what to do: one line."""
    from edge_llm.llama.binding import gpu_backends

    backends = gpu_backends()
    if not backends:
        return (
            "this llama-cpp-python build has no GPU backend; use device 'cpu', or rebuild with one "
            "(make install VULKAN=1, or LLAMA_CMAKE_ARGS=-DGGML_CUDA=ON: docs/gpu.md)"
        )
    return (
        f"the {', '.join(backends)} backend found no GPU device; use device 'cpu' (a software "
        "Vulkan device such as lavapipe is used only when GGML_VK_VISIBLE_DEVICES names it)"
    )
