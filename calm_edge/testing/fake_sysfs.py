"""A fake sysfs (and /etc, /var) tree for the field readers (calm_edge.field.sysfs): write
nvpmodel's files, cpufreq policies, devfreq devices, thermal zones and power supplies
under a temporary root, and change them mid-run to simulate a power mode switch, a
throttling board or a draining battery. Values are written in the kernel's units (kHz,
Hz, millidegrees, uWh)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The Orin Nano (Super) mode table as nvpmodel.conf names it.
ORIN_NANO_MODES = {0: "15W", 1: "25W", 2: "MAXN_SUPER", 3: "7W"}


@dataclass(frozen=True)
class Policy:
    cpus: Sequence[int]      # the policy's CPUs that are online (empty: all offline)
    max_khz: int
    hw_max_khz: int


# Orin Nano-like CPU caps for two of its modes: 25 W, 6 cores at 1.5 GHz; 7 W, 4 cores at
# 1.125 GHz (cores 4-5 off): half the capacity, so a fake fleet running half as fast
# matches the frequency ratio exactly.
ORIN_LIKE_CAPS = {
    "25W": {0: Policy([0, 1, 2, 3], 1_500_000, 1_728_000),
            4: Policy([4, 5], 1_500_000, 1_728_000)},
    "7W": {0: Policy([0, 1, 2, 3], 1_125_000, 1_728_000), 4: Policy([], 0, 0)},
}


@dataclass
class FakeSysfs:
    root: Path

    def power_mode(self, name: str) -> None:
        """Switch the whole tree to an Orin-like power mode ("25W" or "7W"): nvpmodel's
        status and the CPU caps, as `nvpmodel -m` would."""
        ids = {v: k for k, v in ORIN_NANO_MODES.items()}
        self.nvpmodel(ids[name])
        self.cpufreq(ORIN_LIKE_CAPS[name])

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def remove(self, rel: str) -> None:
        path = self.root / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    # -- nvpmodel ------------------------------------------------------------------------

    def nvpmodel(self, mode_id: int, modes: Mapping[int, str] = ORIN_NANO_MODES,
                 default: int = 0) -> None:
        """nvpmodel's status file and mode table."""
        self.write("var/lib/nvpmodel/status", f"pmode:{mode_id:04d} fmode:quiet\n")
        lines = ["# fake nvpmodel.conf"]
        for i, name in modes.items():
            lines += [f"< POWER_MODEL ID={i} NAME={name} >", "CPU_ONLINE CORE_0 1", ""]
        lines.append(f"< PM_CONFIG DEFAULT={default} >")
        self.write("etc/nvpmodel.conf", "\n".join(lines) + "\n")

    # -- caps -----------------------------------------------------------------------------

    def cpufreq(self, policies: Mapping[int, Policy]) -> None:
        """cpufreq policies by their first CPU (policy0, policy4, ...); others removed."""
        self.remove("sys/devices/system/cpu/cpufreq")
        for first, p in policies.items():
            d = f"sys/devices/system/cpu/cpufreq/policy{first}"
            self.write(f"{d}/affected_cpus", " ".join(map(str, p.cpus)) + "\n")
            self.write(f"{d}/scaling_max_freq", f"{p.max_khz}\n")
            self.write(f"{d}/cpuinfo_max_freq", f"{p.hw_max_khz}\n")

    def devfreq(self, name: str, max_hz: int, available_hz: Sequence[int] = ()) -> None:
        d = f"sys/class/devfreq/{name}"
        self.write(f"{d}/max_freq", f"{max_hz}\n")
        if available_hz:
            self.write(f"{d}/available_frequencies", " ".join(map(str, available_hz)) + "\n")

    # -- thermals -------------------------------------------------------------------------

    def thermal_zone(self, index: int, kind: str, temp_c: float,
                     trips: Sequence[tuple[float, str]] = ()) -> None:
        """A zone with its temperature and (temperature C, type) trip points."""
        d = f"sys/class/thermal/thermal_zone{index}"
        self.remove(d)
        self.write(f"{d}/type", kind + "\n")
        self.write(f"{d}/temp", f"{round(temp_c * 1000)}\n")
        for i, (t, k) in enumerate(trips):
            self.write(f"{d}/trip_point_{i}_temp", f"{round(t * 1000)}\n")
            self.write(f"{d}/trip_point_{i}_type", k + "\n")

    def temperature(self, index: int, temp_c: float) -> None:
        self.write(f"sys/class/thermal/thermal_zone{index}/temp", f"{round(temp_c * 1000)}\n")

    # -- power supplies ---------------------------------------------------------------------

    def battery(self, name: str = "BAT0", *, status: str = "Discharging",
                energy_wh: float | None = None, energy_full_wh: float | None = None,
                capacity_percent: float | None = None, power_w: float | None = None) -> None:
        d = f"sys/class/power_supply/{name}"
        self.write(f"{d}/type", "Battery\n")
        self.write(f"{d}/present", "1\n")
        self.write(f"{d}/status", status + "\n")
        for key, value, scale in (("energy_now", energy_wh, 1e6),
                                  ("energy_full", energy_full_wh, 1e6),
                                  ("capacity", capacity_percent, 1.0),
                                  ("power_now", power_w, 1e6)):
            if value is None:
                self.remove(f"{d}/{key}")
            else:
                self.write(f"{d}/{key}", f"{round(value * scale)}\n")

    def mains(self, name: str = "AC", online: bool = True) -> None:
        d = f"sys/class/power_supply/{name}"
        self.write(f"{d}/type", "Mains\n")
        self.write(f"{d}/online", f"{int(online)}\n")

    def remove_battery(self, name: str = "BAT0") -> None:
        self.remove(f"sys/class/power_supply/{name}")
