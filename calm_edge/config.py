"""Typed settings: a device profile (TOML) + `CALM_EDGE_*` environment + CLI flags.

Precedence, highest first: CLI flags, environment, profile file, field defaults.
Every field has a default, a description and bounds; a bad value fails fast with a
`ConfigError` naming the file (or variable), the section and the field.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import logging
import os
import pwd
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calm_edge import paths
from calm_edge.units import parse_size_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Jetson boards)
    import tomli as tomllib

log = logging.getLogger("calm_edge.config")

Mode = Literal["fast", "balanced", "quality", "eco"]
MODES: tuple[Mode, ...] = ("fast", "balanced", "quality", "eco")
PowerSource = Literal["auto", "jtop", "hwmon", "rapl", "estimate"]


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of bounds."""

    def __init__(self, where: str, section: str, key: str, problem: str) -> None:
        self.where, self.section, self.key, self.problem = where, section, key, problem
        loc = (f"[{section}] {key}" if key else f"[{section}]") if section else key
        super().__init__(f"{where}: {loc}: {problem}" if key or section else f"{where}: {problem}")


def _f(default: Any, doc: str, *, ge: float | None = None, le: float | None = None,
       size: bool = False, octal: bool = False) -> Any:
    """A config field: default, description, inclusive bounds, and value syntax."""
    meta = {"doc": doc, "ge": ge, "le": le, "size": size, "octal": octal}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return dataclasses.replace(value)


@dataclass(frozen=True)
class DeviceConfig:
    name: str = _f("generic", "Short name of the device class.")
    description: str = _f("", "What this profile is for.")
    board: Literal["x86", "jetson", "rpi", "arm"] = _f(
        "x86", "Board family; 'jetson' means unified memory (the GPU allocates from RAM).")


@dataclass(frozen=True)
class MemoryConfig:
    ram_budget_bytes: int = _f(
        2 << 30, "RAM the resident models may use: bytes, a size ('2G', '800M') or "
        "a share of MemTotal ('60%').", ge=16 << 20, size=True)
    drop_page_cache_on_evict: bool = _f(
        False, "posix_fadvise(DONTNEED) a model's file pages when it is evicted.")
    gpu_memory_source: Literal["auto", "memavailable", "nvml", "none"] = _f(
        "auto", "Where memory that RSS misses (GPU layers) is measured: 'memavailable' (the "
        "drop of MemAvailable around a load: unified-memory boards), 'nvml' (a discrete "
        "NVIDIA GPU), 'auto' (memavailable on a jetson board, else NVML if present), "
        "'none'. Only used when layers are offloaded.")
    tiers: list[str] = _f([], "Optional model tiers of the fleet manifest this device has "
                          "room for ([[tier]]: `calm-edge models pull --tier NAME`).")


@dataclass(frozen=True)
class RuntimeConfig:
    n_threads: int = _f(0, "Decode threads; 0 = number of usable CPUs.", ge=0, le=512)
    n_threads_batch: int = _f(0, "Prompt threads; 0 = same as n_threads.", ge=0, le=512)
    n_gpu_layers: int = _f(0, "Layers offloaded to the GPU; -1 = all.", ge=-1, le=1000)
    n_batch: int = _f(256, "Prompt batch size (tokens).", ge=8, le=8192)
    n_ubatch: int = _f(0, "Micro-batch: tokens per graph evaluation; it sizes the compute "
                       "buffer (n_ubatch x vocabulary floats of logits): 0 = n_batch.",
                       ge=0, le=8192)
    max_parallel: int = _f(1, "Generations running at once (across models).", ge=1, le=64)
    use_mmap: bool = _f(True, "mmap model files (pages come from flash on demand). On a CPU, "
                        "llama.cpp repacks Q4_0/Q4_K matrices into a second copy and the "
                        "mapped pages stay resident too: false reads them once.")
    use_mlock: bool = _f(False, "mlock resident models (needs CAP_IPC_LOCK).")
    flash_attn: bool = _f(False, "Use flash attention where the backend supports it.")


    @property
    def micro_batch(self) -> int:
        """The n_ubatch llama.cpp runs with."""
        return min(self.n_ubatch or self.n_batch, self.n_batch)


