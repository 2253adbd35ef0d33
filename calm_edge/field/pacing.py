"""Energy budgets over time and the pacing controller. Pure: no I/O, no clocks (times come
in as arguments), no logging.

A budget is what may still be spent (`remaining_wh`) before a moment (`remaining_s` from
now): the rest of a period's `[energy] budget_wh`, or a discharging battery's charge above
its reserve before `battery_hours` have passed since it began to discharge. Spending it
evenly means spending at the *even rate* (the budget over the whole horizon). The pace is

    pace = (remaining_wh / remaining_s) / even rate

1 while spending is on track, below 1 after spending ahead of it. The controller maps the
pace to the effective mode with hysteresis: quality at or above `balanced_below`, balanced
down to `eco_below`, eco under it; stepping back up needs the pace `hysteresis` above the
threshold. With nothing left the budget is exhausted: eco only, or refusal (the profile
decides; the orchestrator acts on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from calm_edge.config import Mode
from calm_edge.field.sysfs import Battery

# From the most to the least spending: the modes pacing moves through.
LADDER: tuple[Mode, ...] = ("quality", "balanced", "eco")
PERIOD_S = {"hour": 3600.0, "day": 86400.0}
# A horizon this close to its end counts as this long (the pace would explode).
MIN_REMAINING_S = 60.0


@dataclass(frozen=True)
class PacingParams:
    balanced_below: float = 0.9
    eco_below: float = 0.6
    hysteresis: float = 0.1


@dataclass(frozen=True)
class BudgetView:
    """What Monitor measured of a budget, at one moment."""

    kind: Literal["period", "battery"]
    budget_wh: float            # the whole horizon's budget (the period's; a battery's
                                # charge above the reserve when it began to discharge)
    remaining_wh: float
    remaining_s: float          # until the period ends / the charge must last
    horizon_s: float            # the period's length / battery_hours
    spend_rate_w: float | None  # recent spending (None until two readings)
    resets_in_s: float | None   # a period budget starts afresh then; None for a battery

    @property
    def even_rate_w(self) -> float:
        return self.budget_wh / self.horizon_s * 3600.0 if self.horizon_s > 0 else 0.0

    @property
    def affordable_rate_w(self) -> float:
        """What may be spent from now on, per second of what is left, in W."""
        return max(self.remaining_wh, 0.0) / max(self.remaining_s, MIN_REMAINING_S) * 3600.0

    @property
    def pace(self) -> float:
        even = self.even_rate_w
        if even <= 0:
            return 0.0 if self.remaining_wh <= 0 else math.inf
        return self.affordable_rate_w / even

    @property
    def exhausted(self) -> bool:
        return self.remaining_wh <= 0


@dataclass(frozen=True)
class Pacing:
    """The controller's decision: the effective mode for requests that name none."""

    mode: Mode
    pace: float
    exhausted: bool
    reason: str


def _level(pace: float, offset: float, p: PacingParams) -> int:
    if pace >= p.balanced_below + offset:
        return 0
    if pace >= p.eco_below + offset:
        return 1
    return 2


def pace_mode(view: BudgetView | None, previous: Mode | None, p: PacingParams,
              ) -> Pacing | None:
    """The effective mode for `view`, given the one in force (`previous`; None: none yet).
    None when there is no budget to pace (plugged in, or no budget configured).

    Stepping down (toward eco) happens as soon as the pace falls below a threshold;
    stepping up needs the pace `hysteresis` above it, so a pace hovering at a threshold
    does not flip the mode on every request."""
    if view is None:
        return None
    pace = view.pace
    rate = f"{view.affordable_rate_w:.2f} W affordable vs {view.even_rate_w:.2f} W even"
    if view.exhausted:
        what = "battery at its reserve" if view.kind == "battery" else \
            f"{view.budget_wh:.1f} Wh budget of this period spent"
        return Pacing("eco", 0.0, True, f"energy budget exhausted ({what})")
    down = _level(pace, 0.0, p)
    if previous is None or previous not in LADDER:
        level = down
    else:
        now = LADDER.index(previous)
        up = _level(pace, p.hysteresis, p)
        level = down if down > now else (up if up < now else now)
    return Pacing(LADDER[level], pace, False,
                  f"{view.remaining_wh:.1f} Wh left for {view.remaining_s / 3600:.1f} h, "
                  f"pace {pace:.2f} ({rate})")


