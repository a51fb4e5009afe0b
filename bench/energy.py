"""Energy where the device tells it: the meters Linux and Android expose in sysfs.

Joules per token is only worth printing when it was measured; a number computed from a profile's
nominal watts is a projection, labelled so elsewhere (bench.runner.project) and never put in the
measured columns. The meters, in the order they are tried (the first that reads wins):

    powercap   /sys/class/powercap/*/energy_uj: RAPL packages and DRAM on x86 (Rapl),
               and any other powercap zone with an energy counter
    hwmon      /sys/class/hwmon/hwmon*/energy*_input: energy counters in microjoules
               (some SoC and ACPI power meters), read at the start and end of a window
    hwmon      /sys/class/hwmon/hwmon*/power*_input: power in microwatts, sampled while decoding
    battery    /sys/class/power_supply/*/ (type Battery, status Discharging): power_now, or
               current_now x voltage_now (microamps x microvolts), sampled while decoding:
               what a phone or tablet on battery can say

A sampled meter integrates its samples (trapezoids, every ``interval`` seconds on a thread) into a
running joule count, so it reads like a counter. Every meter counts the whole device (a battery)
or package: other work during the window is counted too. None readable: "unavailable", with the
reason naming what was looked for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys")
INTERVAL = 0.05


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_str(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class _Zone:
    path: Path
    max_uj: int


class Rapl:
    """Energy counters of RAPL zones (``intel-rapl:N`` packages and their DRAM subzones).

    ``available`` is False (with ``reason``) where the machine has no powercap RAPL or its
    counters cannot be read (virtual machines, containers, non-root on recent kernels). The
    counters cover the whole package: other processes' work during a window is counted too.
    """

    def __init__(self, root: Path | str = SYSFS / "class" / "powercap"):
        self.root = Path(root)
        self.zones: list[_Zone] = []
        self.reason = ""
        tops = sorted(self.root.glob("intel-rapl:*")) if self.root.is_dir() else []
        tops = [z for z in tops if z.name.count(":") == 1]
        if not tops:
            self.reason = f"no RAPL energy counters under {self.root} on this machine"
            return
        zones = []
        for top in tops:
            if _read_str(top / "name").startswith("psys"):
                continue  # platform domain: it contains the packages
            zones.append(top)
            # Subzones sit inside their package's folder and (as links) beside it; DRAM is not
            # part of the package count, core and uncore are.
            subs = {
                s.name: s for s in [*top.glob(f"{top.name}:*"), *self.root.glob(f"{top.name}:*")]
            }
            zones += [subs[n] for n in sorted(subs) if _read_str(subs[n] / "name") == "dram"]
        for z in zones:
            try:
                int((z / "energy_uj").read_text())
                max_uj = int((z / "max_energy_range_uj").read_text())
            except PermissionError:
                self.zones = []
                self.reason = f"RAPL counters under {self.root} are not readable by this user"
                return
            except (OSError, ValueError):
                continue
            self.zones.append(_Zone(z, max_uj))
        if not self.zones:
            self.reason = f"RAPL zones under {self.root} expose no readable energy counter"

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def read(self) -> list[int]:
        return [int((z.path / "energy_uj").read_text()) for z in self.zones]

    def joules(self, start: list[int], end: list[int]) -> float:
        """Energy between two readings, each counter's wrap-around undone."""
        total = 0
        for z, a, b in zip(self.zones, start, end):
            total += b - a if b >= a else b + z.max_uj - a
        return total / 1e6


class Counters:
    """Energy counters in microjoules (hwmon energy*_input; they do not wrap in practice)."""

    def __init__(self, files: list[Path], source: str):
        self.files, self.source, self.reason = files, source, ""
        self.zones = [type("Zone", (), {"path": f})() for f in files]

    available = property(lambda self: bool(self.files))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read(self) -> list[int]:
        return [_read_int(f) or 0 for f in self.files]

    def joules(self, start: list[int], end: list[int]) -> float:
        return sum(b - a for a, b in zip(start, end)) / 1e6


class Sampled:
    """A power reading (watts, from ``watts()``) sampled on a thread and integrated into joules."""

    def __init__(self, watts, files: list[Path], source: str, interval: float = INTERVAL):
        self.watts, self.files, self.source, self.interval, self.reason = (
            watts,
            files,
            source,
            interval,
            "",
        )
        self.zones = [type("Zone", (), {"path": f})() for f in files]
        self._joules = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, float] | None = None

    available = property(lambda self: True)

    def _sample(self) -> None:
        t, w = time.perf_counter(), self.watts()
        with self._lock:
            if self._last is not None and w is not None and self._last[1] is not None:
                self._joules += (t - self._last[0]) * (w + self._last[1]) / 2
            self._last = (t, w)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        if self._thread is None:
            self._sample()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True, name="energy-sampler")
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def read(self) -> list[float]:
        self._sample()  # the window's edge is a sample too
        with self._lock:
            return [self._joules * 1e6]

    def joules(self, start: list[float], end: list[float]) -> float:
        return (end[0] - start[0]) / 1e6


class Unavailable:
    def __init__(self, reason: str):
        self.reason, self.zones, self.source = reason, [], None

    available = property(lambda self: False)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _batteries(root: Path) -> list[Path]:
    ps = root / "class" / "power_supply"
    out = []
    for d in sorted(ps.glob("*")) if ps.is_dir() else []:
        if _read_str(d / "type") == "Battery":
            out.append(d)
    return out


def _battery_watts(d: Path):
    def watts() -> float | None:
        if _read_str(d / "status") != "Discharging":
            return None
        p = _read_int(d / "power_now")
        if p is not None:
            return abs(p) / 1e6
        i, v = _read_int(d / "current_now"), _read_int(d / "voltage_now")
        if i is None or v is None:
            return None
        return abs(i) * v / 1e12  # µA x µV

    return watts


def detect(root: Path | str = SYSFS, interval: float = INTERVAL):
    """The first readable meter under ``root`` (a sysfs tree), or Unavailable with the reason."""
    root = Path(root)
    rapl = Rapl(root / "class" / "powercap")
    if rapl.available:
        rapl.source = "rapl"
        rapl.start = rapl.stop = lambda: None
        return rapl
    pc = root / "class" / "powercap"
    other = [
        z / "energy_uj"
        for z in sorted(pc.glob("*"))
        if pc.is_dir() and not z.name.startswith("intel-rapl")
    ]
    other = [f for f in other if _read_int(f) is not None]
    if other:
        return Counters(other, "powercap")
    hw = root / "class" / "hwmon"
    mons = sorted(hw.glob("hwmon*")) if hw.is_dir() else []
    energy = [f for m in mons for f in sorted(m.glob("energy*_input")) if _read_int(f) is not None]
    if energy:
        return Counters(energy, "hwmon energy")
    power = [f for m in mons for f in sorted(m.glob("power*_input")) if _read_int(f) is not None]
    if power:
        return Sampled(
            lambda: sum(_read_int(f) or 0 for f in power) / 1e6,
            power,
            "hwmon power (sampled)",
            interval,
        )
    for d in _batteries(root):
        w = _battery_watts(d)
        if _read_str(d / "status") != "Discharging":
            return Unavailable(
                f"the battery {d.name} is {(_read_str(d / 'status') or 'in an unknown state').lower()}, "
                "not discharging: its power draw includes the charger; unplug it to measure"
            )
        if w() is not None:
            return Sampled(w, [d], "battery (sampled)", interval)
    return Unavailable(
        f"no energy meter on this machine (no RAPL or powercap counter, no hwmon energy or "
        f"power input, no discharging battery under {root})"
    )
