"""Where llama.cpp put a model: which layers run on which device, and the buffers it allocated.

llama.cpp has no API that answers this; it says it in its log while it loads a model and opens a
context (``offloaded 16/31 layers to GPU``, ``Vulkan0 model buffer size = 52.10 MiB``, ``Vulkan0
KV buffer size``, ``Vulkan0 compute buffer size``). `binding.capture_log` collects those lines and
`parse` reads them into a `Placement`: what `edge-llm info --system MODEL` shows and what `plan`'s
predicted device memory is checked against.

llama.cpp's layer order: the input (token embeddings) always stays on the CPU; with ``N`` layers
offloaded, the output layer goes first, then the last ``N - 1`` repeating layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIB = 1024 * 1024
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_BUFFER = re.compile(
    r"^\S+:\s+(\S+)\s+(model|KV|compute|output|LoRA|RS) buffer size =\s+([\d.]+) MiB"
)


@dataclass(frozen=True)
class Placement:
    """One loaded model's layers and buffers, as llama.cpp reported them."""

    n_layer: int  # repeating layers; llama.cpp counts the output layer as one more
    offloaded: int  # layers on the GPU device, the output layer included (0: all on the CPU)
    device: str | None  # the device that holds them ("Vulkan0"), None when none are offloaded
    # buffer name ("CPU_Mapped", "Vulkan0", "Vulkan_Host"...) -> kind ("model", "KV",
    # "compute", "output") -> bytes (llama.cpp prints MiB with two decimals)
    buffers: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def first_offloaded(self) -> int:
        """The first repeating layer on the device (``n_layer``: only the output layer, if any)."""
        return self.n_layer + 1 - self.offloaded if self.offloaded else self.n_layer + 1

    def device_bytes(self, kinds: tuple[str, ...] = ("model", "KV", "compute")) -> int:
        """What the device itself holds: its own buffers (not the host-visible staging ones)."""
        if self.device is None:
            return 0
        own = self.buffers.get(self.device, {})
        return sum(v for k, v in own.items() if k in kinds)

    def describe(self) -> str:
        """One line: which layers run where."""
        last = self.n_layer - 1
        if not self.offloaded:
            return f"all {self.n_layer} layers and the output on the CPU"
        first = self.first_offloaded
        on_cpu = "the input" + (f" and layers 0-{first - 1}" if first > 0 else "")
        on_dev = "the output" if first > last else f"layers {first}-{last} and the output"
        return f"{on_cpu} on the CPU; {on_dev} on {self.device}"

    def to_dict(self) -> dict:
        return {
            "n_layer": self.n_layer,
            "offloaded": self.offloaded,
            "device": self.device,
            "first_offloaded_layer": self.first_offloaded if self.offloaded else None,
            "buffers": self.buffers,
            "device_bytes": self.device_bytes(),
            "summary": self.describe(),
        }


def parse(lines: list[str], n_layer: int, gpu_names: list[str]) -> Placement:
    """The placement llama.cpp logged (``lines`` from `binding.capture_log`); ``gpu_names``: the
    offloading devices there are (the first one that got a buffer holds the layers)."""
    offloaded = 0
    buffers: dict[str, dict[str, int]] = {}
    for line in lines:
        if m := _OFFLOADED.search(line):
            offloaded = int(m.group(1))
        elif m := _BUFFER.search(line.strip()):
            name, kind, size = m.group(1), m.group(2), float(m.group(3))
            kinds = buffers.setdefault(name, {})
            kinds[kind] = kinds.get(kind, 0) + round(size * MIB)  # two KV caches: SWA and not
    device = next((g for g in gpu_names if g in buffers), None) if offloaded else None
    return Placement(n_layer, offloaded if device else 0, device, buffers)