@dataclass(frozen=True)
class ServerConfig:
    socket: str = _f("", "Unix socket path; empty = $RUNTIME_DIRECTORY/calm.sock, "
                     "/run/calm-edge/calm.sock (root) or $XDG_RUNTIME_DIR/calm-edge/calm.sock.")
    socket_mode: int = _f(0o660, "Permission bits of the socket file (octal string).",
                          ge=0, le=0o777, octal=True)
    socket_group: str = _f("calm-edge", "Group owning the socket, if that group exists.")
    allow_users: list[str] = _f([], "Users (names or uids) allowed to use the socket, besides "
                                "root and the daemon's user; empty with allow_groups empty = "
                                "anyone who can open the socket.")
    allow_groups: list[str] = _f([], "Groups whose members may use the socket.")
    admin_groups: list[str] = _f(["calm-edge-admin"], "Groups allowed the admin routes "
                                 "(model load/unload/pin, budget, feedback, reload).")
    tcp: str = _f("", "Also listen on TCP host:port (empty = no TCP). Only loopback addresses "
                  "unless tcp_allow_remote.")
    tcp_allow_remote: bool = _f(False, "Allow a non-loopback TCP address (the API has no "
                                "authentication over TCP: you are exposing it).")
    tcp_allow_unauthenticated: bool = _f(
        False, "With allow_users/allow_groups set, serve TCP anyway (TCP peers have no "
        "credentials, so the allow-lists cannot apply to them); otherwise the daemon refuses "
        "to start with both.")
    max_body_bytes: int = _f(1 << 20, "Largest accepted request body.", ge=1024,
                             le=256 << 20, size=True)
    max_header_bytes: int = _f(16 << 10, "Largest accepted request head.", ge=1024,
                               le=1 << 20, size=True)
    default_max_tokens: int = _f(256, "max_tokens when a request gives none.", ge=1,
                                 le=1 << 20)
    max_tokens_limit: int = _f(4096, "Largest max_tokens a request may ask for.", ge=1,
                               le=1 << 20)
    keepalive_timeout_s: float = _f(5.0, "Idle keep-alive connections close after this.",
                                    ge=0.1, le=3600)
    write_timeout_s: float = _f(5.0, "A client that takes nothing of a response for this long "
                                "is dropped: its generation stops and its places are freed.",
                                ge=0.1, le=3600)
    max_connections: int = _f(256, "Open connections, all peers together; more are closed at "
                              "accept.", ge=1, le=100_000)
    max_connections_per_uid: int = _f(128, "Open connections per peer uid (all TCP peers "
                                      "count as one); more are closed at accept.", ge=1,
                                      le=100_000)
    drain_timeout_s: float = _f(30.0, "On SIGTERM, wait this long for in-flight requests.",
                                ge=0, le=3600)
    max_queue: int = _f(64, "Requests that may wait for a generation place; beyond, 429.",
                        ge=0, le=100_000)
    request_timeout_s: float = _f(600.0, "Deadline of a request without calm.slo_ms; then it "
                                  "is stopped with 504.", ge=1, le=86400)


@dataclass(frozen=True)
class PowerConfig:
    source: PowerSource = _f("auto", "Power reader: auto picks jtop, hwmon, rapl, estimate.")
    rails: list[str] = _f([], "Rails to report (empty = all the source exposes).")
    total_rail: str = _f("", "Rail that measures the whole board, e.g. VDD_IN.")
    idle_power_mw: float = _f(3000.0, "Board power when idle (estimator).", ge=0, le=1e6)
    active_power_mw: float = _f(15000.0, "Board power with every CPU busy (estimator).",
                                ge=0, le=1e6)
    sample_hz: float = _f(10.0, "Power sampling rate.", ge=0.1, le=1000)
    history_s: float = _f(600.0, "Seconds of power samples kept for per-request energy "
                          "windows (older parts of a window are estimated).", ge=10, le=3600)
    gpu_load_path: str = _f("", "GPU load file for the estimator, relative to /, e.g. "
                            "'sys/devices/platform/gpu.0/load' (Jetson); empty = no GPU term.")
    gpu_load_full_scale: float = _f(1000.0, "Value of gpu_load_path at 100% GPU load "
                                    "(Jetson devfreq load counts per mille).", ge=1, le=1e9)
    gpu_active_power_mw: float = _f(0.0, "Extra board power with the GPU fully busy "
                                    "(estimator).", ge=0, le=1e6)


@dataclass(frozen=True)
class SloConfig:
    latency_ms: float = _f(20000.0, "Default end-to-end latency objective per request.",
                           ge=1, le=3.6e6)


@dataclass(frozen=True)
class QosWeights:
    quality: float = _f(1.0, "Weight of expected quality.", ge=0, le=100)
    latency: float = _f(0.5, "Weight of normalized predicted latency.", ge=0, le=100)
    energy: float = _f(0.2, "Weight of normalized predicted energy.", ge=0, le=100)


@dataclass(frozen=True)
class QosConfig:
    default_mode: Mode = _f("balanced", "Mode for requests that name none.")
    fast: QosWeights = _f(QosWeights(1.0, 1.5, 0.2), "Weights in fast mode.")
    balanced: QosWeights = _f(QosWeights(1.0, 0.25, 0.1), "Weights in balanced mode.")
    quality: QosWeights = _f(QosWeights(1.0, 0.05, 0.02), "Weights in quality mode.")
    eco: QosWeights = _f(QosWeights(1.0, 0.2, 1.5), "Weights in eco mode.")

    def weights(self, mode: Mode) -> QosWeights:
        w: QosWeights = getattr(self, mode)
        return w


@dataclass(frozen=True)
class QualityFloors:
    """Lowest predicted quality acceptable per domain (a hard constraint in Plan)."""

    code: float = _f(0.5, "Floor for code.", ge=0, le=1)
    math: float = _f(0.0, "Floor for math.", ge=0, le=1)
    factual: float = _f(0.5, "Floor for factual questions.", ge=0, le=1)
    instruct: float = _f(0.2, "Floor for instructions and chat.", ge=0, le=1)
    writing: float = _f(0.2, "Floor for writing tasks.", ge=0, le=1)

    def floor(self, domain: str) -> float:
        return float(getattr(self, domain, 0.0))


