"""Readers of a board's field conditions: nvpmodel's power mode, cpufreq and devfreq
frequency caps, thermal zones with their trip points, and batteries.

Machinery: these read files under an injectable root (`<root>/sys/...`, `<root>/etc/...`)
and never raise for what they find. Each returns what it could read and *notes*: one line
per input it had to turn off (missing, unreadable, or a value that makes no sense), for
status. Blocking but cheap (a few small sysfs reads), except `run_nvpmodel_query` (a
subprocess, only where the profile asks for it). Units are in the names: kHz for cpufreq,
Hz for devfreq, degrees C, Wh, W, percent.
"""

from __future__ import annotations

import contextlib
import errno
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

Notes = tuple[str, ...]

# devfreq device names that are a GPU, when the profile names none (Jetson Orin: ga10b,
# Xavier: gv11b, TX2: gp10b, Nano/TX1: gk20a or "57000000.gpu"; others say "gpu").
GPU_DEVFREQ_HINTS = ("gpu", "ga10b", "gv11b", "gp10b", "gk20a")
# Plausible bounds: values outside are sensors or drivers reporting junk.
_MAX_CPU_KHZ = 100_000_000       # 100 GHz
_MAX_DEVFREQ_HZ = 100_000_000_000
_TEMP_MIN_C, _TEMP_MAX_C = -50.0, 200.0
NVPMODEL_QUERY_TIMEOUT_S = 2.0


def _text(path: Path) -> str:
    return path.read_text(errors="replace").strip()


def _int(path: Path) -> int:
    return int(_text(path))


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:  # pragma: no cover - paths are built under root
        return str(path)


# -- nvpmodel (Jetson power modes) -----------------------------------------------------------

@dataclass(frozen=True)
class NvpModel:
    """The Jetson power mode nvpmodel set."""

    mode_id: int | None     # None: only the name is known (from `nvpmodel -q` without an id)
    name: str               # "15W", "MAXN_SUPER"; "mode 3" when the table has no name for it
    source: str             # "status file" | "nvpmodel -q"


