"""bench.energy on fake sysfs trees: which meter is found, and the joules it gives."""

from __future__ import annotations

import time

import pytest

from bench import energy


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def test_nothing_readable_is_unavailable_with_a_reason(tmp_path):
    m = energy.detect(tmp_path)
    assert not m.available and "no energy meter" in m.reason


def test_rapl_comes_first(tmp_path):
    z = tmp_path / "class/powercap/intel-rapl:0"
    write(z / "name", "package-0")
    write(z / "energy_uj", 100)
    write(z / "max_energy_range_uj", 10**9)
    write(tmp_path / "class/hwmon/hwmon0/power1_input", 5_000_000)
    m = energy.detect(tmp_path)
    assert m.available and m.source == "rapl"


def test_hwmon_energy_counters_are_differenced(tmp_path):
    f = tmp_path / "class/hwmon/hwmon1/energy1_input"
    write(f, 2_000_000)
    write(tmp_path / "class/hwmon/hwmon1/energy2_input", 0)
    m = energy.detect(tmp_path)
    assert m.source == "hwmon energy"
    a = m.read()
    write(f, 3_500_000)  # +1.5 J
    assert m.joules(a, m.read()) == pytest.approx(1.5)


def test_hwmon_power_is_sampled_and_integrated(tmp_path):
    write(tmp_path / "class/hwmon/hwmon0/power1_input", 2_000_000)  # 2 W
    m = energy.detect(tmp_path, interval=0.01)
    assert m.source == "hwmon power (sampled)"
    m.start()
    a = m.read()
    t0 = time.perf_counter()
    time.sleep(0.3)
    b = m.read()
    dt = time.perf_counter() - t0
    m.stop()
    assert m.joules(a, b) == pytest.approx(2.0 * dt, rel=0.1)


def battery(tmp_path, status, **files):
    d = tmp_path / "class/power_supply/BAT0"
    write(d / "type", "Battery")
    write(d / "status", status)
    for k, v in files.items():
        write(d / k, v)
    write(tmp_path / "class/power_supply/AC/type", "Mains")
    return d


def test_a_discharging_battery_gives_current_times_voltage(tmp_path):
    battery(
        tmp_path, "Discharging", current_now=500_000, voltage_now=4_000_000
    )  # 0.5 A x 4 V = 2 W
    m = energy.detect(tmp_path, interval=0.01)
    assert m.source == "battery (sampled)" and m.watts() == pytest.approx(2.0)
    m.start()
    a = m.read()
    t0 = time.perf_counter()
    time.sleep(0.2)
    b = m.read()
    dt = time.perf_counter() - t0
    m.stop()
    assert m.joules(a, b) == pytest.approx(2.0 * dt, rel=0.1)


def test_a_charging_battery_is_refused_with_the_reason(tmp_path):
    battery(tmp_path, "Charging", power_now=3_000_000)
    m = energy.detect(tmp_path)
    assert not m.available and "charging" in m.reason and "unplug" in m.reason