@dataclass(frozen=True)
class LoopConfig:
    """The MAPE-K loop: learning rates, exploration, drift detection, priors."""

    ewma_alpha_min: float = _f(0.2, "Smallest EWMA step of the running estimates "
                               "(memory ~ 1/alpha requests).", ge=0.01, le=1)
    quality_prior_strength: float = _f(10.0, "Pseudo-observations behind the manifest's "
                                       "quality priors.", ge=0.1, le=1e6)
    explore_epsilon: float = _f(0.05, "Probability of trying the least-observed feasible "
                                "model instead of the best; 0 turns exploration off.",
                                ge=0, le=1)
    probe_degraded_every: int = _f(10, "Probe a degraded model after this many requests "
                                   "without it (0 = never).", ge=0, le=100000)
    drift_delta: float = _f(0.05, "Page-Hinkley tolerance (log slowdown per request).",
                            ge=0, le=10)
    drift_lambda: float = _f(1.5, "Page-Hinkley alarm threshold (log units).", ge=0.01, le=100)
    recover_ratio: float = _f(1.25, "A degraded model recovers when its recent speed is "
                              "within this factor of its baseline.", ge=1, le=100)
    difficulty_slope: float = _f(2.0, "How much the classifier's difficulty moves predicted "
                                 "quality (logit units from easiest to hardest / 2).",
                                 ge=0, le=20)
    decode_ms_per_weight_mib: float = _f(0.09, "Prior decode time per token per MiB of "
                                         "weights, before a model is measured here.",
                                         ge=0.0001, le=100)
    prefill_ms_per_weight_mib: float = _f(0.012, "Prior prompt time per token per MiB of "
                                          "weights.", ge=0.00001, le=100)
    load_mib_per_s: float = _f(600.0, "Prior model load speed (MiB/s) before a load has "
                               "been timed.", ge=1, le=1e6)
    energy_budget_j: float = _f(0.0, "Per-query energy budget Plan respects (0 = none).",
                                ge=0, le=1e6)
    power_cap_w: float = _f(0.0, "Plan avoids models whose predicted mean power while "
                            "answering exceeds this (0 = no cap).", ge=0, le=1e4)
    quality_floor: QualityFloors = _f(QualityFloors(), "Per-domain quality floors.")
    recent_decisions: int = _f(50, "Decisions kept in memory for status.", ge=1, le=10000)
    per_query_quality: bool = _f(True, "Predict each model's chance of answering each query "
                                 "correctly with the outcome model (models/router), when "
                                 "present; else quality comes per domain.")
    outcome_model_dir: str = _f("", "Outcome model artifacts; empty = the bundled "
                                "models/router.")
    cascades: bool = _f(True, "Let the planner choose a cascade (a cheap model answers "
                        "first; a low-confidence answer escalates to a stronger one) where "
                        "the cascade artifact has an acceptor and its expected utility "
                        "beats the best single model.")
    cascade_file: str = _f("", "Cascade acceptors (scripts/train_cascade.py); empty = the "
                           "bundled models/router/cascade.json.")


@dataclass(frozen=True)
class KnowledgeConfig:
    retention_days: float = _f(30.0, "Request and decision rows older than this are pruned.",
                               ge=0.01, le=36500)
    max_requests: int = _f(200_000, "At most this many request rows are kept.", ge=100,
                           le=100_000_000)
    max_db_bytes: int = _f(256 << 20, "Size cap of the knowledge database; when reached the "
                           "oldest requests are dropped.", ge=1 << 20, le=1 << 40, size=True)


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = _f(True, "Serve repeated queries from the response cache.")
    max_entries: int = _f(1000, "Most answers kept.", ge=1, le=10_000_000)
    max_bytes: int = _f(16 << 20, "Most bytes of answers kept.", ge=1024, le=1 << 40,
                        size=True)
    ttl_s: float = _f(3600.0, "Answers older than this are not served.", ge=1, le=3.2e7)
    near_duplicate: bool = _f(True, "Also match near-duplicate single-turn questions (same "
                              "numbers, lengths within 10%, character 3-gram cosine >= "
                              "near_threshold).")
    near_threshold: float = _f(0.97, "Cosine similarity for a near-duplicate hit (the floor: "
                               "longer questions need more, so that an appended sentence never "
                               "matches).", ge=0.5, le=1.0)
    near_max_chars: int = _f(1024, "Longer questions are only matched exactly (bounds the "
                             "work of a lookup on the event loop).", ge=0, le=1 << 20)
    shared_groups: list[str] = _f([], "Groups whose members share cached answers; otherwise "
                                  "each peer uid has its own (TCP peers share one).")
    sampled: bool = _f(False, "Also cache sampled answers (temperature > 0, no seed).")