def parse_nvpmodel_status(text: str) -> int | None:
    """The mode id in nvpmodel's status file ("pmode:0002 fmode:quiet"), or None."""
    m = re.search(r"pmode:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def parse_nvpmodel_conf(text: str) -> tuple[dict[int, str], int | None]:
    """({mode id: name}, default id) from an nvpmodel.conf ("< POWER_MODEL ID=0 NAME=15W >",
    "< PM_CONFIG DEFAULT=2 >")."""
    names: dict[int, str] = {}
    default = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        m = re.match(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", line)
        if m:
            names[int(m.group(1))] = m.group(2)
        m = re.match(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", line)
        if m:
            default = int(m.group(1))
    return names, default


def parse_nvpmodel_query(text: str) -> tuple[str, int | None] | None:
    """(name, id) from `nvpmodel -q` output ("NV Fan Mode:quiet", "NV Power Mode: 15W",
    "0"), or None when it names no mode."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            name = line.split(":", 1)[1].strip()
            if not name:
                return None
            mode_id = int(lines[i + 1]) if i + 1 < len(lines) and lines[i + 1].isdigit() \
                else None
            return name, mode_id
    return None


def run_nvpmodel_query() -> str | None:
    """`nvpmodel -q`'s output, or None where it cannot run. Blocking (a subprocess)."""
    try:
        r = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True,
                           timeout=NVPMODEL_QUERY_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def read_nvpmodel(root: Path, status_rel: str, conf_rel: str,
                  query: Callable[[], str | None] | None = None) -> tuple[NvpModel | None, Notes]:
    """The current power mode from nvpmodel's status file and mode table, else from
    `query` (recorded or live `nvpmodel -q` output)."""
    status_path, conf_path = root / status_rel, root / conf_rel
    names: dict[int, str] = {}
    with contextlib.suppress(OSError):  # without the table, modes go by their ids
        names, _ = parse_nvpmodel_conf(conf_path.read_text(errors="replace"))
    problem = None
    try:
        mode_id = parse_nvpmodel_status(status_path.read_text(errors="replace"))
        if mode_id is not None:
            return NvpModel(mode_id, names.get(mode_id, f"mode {mode_id}"), "status file"), ()
        problem = f"{status_rel} names no mode (expected 'pmode:NNNN')"
    except FileNotFoundError:
        problem = None if query is not None else f"no {status_rel} (not a Jetson)"
    except OSError as e:
        problem = f"{status_rel} unreadable ({e.strerror or e})"
    if query is not None:
        text = query()
        parsed = parse_nvpmodel_query(text) if text else None
        if parsed is not None:
            name, mode_id = parsed
            return NvpModel(mode_id, name, "nvpmodel -q"), ()
        problem = (problem + "; " if problem else "") + "`nvpmodel -q` gave no mode"
    return None, (f"nvpmodel: {problem}: no power mode name (frequency caps still count)",)


# -- cpufreq and devfreq caps ------------------------------------------------------------

@dataclass(frozen=True)
class CpuPolicy:
    """One cpufreq policy (a cluster of CPUs sharing a clock)."""

    name: str              # "policy0"
    online_cpus: int       # CPUs of the policy that are online (0: the cluster is off)
    max_khz: int           # scaling_max_freq: the cap in force
    hw_max_khz: int        # cpuinfo_max_freq: what the hardware can do


def _cpu_count(text: str) -> int:
    return len(text.split())


def read_cpufreq(root: Path) -> tuple[tuple[CpuPolicy, ...], Notes]:
    """Every cpufreq policy's cap. Any unreadable or nonsense value turns the CPU caps off
    as a whole (a partial sum would be a wrong capacity)."""
    base = root / "sys" / "devices" / "system" / "cpu" / "cpufreq"
    dirs = sorted(base.glob("policy*")) if base.is_dir() else []
    if not dirs:
        return (), (f"cpufreq: no {_rel(root, base)}/policy*: CPU frequency caps off",)
    out = []
    for d in dirs:
        try:
            cpus_text = _text(d / "affected_cpus")
            if not cpus_text:  # every CPU of the policy is offline
                out.append(CpuPolicy(d.name, 0, 0, 0))
                continue
            max_khz, hw_khz = _int(d / "scaling_max_freq"), _int(d / "cpuinfo_max_freq")
        except OSError as e:
            if e.errno == errno.EBUSY:  # an inactive policy: its CPUs are offline
                out.append(CpuPolicy(d.name, 0, 0, 0))
                continue
            return (), (f"cpufreq: {_rel(root, d)} unreadable ({e.strerror or e}): CPU "
                        "frequency caps off",)
        except ValueError as e:
            return (), (f"cpufreq: {_rel(root, d)}: not a number ({e}): CPU frequency caps "
                        "off",)
        if not (0 < max_khz <= _MAX_CPU_KHZ and 0 < hw_khz <= _MAX_CPU_KHZ) \
                or max_khz > hw_khz:
            return (), (f"cpufreq: {_rel(root, d)}: implausible caps (scaling_max_freq "
                        f"{max_khz}, cpuinfo_max_freq {hw_khz} kHz): CPU frequency caps off",)
        out.append(CpuPolicy(d.name, _cpu_count(cpus_text), max_khz, hw_khz))
    if not any(p.online_cpus for p in out):
        return (), ("cpufreq: no policy has an online CPU: CPU frequency caps off",)
    return tuple(out), ()


@dataclass(frozen=True)
class Devfreq:
    """One devfreq device (a GPU, a memory controller) and its cap."""

    name: str              # "17000000.ga10b"
    max_hz: int            # max_freq: the cap in force
    hw_max_hz: int | None  # the highest of available_frequencies; None where not listed


def is_gpu_devfreq(name: str) -> bool:
    low = name.lower()
    return any(h in low for h in GPU_DEVFREQ_HINTS)


def read_devfreq(root: Path, names: Sequence[str] = ()) -> tuple[tuple[Devfreq, ...], Notes]:
    """The caps of the devfreq devices `names` (empty: those named like a GPU). A device
    that reads nonsense is left out, with a note."""
    base = root / "sys" / "class" / "devfreq"
    present = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    wanted = [n for n in present if n in names] if names else \
        [n for n in present if is_gpu_devfreq(n)]
    notes = [f"devfreq: no {_rel(root, base)}/{n}: its cap is off"
             for n in names if n not in present]
    if not wanted and not names:
        notes.append(f"devfreq: no GPU under {_rel(root, base)}: GPU frequency cap off")
    out = []
    for n in wanted:
        d = base / n
        try:
            max_hz = _int(d / "max_freq")
        except (OSError, ValueError) as e:
            notes.append(f"devfreq: {n}/max_freq unreadable ({e}): its cap is off")
            continue
        hw: int | None = None
        try:
            freqs = [int(x) for x in _text(d / "available_frequencies").split()]
            hw = max(freqs) if freqs else None
        except (OSError, ValueError):
            hw = None
        if not 0 < max_hz <= _MAX_DEVFREQ_HZ or (hw is not None and max_hz > hw * 1.001):
            notes.append(f"devfreq: {n}: implausible max_freq {max_hz} Hz: its cap is off")
            continue
        out.append(Devfreq(n, max_hz, hw))
    return tuple(out), tuple(notes)


# -- thermal zones --------------------------------------------------------------------------

@dataclass(frozen=True)
class TripPoint:
    temp_c: float
    kind: str              # "active" | "passive" | "hot" | "critical"


@dataclass(frozen=True)
class ThermalZone:
    name: str              # its type, e.g. "cpu-thermal"
    temp_c: float
    trips: tuple[TripPoint, ...]


def _plausible_c(milli: int) -> bool:
    return _TEMP_MIN_C < milli / 1000.0 < _TEMP_MAX_C


def read_thermal(root: Path) -> tuple[tuple[ThermalZone, ...], Notes]:
    """Thermal zones with a plausible temperature, each with its plausible trip points
    (disabled trips read as huge or negative values and are left out)."""
    base = root / "sys" / "class" / "thermal"
    zones = sorted(base.glob("thermal_zone*"), key=lambda p: (len(p.name), p.name)) \
        if base.is_dir() else []
    if not zones:
        return (), (f"thermal: no {_rel(root, base)}/thermal_zone*: thermal input off",)
    out, notes = [], []
    for z in zones:
        try:
            kind = _text(z / "type") or z.name
        except OSError:
            kind = z.name
        try:
            milli = _int(z / "temp")
        except (OSError, ValueError) as e:
            notes.append(f"thermal: {z.name} ({kind}) temp unreadable ({e}): zone ignored")
            continue
        if not _plausible_c(milli):
            notes.append(f"thermal: {z.name} ({kind}) reads {milli / 1000:g} C: zone ignored")
            continue
        trips = []
        for tp in sorted(z.glob("trip_point_*_temp")):
            stem = tp.name[: -len("_temp")]
            try:
                t_milli = _int(tp)
                t_kind = _text(z / f"{stem}_type")
            except (OSError, ValueError):
                continue
            if _plausible_c(t_milli) and t_milli > 0:
                trips.append(TripPoint(t_milli / 1000.0, t_kind))
        out.append(ThermalZone(kind, milli / 1000.0, tuple(trips)))
    if not out:
        notes.append("thermal: no zone reads a plausible temperature: thermal input off")
    return tuple(out), tuple(notes)


# -- batteries ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Battery:
    name: str
    status: str                    # "Discharging", "Charging", "Full", "Not charging", ...
    capacity_percent: float | None
    energy_wh: float | None        # what it holds now
    energy_full_wh: float | None
    power_w: float | None          # power_now (positive either way), where reported

    @property
    def discharging(self) -> bool:
        return self.status.strip().lower() == "discharging"


def _opt_int(path: Path) -> int | None:
    try:
        return _int(path)
    except (OSError, ValueError):
        return None


def read_battery(root: Path, name: str = "", capacity_wh: float = 0.0,
                 ) -> tuple[Battery | None, Notes]:
    """The battery `name` (empty: the first of type Battery) from
    `<root>/sys/class/power_supply`, or None (plugged-in behaviour). Energy comes from
    energy_now, else charge_now x voltage_now, else capacity (%) x the full energy
    (energy_full, charge_full x voltage, or `capacity_wh`)."""
    base = root / "sys" / "class" / "power_supply"
    found = None
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if name and d.name != name:
            continue
        try:
            if _text(d / "type") != "Battery":
                continue
        except OSError:
            continue
        if _opt_int(d / "present") == 0:
            continue
        found = d
        break
    if found is None:
        what = f"battery {name!r}" if name else "no battery"
        return None, (f"battery: {what} under {_rel(root, base)}: plugged-in behaviour",)
    bat: Path = found
    notes = []
    try:
        status = _text(bat / "status")
    except OSError:
        status = "Unknown"
        notes.append(f"battery: {found.name}/status unreadable: treated as on external power")
    cap = _opt_int(found / "capacity")
    if cap is not None and not 0 <= cap <= 100:
        notes.append(f"battery: {found.name}/capacity reads {cap}%: ignored")
        cap = None
    volts = _opt_int(found / "voltage_now") or _opt_int(found / "voltage_min_design")

    def wh(energy: str, charge: str) -> float | None:
        e = _opt_int(bat / energy)
        if e is not None:
            return e / 1e6 if e >= 0 else None              # uWh
        c = _opt_int(bat / charge)
        if c is not None and volts:
            return c * volts / 1e12 if c >= 0 else None     # uAh x uV
        return None

    now_wh, full_wh = wh("energy_now", "charge_now"), wh("energy_full", "charge_full")
    if full_wh is not None and full_wh <= 0:
        full_wh = None
    if full_wh is None and capacity_wh > 0:
        full_wh = capacity_wh
    if now_wh is None and cap is not None and full_wh is not None:
        now_wh = full_wh * cap / 100.0
    if now_wh is None:
        notes.append(f"battery: {found.name} reports no energy (energy_now, charge_now x "
                     "voltage, or capacity with a known full capacity): plugged-in behaviour")
    if now_wh is not None and full_wh is not None and now_wh > full_wh * 1.5:
        notes.append(f"battery: {found.name} holds {now_wh:.1f} Wh of {full_wh:.1f}: "
                     "nonsense, plugged-in behaviour")
        now_wh = None
    if cap is None and now_wh is not None and full_wh:
        cap = round(100.0 * now_wh / full_wh)
    power_uw = _opt_int(found / "power_now")
    return Battery(found.name, status, None if cap is None else float(cap), now_wh, full_wh,
                   abs(power_uw) / 1e6 if power_uw is not None else None), tuple(notes)
