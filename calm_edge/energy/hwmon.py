"""INA3221 / INA238 (and other ina2xx) power monitors read directly from hwmon sysfs.

This is what jtop reads on a Jetson, without needing its service. Layout (Linux hwmon ABI):
`<hwmon>/name` is the chip ("ina3221", "ina238", ...); channel N has `in{N}_label`
(the rail name, e.g. VDD_IN), `in{N}_input` (bus voltage, mV), `curr{N}_input` (mA) and,
on chips that compute it (ina2xx, ina238), `power{N}_input` (µW). Power per rail in mW is
`power{N}_input / 1000` when that file exists, else `in{N}_input × curr{N}_input / 1000`.

Channels are found under `<root>/sys/class/hwmon/hwmon*` and the Jetson I2C path
`<root>/sys/bus/i2c/drivers/*/*/hwmon/hwmon*` (the same device seen twice is counted
once). A channel without a label, or labelled "NC" (not connected, AGX Orin's second
INA3221), is skipped. Single-channel chips (ina238, ina2xx) often have no `in1_label`: they
take the hwmon `label` file, else "<chip>@<device>" (e.g. "ina238@1-0045").

The sum-of-shunts channel of the INA3221 (in7) has no `curr7_input` and is skipped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from calm_edge.energy.base import (
    MAX_RAIL_CURRENT_MA,
    MAX_RAIL_VOLTAGE_MV,
    PowerSample,
    ReaderUnavailable,
    SysfsValue,
    WarnOnce,
    check_power_mw,
    choose_rails,
    form_total_mw,
    log,
    parse_number,
    read_text_file,
    unique_name,
)

# Chips whose hwmon attributes follow the in/curr/power layout above.
SUPPORTED_CHIPS = ("ina3221", "ina238", "ina237", "ina226", "ina230", "ina231", "ina219",
                   "ina209", "ina260")
_CHANNEL_RE = re.compile(r"^(?:in|curr|power)(\d+)_input$")


@dataclass(frozen=True)
class HwmonChannel:
    """One measured rail: where its files are. Discovery output; no open files."""

    rail: str
    chip: str
    hwmon_dir: Path
    index: int
    has_power_file: bool


def _hwmon_dirs(sysfs_root: Path) -> list[Path]:
    patterns = ("sys/class/hwmon/hwmon*", "sys/bus/i2c/drivers/*/*/hwmon/hwmon*")
    seen: set[Path] = set()
    out: list[Path] = []
    for pattern in patterns:
        for d in sorted(sysfs_root.glob(pattern)):
            try:
                real = d.resolve()
            except OSError:
                continue
            if real in seen or not d.is_dir():
                continue
            seen.add(real)
            out.append(d)
    return out


def _device_name(hwmon_dir: Path) -> str:
    """The I2C device (e.g. '1-0045') a hwmon directory belongs to, for fallback labels."""
    dev = hwmon_dir / "device"
    try:
        if dev.exists():
            return dev.resolve().name
    except OSError:
        pass
    if hwmon_dir.parent.name == "hwmon" and hwmon_dir.parent.parent.name != "class":
        # .../drivers/<driver>/<device>/hwmon/hwmonN
        return hwmon_dir.parent.parent.name
    return hwmon_dir.name


def discover_channels(sysfs_root: Path = Path("/")) -> tuple[list[HwmonChannel], list[str]]:
    """(channels, notes) for every supported power monitor under `sysfs_root`.

    Blocking (reads a few small sysfs files); call once at start-up. Deterministic order:
    hwmon directory, then channel index.
    """
    channels: list[HwmonChannel] = []
    notes: list[str] = []
    for d in _hwmon_dirs(sysfs_root):
        chip = read_text_file(d / "name")
        if chip not in SUPPORTED_CHIPS:
            continue
        indices: set[int] = set()
        try:
            for entry in d.iterdir():
                m = _CHANNEL_RE.match(entry.name)
                if m:
                    indices.add(int(m.group(1)))
        except OSError as e:
            notes.append(f"hwmon: cannot list {d}: {e.strerror}")
            continue
        if chip == "ina3221":  # channels 1-3; in4-7/curr4 are shunt and summation values
            indices &= {1, 2, 3}
        measured = sorted(i for i in indices
                          if (d / f"power{i}_input").exists()
                          or ((d / f"in{i}_input").exists() and (d / f"curr{i}_input").exists()))
        for i in measured:
            label = read_text_file(d / f"in{i}_label")
            if label is None and len(measured) == 1:
                label = read_text_file(d / "label") or f"{chip}@{_device_name(d)}"
            if not label:
                notes.append(f"hwmon: {d.name} ({chip}) channel {i} has no label; skipped")
                continue
            if label.upper() == "NC":
                continue
            name = unique_name(label, (c.rail for c in channels))
            channels.append(HwmonChannel(name, chip, d, i, (d / f"power{i}_input").exists()))
    return channels, notes


class _ChannelFiles:
    __slots__ = ("channel", "curr", "power", "volt")

    def __init__(self, ch: HwmonChannel) -> None:
        self.channel = ch
        d, i = ch.hwmon_dir, ch.index
        self.power = SysfsValue(d / f"power{i}_input") if ch.has_power_file else None
        self.volt = None if self.power else SysfsValue(d / f"in{i}_input")
        self.curr = None if self.power else SysfsValue(d / f"curr{i}_input")

    def close(self) -> None:
        for f in (self.power, self.volt, self.curr):
            if f is not None:
                f.close()


class HwmonReader:
    """Rail power from INA3221/INA238 hwmon files. Measured. One thread at a time.

    `rails` / `total_rail` come from the profile: empty `rails` reports every channel found;
    the total is `total_rail`'s reading (e.g. VDD_IN, the module input), else the sum of the
    reported rails (AGX Orin has no single input rail).
    """

    source = "hwmon"
    measured = True

    def __init__(self, *, sysfs_root: Path = Path("/"), rails: Sequence[str] = (),
                 total_rail: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        channels, notes = discover_channels(sysfs_root)
        if not channels:
            raise ReaderUnavailable(
                f"no INA3221/INA238 hwmon channels under {sysfs_root / 'sys/class/hwmon'} "
                f"or {sysfs_root / 'sys/bus/i2c/drivers'}")
        by_name = {c.rail: c for c in channels}
        chosen, self._total_rail, more = choose_rails(list(by_name), rails, total_rail, "hwmon")
        self.rails: tuple[str, ...] = chosen
        self.notes: list[str] = notes + more
        self.selection_notes: tuple[str, ...] = tuple(self.notes)
        read_names = list(chosen)
        if self._total_rail and self._total_rail not in read_names:
            read_names.append(self._total_rail)
        self._files = [_ChannelFiles(by_name[n]) for n in read_names]
        self._clock = clock
        self._warn = WarnOnce("hwmon")
        desc = ", ".join(f"{c.rail}={c.chip}:{c.hwmon_dir.name}/ch{c.index}"
                         for c in (by_name[n] for n in read_names))
        log.info("hwmon power rails: %s; total: %s", desc, self._total_rail or "sum")

    def _rail_mw(self, f: _ChannelFiles) -> float | None:
        rail = f.channel.rail
        try:
            if f.power is not None:
                power_mw = parse_number(f.power.read_text()) / 1000.0
            else:
                assert f.volt is not None and f.curr is not None
                volt_mv = parse_number(f.volt.read_text())
                curr_ma = parse_number(f.curr.read_text())
                if volt_mv < 0 or curr_ma < 0:
                    self._warn(rail, "negative reading", f"{volt_mv:g} mV, {curr_ma:g} mA")
                    return None
                if volt_mv > MAX_RAIL_VOLTAGE_MV or curr_ma > MAX_RAIL_CURRENT_MA:
                    self._warn(rail, "implausible reading", f"{volt_mv:g} mV, {curr_ma:g} mA")
                    return None
                power_mw = volt_mv * curr_ma / 1000.0
        except OSError as e:
            self._warn(rail, "unreadable", e.strerror or str(e))
            return None
        except ValueError as e:
            self._warn(rail, "not a number", str(e))
            return None
        problem = check_power_mw(power_mw)
        if problem:
            self._warn(rail, problem, f"{power_mw:g} mW")
            return None
        return power_mw

    def read(self) -> PowerSample:
        """Blocking (2 preads per rail, or 1 with a power file). Raises PowerReadError
        when the total cannot be formed."""
        t_s = self._clock()
        values: dict[str, float] = {}
        for f in self._files:
            p = self._rail_mw(f)
            if p is not None:
                values[f.channel.rail] = p
        total_mw = form_total_mw(values, self._total_rail, self.rails)
        rails_mw = {r: values[r] for r in self.rails if r in values}
        return PowerSample(t_s, total_mw, rails_mw)

    def close(self) -> None:
        for f in self._files:
            f.close()