@dataclass(frozen=True)
class CalibrationConfig:
    """`calm-edge calibrate` and the daemon's own calibration of uncalibrated models."""

    auto: bool = _f(True, "When idle, the daemon calibrates every model not yet calibrated "
                    "on this device (same file, backend build, CPU/GPU and runtime settings).")
    idle_s: float = _f(30.0, "Seconds without requests before the daemon calibrates.",
                       ge=0, le=86400)
    canaries_per_domain: int = _f(10, "Canaries answered per domain in a full calibration.",
                                  ge=1, le=100)
    quick_per_domain: int = _f(2, "Canaries per domain with --quick (and under load).",
                               ge=1, le=100)
    under_load: bool = _f(True, "While requests keep coming, calibrate uncalibrated models "
                          "anyway: one canary of the quick plan at a time, on a loaded "
                          "model, behind every request.")
    under_load_item_s: float = _f(1.0, "Under load, canaries predicted to take longer wait "
                                  "for an idle spell; one running past this is dropped (a "
                                  "waiting request is delayed by at most this).",
                                  ge=0.05, le=600)
    under_load_share: float = _f(0.1, "Under load, the share of time calibration may take: "
                                 "after an item of t seconds the next waits t x (1 - share) "
                                 "/ share.", ge=0.01, le=1)
    canary_timeout_s: float = _f(120.0, "Deadline of one canary answer (besides its "
                                 "max_tokens).", ge=1, le=3600)
    demote_ratio: float = _f(0.5, "A model is demoted in a domain when it passes fewer than "
                             "this share of what its manifest prior promises ...", ge=0, le=1)
    demote_p: float = _f(0.05, "... and chance alone would give so few passes with at most "
                         "this probability.", ge=0, le=1)


@dataclass(frozen=True)
class ResidencyConfig:
    prefetch: bool = _f(True, "Prefetch the model the domain forecast expects next when idle "
                        "(load it if it fits the free budget, else warm its file pages).")
    prefetch_min_share: float = _f(0.3, "Prefetch only a model expected to serve at least "
                                   "this share of the coming requests.", ge=0, le=1)
    mix_alpha: float = _f(0.1, "EWMA step of the recent demand per model and domain mix "
                          "(memory ~ 1/alpha requests).", ge=0.001, le=1)
    collate_max_bypass: int = _f(2, "Collation: a waiting request whose model is resident may "
                                 "go ahead of one that needs a model swap; at most this many "
                                 "times per request (0 = strict order).", ge=0, le=1000)
    collate_max_wait_s: float = _f(10.0, "... and never ahead of a request that has waited "
                                   "this long.", ge=0, le=3600)


# Thermal trip point types (/sys/class/thermal/thermal_zone*/trip_point_*_type).
TRIP_TYPES = ("active", "passive", "hot", "critical")


@dataclass(frozen=True)
class FieldConfig:
    """Conditions of a board in the field as inputs of the loop: the power mode, frequency
    caps and thermal trip points (README: Energy). Files are read under the daemon's sysfs
    root; an input that is missing or reads nonsense is turned off, with a line in status."""

    power_mode: bool = _f(True, "Read the power mode (Jetson nvpmodel) and the CPU (cpufreq) "
                          "and GPU (devfreq) frequency caps; on a change, rescale every speed "
                          "estimate at once (by the ratio calibrated for both modes, else the "
                          "one measured online, else the frequency ratio).")
    nvpmodel_status: str = _f("var/lib/nvpmodel/status", "nvpmodel's current mode "
                              "('pmode:0002'), relative to the sysfs root.")
    nvpmodel_conf: str = _f("etc/nvpmodel.conf", "nvpmodel's mode table (mode names), "
                            "relative to the sysfs root.")
    nvpmodel_query: bool = _f(False, "Run `nvpmodel -q` when the status file cannot be read "
                              "(a subprocess, at most every 30 s, up to 2 s each).")
    gpu_devfreq: list[str] = _f([], "devfreq devices (names under /sys/class/devfreq) whose "
                                "max_freq caps the GPU; empty = those named like a GPU (gpu, "
                                "ga10b, gv11b, gp10b, gk20a). Their cap scales speed when "
                                "layers are offloaded (runtime.n_gpu_layers != 0), else the "
                                "CPUs' caps do.")
    rescale_min_change: float = _f(0.05, "A frequency cap change smaller than this share does "
                                   "not rescale (a change of power mode always does).",
                                   ge=0, le=1)
    poll_s: float = _f(1.0, "Re-read power mode, caps, thermal zones and battery at most this "
                       "often (when a request is routed, and on the housekeeping tick).",
                       ge=0, le=3600)
    thermal: bool = _f(True, "Read the thermal zones' temperatures and trip points; near a "
                       "trip point, Plan prefers cheaper models and the reason says so.")
    thermal_zones: list[str] = _f([], "Thermal zone types to watch (e.g. 'cpu-thermal'); "
                                  "empty = all.")
    thermal_trip_types: list[str] = _f(["passive", "hot", "critical"], "Trip point types that "
                                       "count (of active, passive, hot, critical; active trips "
                                       "usually start fans).")
    thermal_margin_c: float = _f(5.0, "Within this many degrees C of a trip point Plan prefers "
                                 "cheaper models, more so the closer.", ge=0, le=100)
    thermal_weight: float = _f(1.5, "Extra energy weight at the trip point (scaled by "
                               "closeness: 0 at thermal_margin_c below it, all of it at it).",
                               ge=0, le=100)


