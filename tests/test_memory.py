from __future__ import annotations

from pathlib import Path

import pytest

from calm_edge.memory import ResidentModel, choose_evictions

M = 1 << 20


def rm(name: str, mb: int, last: float, in_use: bool = False, pinned: bool = False
       ) -> ResidentModel:
    return ResidentModel(name, mb * M, in_use, pinned, last)


@pytest.mark.parametrize(("resident", "need_mb", "budget_mb", "expected"), [
    ([], 100, 200, []),
    ([rm("a", 100, 1)], 100, 200, []),                          # fits without eviction
    ([rm("a", 100, 2), rm("b", 100, 1)], 100, 200, ["b"]),      # least recently used first
    ([rm("a", 100, 1), rm("b", 100, 1)], 100, 200, ["a"]),      # tie: stable name order
    ([rm("a", 100, 1, in_use=True), rm("b", 100, 2)], 100, 200, ["b"]),   # never in use
    ([rm("a", 100, 1, pinned=True), rm("b", 100, 2)], 100, 200, ["b"]),   # never pinned
    ([rm("a", 150, 1, in_use=True)], 100, 200, None),           # impossible
    ([rm("a", 50, 1), rm("b", 50, 2), rm("c", 100, 3)], 150, 250, ["a", "b"]),  # stop early
])
def test_memory_choose_evictions(resident: list[ResidentModel], need_mb: int, budget_mb: int,
                                 expected: list[str] | None) -> None:
    assert choose_evictions(resident, need_mb * M, budget_mb * M) == expected


def test_memory_cost_aware_eviction_keeps_valuable_models() -> None:
    # Same recency: the model expected to be used soon and slow to reload is kept.
    likely = ResidentModel("likely", 500 * M, False, False, 1.0, expected_use=0.6,
                           reload_s=2.0)
    unlikely = ResidentModel("unlikely", 500 * M, False, False, 5.0, expected_use=0.05,
                             reload_s=2.0)
    assert choose_evictions([likely, unlikely], 400 * M, 1000 * M) == ["unlikely"]
    # Per byte: a big model with the same use and reload cost is the cheaper one to keep out.
    big = ResidentModel("big", 800 * M, False, False, 1.0, expected_use=0.3, reload_s=1.0)
    small = ResidentModel("small", 200 * M, False, False, 1.0, expected_use=0.3,
                          reload_s=1.0)
    assert choose_evictions([big, small], 100 * M, 1000 * M) == ["big"]
    # Without a forecast it is least recently used, then name.
    a, b = rm("a", 100, 5), rm("b", 100, 3)
    assert choose_evictions([a, b], 100, 200 * M) == ["b"]


# -- device memory readers ------------------------------------------------------------------

def test_memavailable_reader_reads_an_injected_meminfo(tmp_path: Path) -> None:
    from calm_edge.memory import MemAvailableReader

    (tmp_path / "proc").mkdir()
    meminfo = tmp_path / "proc" / "meminfo"
    meminfo.write_text("MemTotal:        8000000 kB\nMemFree:   100 kB\n"
                       "MemAvailable:    6000000 kB\n")
    r = MemAvailableReader(tmp_path)
    assert r.used_bytes() == 2_000_000 * 1024 and r.unified
    meminfo.write_text("MemTotal: 8000000 kB\n")            # an old kernel: no MemAvailable
    assert r.used_bytes() is None
    meminfo.write_text("MemTotal: 10 kB\nMemAvailable: 20 kB\n")  # nonsense
    assert r.used_bytes() is None
    meminfo.unlink()
    assert r.used_bytes() is None


def test_select_device_memory_by_board_and_source(tmp_path: Path) -> None:
    from calm_edge.memory import MemAvailableReader, model_growth_bytes, select_device_memory

    class Nvml:
        source, unified = "nvml", False

        def used_bytes(self) -> int | None:
            return 1

    jetson = select_device_memory("auto", unified_board=True, root=tmp_path, nvml=Nvml)
    assert isinstance(jetson, MemAvailableReader) and jetson.root == tmp_path
    assert isinstance(select_device_memory("auto", unified_board=False, nvml=Nvml), Nvml)
    assert select_device_memory("auto", unified_board=False, nvml=lambda: None) is None
    assert select_device_memory("none", unified_board=True, nvml=Nvml) is None
    assert select_device_memory("nvml", unified_board=False, nvml=lambda: None) is None
    assert model_growth_bytes(-5, None, None) == 0
    assert model_growth_bytes(10, 30, jetson) == 30
    assert model_growth_bytes(10, 30, Nvml()) == 40
    assert model_growth_bytes(10, -30, Nvml()) == 10