# -- the budgets' arithmetic ---------------------------------------------------------------

def period_bounds(wall_s: float, period: str, utc_offset_s: float) -> tuple[float, float]:
    """(start, end) in Unix seconds of the period holding `wall_s`, aligned to local time
    (`utc_offset_s` east of UTC): local hours or local midnights."""
    length = PERIOD_S[period]
    local = wall_s + utc_offset_s
    start = math.floor(local / length) * length - utc_offset_s
    return start, start + length


@dataclass(frozen=True)
class PeriodLedger:
    """Where a period's spending is counted from."""

    start_s: float              # the period's start (Unix s)
    end_s: float
    counted_from_s: float       # when counting began: the start, or when the daemon began
    board_wh_at_start: float    # the board energy meter then
    period_budget_wh: float     # `[energy] budget_wh` for the whole period

    @property
    def budget_wh(self) -> float:
        """The budget of the counted part of the period."""
        length = self.end_s - self.start_s
        return self.period_budget_wh * (self.end_s - self.counted_from_s) / length


def period_ledger(ledger: PeriodLedger | None, wall_s: float, board_wh: float,
                  budget_wh: float, period: str, utc_offset_s: float) -> PeriodLedger:
    """The ledger for the period holding `wall_s`: the same one within a period (with the
    new budget, if a reload changed it); a fresh one at a new period. Counting that begins
    within a period (a daemon started at noon) gets the budget's share of the time left:
    what was spent before is not known."""
    start, end = period_bounds(wall_s, period, utc_offset_s)
    if ledger is not None and ledger.start_s == start and ledger.end_s == end:
        if ledger.period_budget_wh == budget_wh:
            return ledger
        return PeriodLedger(start, end, ledger.counted_from_s, ledger.board_wh_at_start,
                            budget_wh)
    counted_from = start if ledger is not None else min(max(wall_s, start), end)
    return PeriodLedger(start, end, counted_from, board_wh, budget_wh)


def period_view(ledger: PeriodLedger, wall_s: float, board_wh: float,
                spend_rate_w: float | None) -> BudgetView:
    spent = max(board_wh - ledger.board_wh_at_start, 0.0)
    remaining_s = max(ledger.end_s - wall_s, 0.0)
    return BudgetView("period", ledger.budget_wh, ledger.budget_wh - spent, remaining_s,
                      ledger.end_s - ledger.counted_from_s, spend_rate_w, remaining_s)


@dataclass(frozen=True)
class Discharge:
    """A battery's discharge in progress: since when, and from how much charge."""

    since_s: float              # Unix s
    start_wh: float


def battery_view(bat: Battery | None, discharge: Discharge | None, wall_s: float, *,
                 hours: float, reserve_percent: float, spend_rate_w: float | None,
                 ) -> tuple[BudgetView | None, Discharge | None]:
    """The battery budget and the discharge it belongs to. None (plugged-in behaviour)
    when there is no battery, it reports no energy, or it is not discharging (charging,
    full, on external power); a discharge begins when discharging is first seen."""
    if bat is None or bat.energy_wh is None or not bat.discharging:
        return None, None
    if discharge is None:
        discharge = Discharge(wall_s, bat.energy_wh)
    full = bat.energy_full_wh if bat.energy_full_wh else max(discharge.start_wh,
                                                             bat.energy_wh)
    reserve_wh = full * reserve_percent / 100.0
    horizon = hours * 3600.0
    return BudgetView(
        "battery", max(discharge.start_wh - reserve_wh, 0.0), bat.energy_wh - reserve_wh,
        max(discharge.since_s + horizon - wall_s, 0.0), horizon, spend_rate_w,
        None), discharge