@dataclass(frozen=True)
class EnergyConfig:
    """An energy budget over time: per period, or a battery's charge (README: Energy). The
    pacing controller moves the effective mode from quality toward eco as the remaining
    budget per remaining time falls below the even rate."""

    budget_wh: float = _f(0.0, "Energy the whole board may use per `period`, as the power "
                          "reader measures (or estimates) it; 0 = no period budget.",
                          ge=0, le=1e6)
    period: Literal["hour", "day"] = _f("day", "The budget's period: it restarts every local "
                                        "hour or at local midnight. A daemon started within "
                                        "a period gets the budget's share of what is left.")
    battery: bool = _f(False, "Follow a battery (/sys/class/power_supply): while it "
                       "discharges, pace spending so that its charge lasts battery_hours; on "
                       "external power, or when the battery disappears, no battery pacing. "
                       "Takes precedence over budget_wh while discharging.")
    battery_name: str = _f("", "power_supply device to follow (e.g. 'BAT0'); empty = the "
                           "first of type Battery.")
    battery_hours: float = _f(24.0, "How long a charge must last from the moment it starts "
                              "discharging.", ge=0.1, le=8760)
    battery_reserve_percent: float = _f(10.0, "Share of a full battery kept back: the budget "
                                        "is exhausted at this level.", ge=0, le=100)
    battery_capacity_wh: float = _f(0.0, "Full capacity, for batteries that report neither "
                                    "energy_full nor charge_full (0 = not known).",
                                    ge=0, le=1e6)
    pace_balanced_below: float = _f(0.9, "Pace = (remaining energy / remaining time) / even "
                                    "rate. Below this the effective mode steps from quality "
                                    "to balanced ...", ge=0, le=100)
    pace_eco_below: float = _f(0.6, "... and below this, to eco (must be below "
                               "pace_balanced_below).", ge=0, le=100)
    pace_hysteresis: float = _f(0.1, "A step back up needs the pace this far above the "
                                "threshold it fell below.", ge=0, le=100)
    on_exhausted: Literal["eco", "refuse"] = _f(
        "eco", "With the budget exhausted: every request runs in eco mode (calm.mode cannot "
        "override it), or requests are refused with 503 and the reason.")
    spend_window_s: float = _f(600.0, "Window over which status and /metrics report the spend "
                               "rate.", ge=10, le=86400)


# Modes from the one that spends least of the board to the one that spends most: a client's
# `max_mode` ceiling caps a request's mode on this ladder (calm_edge.quotas.cap_mode).
MODE_LADDER: tuple[Mode, ...] = ("eco", "fast", "balanced", "quality")
ModeCeiling = Literal["", "eco", "fast", "balanced", "quality"]


@dataclass(frozen=True)
class QuotaLimits:
    """What one client may use: `[quotas.default]` and each `[[quotas.client]]`."""

    weight: float = _f(1.0, "Share of the board when clients compete (weighted fair sharing): "
                       "a client of weight 2 gets twice the generation time of one of weight "
                       "1 while both wait.", ge=0.01, le=1000)
    priority: int = _f(0, "Priority of the client's requests (-10..10, higher first; fair "
                       "sharing works within a priority). A request's calm.priority may "
                       "lower it, never raise it.", ge=-10, le=10)
    tokens_per_min: int = _f(0, "Generated tokens per minute (a sliding 60 s window); over it, "
                             "429 with Retry-After. 0 = no limit.", ge=0, le=1_000_000_000)
    gen_s_per_min: float = _f(0.0, "Seconds of generation (an inference lane held) per minute "
                              "(sliding 60 s window). 0 = no limit.", ge=0, le=86400)
    max_queue_share: float = _f(1.0, "Largest share of server.max_queue this client's waiting "
                                "requests may take (at least one place); beyond, 429.",
                                ge=0, le=1)
    max_mode: ModeCeiling = _f("", "Mode ceiling on the ladder eco < fast < balanced < "
                               "quality: a request asking for more (or given a default mode "
                               "above it) runs at the ceiling. Empty = none.")
    private_cache: bool = _f(False, "This client's cached answers are its own (per uid; per "
                             "address over TCP), even in a cache.shared_groups group.")


def _user_known(name: str) -> bool:
    if name.isdigit():
        return True
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_known(name: str) -> bool:
    if name.isdigit():
        return True
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class QuotaClient(QuotaLimits):
    """One `[[quotas.client]]`: a user, a group or a TCP address, and its limits."""

    name: str = _f("", "Shown in status and in refusals; empty = from user, group or tcp.")
    user: str = _f("", "A user (name or uid) these limits are for.")
    group: str = _f("", "A group (name or gid): its members share these limits, together.")
    tcp: str = _f("", "A TCP peer address or network (e.g. '10.0.0.0/8'), with server.tcp.")

    def problems(self) -> list[tuple[str, str]]:
        """(field, problem) pairs; checked when the profile loads (names must exist)."""
        given = [k for k in ("user", "group", "tcp") if getattr(self, k)]
        if len(given) != 1:
            return [(given[1] if len(given) > 1 else "user",
                     "give exactly one of user, group or tcp")]
        if self.user and not _user_known(self.user):
            return [("user", f"no such user: {self.user!r}")]
        if self.group and not _group_known(self.group):
            return [("group", f"no such group: {self.group!r}")]
        if self.tcp:
            try:
                ipaddress.ip_network(self.tcp, strict=False)
            except ValueError:
                return [("tcp", f"not an IP address or network: {self.tcp!r}")]
        return []


