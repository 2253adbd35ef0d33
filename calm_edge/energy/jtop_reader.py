"""Power rails from jtop (jetson-stats), the first choice on a Jetson with `jtop.service`.

jtop's `power` property is a dict: `power['tot']` (the board total: the VDD_IN rail where
the board has one, with its name under 'name', else jtop's sum of the rails) and
`power['rail'][name]` for every other rail; each entry carries 'power' (mW), 'volt' (mV),
'curr' (mA), 'avg' (mW) and more. The reader merges 'tot' back into the rails under its
name, so profiles can name VDD_IN as `total_rail` either way.

jtop refreshes from its service at its own interval (0.5 s here unless the factory says
otherwise); samples taken faster repeat the last refresh, a zero-order hold that the
integrator handles. On a Jetson the hwmon reader gives 10 Hz resolution without the service.

Importing `jtop` sets multiprocessing's start method to fork for the whole process, so it
is imported only inside `default_jtop_factory()`'s factory, i.e. only when this source is
being tried. Nothing in calm_edge imports it at module import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from calm_edge.energy.base import (
    PowerReadError,
    PowerSample,
    ReaderUnavailable,
    WarnOnce,
    check_power_mw,
    choose_rails,
    form_total_mw,
    log,
)

# Returns an unstarted jtop-like object: `start()`, `close()`, and a `power` attribute or
# property shaped like jtop's (see the module docstring).
JtopFactory = Callable[[], Any]


def default_jtop_factory(interval_s: float = 0.5) -> JtopFactory:
    """A factory for the real `jtop.jtop(interval=...)`; imports jtop only when called."""

    def make() -> Any:
        import jtop  # lazy on purpose: importing it forces the fork start method

        return jtop.jtop(interval=interval_s)

    return make


def _entries(power: Any) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """(rail entries including the named total, the 'tot' entry); raises ValueError."""
    if not isinstance(power, Mapping):
        raise ValueError(f"power is {type(power).__name__}, not a dict")
    tot = power.get("tot")
    rails = power.get("rail", {})
    if not isinstance(tot, Mapping) or not isinstance(rails, Mapping):
        raise ValueError("power lacks 'tot' / 'rail'")
    merged = {str(k): v for k, v in rails.items() if isinstance(v, Mapping)}
    name = tot.get("name")
    if isinstance(name, str) and name:
        merged.setdefault(name, tot)
    return merged, tot


class JtopReader:
    """Rail power from a started jtop client. Measured. One thread at a time.

    The factory is called and started in the constructor; any exception there (jtop raises
    `JtopException` when jtop.service is not running or not accessible) becomes
    ReaderUnavailable with the reason, and the object is closed.
    """

    source = "jtop"
    measured = True

    def __init__(self, factory: JtopFactory, *, rails: Sequence[str] = (),
                 total_rail: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        try:
            client = factory()
        except Exception as e:
            raise ReaderUnavailable(f"jtop client could not be created "
                                    f"({type(e).__name__}: {e})") from e
        try:
            client.start()
        except Exception as e:
            _close_quietly(client)
            reason = " ".join(str(e).split()) or type(e).__name__
            raise ReaderUnavailable(
                f"jtop did not start ({type(e).__name__}: {reason}); is jtop.service "
                "running? (systemctl status jtop.service)") from e
        try:
            merged, _ = _entries(client.power)
        except Exception as e:
            _close_quietly(client)
            raise ReaderUnavailable(f"jtop reports no usable power data ({e})") from e
        if not merged:
            _close_quietly(client)
            raise ReaderUnavailable("jtop reports no power rails on this board")
        self._client = client
        chosen, self._total_rail, more = choose_rails(sorted(merged), rails, total_rail, "jtop")
        self.rails: tuple[str, ...] = chosen
        self._use_jtop_total = not rails and not self._total_rail
        self.notes: list[str] = more
        self.selection_notes: tuple[str, ...] = tuple(self.notes)
        self._clock = clock
        self._warn = WarnOnce("jtop")
        self._closed = False
        log.info("jtop power rails: %s; total: %s", ", ".join(chosen),
                 self._total_rail or ("jtop 'tot'" if self._use_jtop_total else "sum"))

    def _value_mw(self, rail: str, entry: Any) -> float | None:
        try:
            value = float(entry["power"])
        except (KeyError, TypeError, ValueError) as e:
            self._warn(rail, "no numeric 'power'", repr(e))
            return None
        problem = check_power_mw(value)
        if problem:
            self._warn(rail, problem, f"{value:g} mW")
            return None
        return value

    def read(self) -> PowerSample:
        """Non-blocking dict read of jtop's last refresh. Raises PowerReadError when the
        client thread died or the dict is malformed."""
        t_s = self._clock()
        is_alive = getattr(self._client, "is_alive", None)
        if callable(is_alive) and not is_alive():
            raise PowerReadError("jtop client stopped (jtop.service restarted or stopped?)")
        try:
            merged, tot = _entries(self._client.power)
        except Exception as e:
            raise PowerReadError(f"jtop power data unusable: {e}") from e
        values: dict[str, float] = {}
        for rail in set(self.rails) | ({self._total_rail} - {""}):
            if rail in merged:
                v = self._value_mw(rail, merged[rail])
                if v is not None:
                    values[rail] = v
        if self._use_jtop_total:
            total = self._value_mw("tot", tot)
            if total is None:
                raise PowerReadError("jtop 'tot' has no valid power")
        else:
            total = form_total_mw(values, self._total_rail, self.rails)
        return PowerSample(t_s, total, {r: values[r] for r in self.rails if r in values})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close_quietly(self._client)


def _close_quietly(client: Any) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        try:
            close()
        except Exception as e:  # a half-started client may fail to close; nothing to do
            log.debug("jtop close failed: %s", e)