@dataclass(frozen=True)
class QuotasConfig:
    """Per-client quotas by peer identity (SO_PEERCRED uid/groups; the address over TCP)."""

    enabled: bool = _f(False, "Per-client scheduling: weighted fair sharing between clients "
                       "and the limits below. Off: one queue by priority then arrival, no "
                       "limits (usage per client is still shown in status).")
    default: QuotaLimits = _f(QuotaLimits(), "Limits of each client the table does not name "
                              "(every uid, or TCP address, on its own).")
    client: list[QuotaClient] = _f([], "Clients by identity ([[quotas.client]] tables); a "
                                   "user entry wins over group entries, then the first "
                                   "matching group in table order.")

    def problems(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], int] = {}
        for i, c in enumerate(self.client):
            for kind in ("user", "group", "tcp", "name"):
                value = getattr(c, kind)
                if not value:
                    continue
                if (kind, value) in seen:
                    return [(f"client[{i}].{kind}", f"{value!r} is already in "
                             f"client[{seen[kind, value]}]")]
                seen[kind, value] = i
        return []


@dataclass(frozen=True)
class ClassifierConfig:
    runtime: Literal["auto", "litert", "tflite_runtime", "tensorflow", "onnx"] = _f(
        "auto", "Classifier runtime: auto tries LiteRT, tflite_runtime, TensorFlow, ONNX.")
    model_dir: str = _f("", "Classifier artifacts; empty = the bundled models/classifier.")


@dataclass(frozen=True)
class PathsConfig:
    state_dir: str = _f("", "Knowledge store and runtime state; empty = $STATE_DIRECTORY "
                        "or ~/.local/state/calm-edge.")
    models_dir: str = _f("", "Model files; empty = $STATE_DIRECTORY/models or "
                         "~/.local/share/calm-edge/models.")
    fleet: str = _f("", "Fleet manifest; empty = the bundled models/fleet.toml.")
    local_fleet: str = _f("", "Manifest of the models added with `calm-edge models add`, "
                          "merged with the fleet; empty = <models_dir>/fleet.local.toml.")


@dataclass(frozen=True)
class Profile:
    device: DeviceConfig = _f(DeviceConfig(), "")
    memory: MemoryConfig = _f(MemoryConfig(), "")
    runtime: RuntimeConfig = _f(RuntimeConfig(), "")
    server: ServerConfig = _f(ServerConfig(), "")
    power: PowerConfig = _f(PowerConfig(), "")
    slo: SloConfig = _f(SloConfig(), "")
    qos: QosConfig = _f(QosConfig(), "")
    loop: LoopConfig = _f(LoopConfig(), "")
    knowledge: KnowledgeConfig = _f(KnowledgeConfig(), "")
    classifier: ClassifierConfig = _f(ClassifierConfig(), "")
    cache: CacheConfig = _f(CacheConfig(), "")
    residency: ResidencyConfig = _f(ResidencyConfig(), "")
    calibration: CalibrationConfig = _f(CalibrationConfig(), "")
    quotas: QuotasConfig = _f(QuotasConfig(), "")
    paths: PathsConfig = _f(PathsConfig(), "")
    energy: EnergyConfig = _f(EnergyConfig(), "")
    field: FieldConfig = _f(FieldConfig(), "")  # [field]: after every use of `field()`


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs, resolved: the profile plus concrete paths."""

    profile: Profile
    profile_source: str
    socket_path: Path
    state_dir: Path
    models_dir: Path
    fleet_path: Path
    local_fleet_path: Path  # added models (calm_edge.fleet: merged with fleet_path)


# TOML keys that differ from the field name (the field carries the unit).
_KEY_ALIASES = {"ram_budget_bytes": "ram_budget"}
# Keys earlier versions had, that nothing read: accepted (older profiles still load) with a
# warning, and ignored.
_RETIRED = {"runtime": frozenset({"backend"}), "slo": frozenset({"ttft_ms"})}
# Short environment variables documented in the README, mapped to (section, key).
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "CALM_EDGE_SOCKET": ("server", "socket"),
    "CALM_EDGE_STATE_DIR": ("paths", "state_dir"),
    "CALM_EDGE_MODELS_DIR": ("paths", "models_dir"),
    "CALM_EDGE_FLEET": ("paths", "fleet"),
    "CALM_EDGE_RAM_BUDGET": ("memory", "ram_budget"),
}
# Variables read elsewhere, not profile fields.
_ENV_OTHER = {"CALM_EDGE_PROFILE", "CALM_EDGE_LOG_LEVEL"}


def _key(f: dataclasses.Field[Any]) -> str:
    return _KEY_ALIASES.get(f.name, f.name)


class _Ctx:
    """Where a value came from, and how to resolve relative sizes."""

    def __init__(self, where: str, mem_total_bytes: int | None, from_env: bool) -> None:
        self.where, self.mem_total_bytes, self.from_env = where, mem_total_bytes, from_env


def _coerce(value: Any, tp: Any, meta: Mapping[str, Any], ctx: _Ctx, section: str,
            key: str) -> Any:
    def fail(problem: str) -> ConfigError:
        return ConfigError(ctx.where, section, key, problem)

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise fail(f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if tp is bool:
        if ctx.from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise fail(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if meta.get("size") and isinstance(value, str):
            value = _parse_size(value, ctx, fail)
        elif meta.get("octal") and isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                raise fail(f"expected an octal mode like '0660', got {value!r}") from None
        elif ctx.from_env and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise fail(f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"expected an integer, got {value!r}")
        return _bounded(value, meta, fail)
    if tp is float:
        if ctx.from_env and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise fail(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"expected a number, got {value!r}")
        return _bounded(float(value), meta, fail)
    if tp is str:
        if not isinstance(value, str):
            raise fail(f"expected a string, got {value!r}")
        if "\x00" in value:
            raise fail("contains a NUL character")
        return value
    if origin is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        if not isinstance(value, list):  # an array of tables: only a profile file has them
            raise fail(f"expected an array of tables ([[{section}.{key}]]), got {value!r}")
        item = typing.get_args(tp)[0]
        return [_coerce(v, item, meta, ctx, f"{section}.{key}[{i}]" if section
                        else f"{key}[{i}]", "") for i, v in enumerate(value)]
    if origin is list:
        if ctx.from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"expected a list of strings, got {value!r}")
        return list(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise fail(f"expected a table, got {value!r}")
        return _build(tp, value, ctx, ".".join(p for p in (section, key) if p))
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - schema bug


def _parse_size(value: str, ctx: _Ctx, fail: Any) -> int:
    text = value.strip()
    if text.endswith("%"):
        if ctx.mem_total_bytes is None:
            raise fail("a share of MemTotal needs /proc/meminfo")
        try:
            share = float(text[:-1])
        except ValueError:
            raise fail(f"expected a percentage like '60%', got {value!r}") from None
        if not 0 < share <= 100:
            raise fail(f"percentage must be in (0, 100], got {value!r}")
        return int(ctx.mem_total_bytes * share / 100)
    try:
        return parse_size_bytes(text)
    except ValueError as e:
        raise fail(str(e)) from None


def parse_budget(value: str | int, root: Path = Path("/")) -> int:
    """A RAM budget as `[memory] ram_budget` takes it ('2G', '800M', '60%' of MemTotal, or
    bytes), within its bounds. Raises ValueError saying what is wrong."""
    f = next(f for f in dataclasses.fields(MemoryConfig) if f.name == "ram_budget_bytes")
    ctx = _Ctx("ram_budget", mem_total_bytes(root), True)
    try:
        parsed: int = _coerce(value if isinstance(value, str) else int(value), int, f.metadata,
                              ctx, "", "")
    except ConfigError as e:
        raise ValueError(e.problem) from None
    return parsed


def _bounded(value: float, meta: Mapping[str, Any], fail: Any) -> Any:
    ge, le = meta.get("ge"), meta.get("le")
    if ge is not None and value < ge:
        raise fail(f"must be >= {ge:g}, got {value:g}")
    if le is not None and value > le:
        raise fail(f"must be <= {le:g}, got {value:g}")
    return value


def _build(cls: Any, data: Mapping[str, Any], ctx: _Ctx, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    retired = _RETIRED.get(section, frozenset()) & set(data)
    for key in sorted(retired):
        log.warning("%s: [%s] %s is no longer used; ignored (remove it)", ctx.where, section,
                    key)
    data = {k: v for k, v in data.items() if k not in retired}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(ctx.where, section, unknown[0],
                          f"unknown field (known: {', '.join(sorted(fields))})")
    kwargs = {
        f.name: _coerce(data[key], hints[f.name], f.metadata, ctx, section, key)
        for key, f in fields.items() if key in data
    }
    built = cls(**kwargs)
    check = getattr(built, "problems", None)  # checks across fields, or of the world
    for key, problem in check() if callable(check) else ():
        raise ConfigError(ctx.where, section, key, problem)
    return built


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """(variable, section, key, value) for `CALM_EDGE_<SECTION>_<KEY>` and the aliases.

    A variable naming a known section is validated (a misspelt field is an error); any
    other CALM_EDGE_* variable is ignored with a warning.
    """
    sections = {f.name for f in dataclasses.fields(Profile)}
    out: list[tuple[str, str, str, str]] = []
    for name, value in sorted(env.items()):
        if not name.startswith("CALM_EDGE_") or name in _ENV_OTHER:
            continue
        if name in ENV_ALIASES:
            sec, key = ENV_ALIASES[name]
        else:
            sec, _, key = name[len("CALM_EDGE_"):].lower().partition("_")
            if sec not in sections or not key:
                log.warning("ignoring unknown environment variable %s", name)
                continue
        out.append((name, sec, key, value))
    return out


def _apply(profile: Profile, overrides: Mapping[str, Mapping[str, Any]], ctx: _Ctx) -> Profile:
    """Replace the named fields of `profile`, validating each value."""
    for sec, values in overrides.items():
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            continue
        if sec not in {f.name for f in dataclasses.fields(Profile)}:
            raise ConfigError(ctx.where, sec, "", "unknown section")
        current = getattr(profile, sec)
        parsed = _build(type(current), values, ctx, sec)
        changed = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)
                   if _key(f) in values}
        profile = dataclasses.replace(profile, **{sec: dataclasses.replace(current, **changed)})
    return profile


def profile_from_mapping(
    data: Mapping[str, Any],
    *,
    where: str,
    mem_total_bytes: int | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Mapping[str, Any]] | None = None,
) -> Profile:
    """Validate a profile dict (from TOML), then apply environment and CLI overrides."""
    profile: Profile = _build(Profile, data, _Ctx(where, mem_total_bytes, False), "")
    _check(profile, where)
    for var, sec, key, value in _env_overrides(env or {}):
        profile = _apply(profile, {sec: {key: value}}, _Ctx(var, mem_total_bytes, True))
        _check(profile, var)
    if cli:
        profile = _apply(profile, cli, _Ctx("command line", mem_total_bytes, True))
        _check(profile, "command line")
    return profile


def _check(profile: Profile, where: str) -> None:
    """Constraints between fields, and list items with a fixed vocabulary."""
    e, f = profile.energy, profile.field
    if e.pace_eco_below >= e.pace_balanced_below:
        raise ConfigError(where, "energy", "pace_eco_below",
                          f"must be below pace_balanced_below ({e.pace_balanced_below:g}), "
                          f"got {e.pace_eco_below:g}")
    bad = [t for t in f.thermal_trip_types if t not in TRIP_TYPES]
    if bad:
        raise ConfigError(where, "field", "thermal_trip_types",
                          f"unknown trip type {bad[0]!r} (known: {', '.join(TRIP_TYPES)})")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; errors name the file."""
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except FileNotFoundError:
        raise ConfigError(str(path), "", "", "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", "", f"invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(str(path), "", "", f"cannot read: {e.strerror}") from None


def resolve_profile_path(name_or_file: str, *, root: Path = Path("/")) -> Path:
    """A profile name ('x86-dev', 'auto') or a path to a TOML file."""
    if name_or_file in ("", "auto"):
        name_or_file = detect_profile_name(root)
    if "/" in name_or_file or name_or_file.endswith(".toml"):
        return Path(name_or_file)
    for d in paths.profile_dirs():
        candidate = d / f"{name_or_file}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in paths.profile_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(f"profile {name_or_file!r}", "", "",
                      f"no such profile (known: {', '.join(known) or 'none'})")


def detect_profile_name(root: Path = Path("/")) -> str:
    """Pick a bundled profile from the board this runs on. `root` is injectable for tests."""
    model = ""
    for candidate in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            model = (root / candidate).read_bytes().rstrip(b"\x00").decode(errors="replace")
            break
        except OSError:
            continue
    low = model.lower()
    if "orin" in low:
        if "nano" in low:
            return "jetson-orin-nano-8gb"
        if "nx" in low:
            return "jetson-orin-nx-16gb"
        return "jetson-agx-orin-64gb"
    if (root / "etc/nv_tegra_release").exists():
        return "jetson-orin-nano-8gb"
    if "raspberry pi" in low:
        return "rpi5-8gb"
    return "x86-dev"


def mem_total_bytes(root: Path = Path("/")) -> int | None:
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def load_settings(
    profile: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Mapping[str, Any]] | None = None,
    root: Path = Path("/"),
) -> Settings:
    """Resolve settings: profile file, then environment, then CLI overrides.

    `cli` holds nested overrides such as {"paths": {"models_dir": "/x"}}; None values are
    ignored. `root` is the filesystem root for the board and memory probes.
    """
    env = dict(os.environ if env is None else env)
    path = resolve_profile_path(profile or env.get("CALM_EDGE_PROFILE", "") or "auto", root=root)
    prof = profile_from_mapping(read_toml(path), where=str(path),
                                mem_total_bytes=mem_total_bytes(root), env=env, cli=cli)
    models_dir = paths.models_dir(prof.paths.models_dir, env)
    return Settings(
        profile=prof,
        profile_source=str(path),
        socket_path=paths.server_socket_path(prof.server.socket, env),
        state_dir=paths.state_dir(prof.paths.state_dir, env),
        models_dir=models_dir,
        fleet_path=paths.fleet_path(prof.paths.fleet),
        local_fleet_path=paths.local_fleet_path(prof.paths.local_fleet, models_dir),
    )


def describe_fields() -> list[tuple[str, str, str]]:
    """(section.key, default, description) for every profile field, for --help output."""
    rows: list[tuple[str, str, str]] = []
    for sf in dataclasses.fields(Profile):
        sec_cls = typing.get_type_hints(Profile)[sf.name]
        default_sec = getattr(Profile(), sf.name)
        for f in dataclasses.fields(sec_cls):
            value = getattr(default_sec, f.name)
            rows.append((f"{_key(sf)}.{_key(f)}", repr(value), f.metadata.get("doc", "")))
    return rows


__all__ = [
    "MODES", "MODE_LADDER", "ConfigError", "Mode", "Profile", "QosWeights", "QuotaClient",
    "QuotaLimits", "QuotasConfig", "Settings", "load_settings",
    "profile_from_mapping", "resolve_profile_path",
]
