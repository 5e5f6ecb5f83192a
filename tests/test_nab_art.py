"""The resonance view of the NAB benchmark (benchmarks/nab_art.py): it finds a pattern change planted inside the
seen range, stays quiet on a series that repeats what it learnt, reports an event once, and reads no labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import nab_art  # noqa: E402

SETTINGS = [{}, {"adaptive": True, "weighted": True, "strict": True},
            {"adaptive": True, "weighted": True, "strict": True, "faithful": True, "closer": True}]


def _daily(days: int, per_day: int = 96, seed: int = 3) -> np.ndarray:
    """A daily square-ish pattern with a little noise (the shape of NAB's art_daily files)."""
    t = np.arange(days * per_day)
    base = np.where((t % per_day) < per_day // 2, 20.0, 80.0)
    return base + np.random.default_rng(seed).normal(0.0, 1.0, len(t))


@pytest.mark.parametrize("kw", SETTINGS)
def test_a_pattern_change_inside_the_seen_range_is_reported_once_near_its_start(kw: dict[str, bool]) -> None:
    v = _daily(30)
    start = 20 * 96 + 10  # the high half of day 20 starts early and stays: every value is still in [20, 80]
    v[start : start + 96 * 2] = np.where((np.arange(96 * 2) % 48) < 24, 80.0, 20.0) + v[start : start + 96 * 2] % 1
    probation = int(0.15 * len(v))
    out = nab_art.art_view(v, probation, **kw)
    assert out.shape == v.shape and np.isfinite(out).all() and (out[:probation] == 0).all()
    hits = np.flatnonzero(out >= 0.5)
    assert len(hits) and ((hits >= start) & (hits < start + 96)).any(), hits
    assert ((hits >= start) & (hits < start + 96 * 2)).sum() <= 3  # one event, not a report per window


@pytest.mark.parametrize("kw", SETTINGS)
def test_a_series_that_repeats_what_it_learnt_is_not_reported(kw: dict[str, bool]) -> None:
    v = np.tile(np.r_[np.full(48, 20.0), np.full(48, 80.0)], 30)  # the same day, every day
    assert not (nab_art.art_view(v, int(0.15 * len(v)), **kw) > 0).any()


def test_the_view_reads_only_past_values_and_the_range() -> None:
    # a detector that could see the future would change its earlier reports when later values change; with the
    # same value range, the reports before the change are the same
    v = _daily(30)
    w = v.copy()
    w[25 * 96 :] = np.where(w[25 * 96 :] > 50, 20.0, 80.0)  # a later, different future inside the same range
    probation = int(0.15 * len(v))
    for kw in SETTINGS:
        a = nab_art.art_view(v, probation, float(v.min()), float(v.max()), **kw)
        b = nab_art.art_view(w, probation, float(v.min()), float(v.max()), **kw)
        assert np.array_equal(a[: 25 * 96], b[: 25 * 96])


def test_the_nab_rows_take_no_labels_and_combine_views_per_row() -> None:
    from benchmarks.nab import art_combined, art_scores

    v = _daily(30)
    probation = int(0.15 * len(v))
    art = art_scores(v, probation)  # the signature has no labels to take: values and the probationary length
    htm = np.zeros(len(v))
    htm[1000] = 0.9
    both = art_combined(art, htm, probation)
    assert np.array_equal(both["htm art fixed onsets"], np.maximum(htm, art["art fixed"]))
    span = nab_art.MASK_POINTS * nab_art.step_for(probation)
    assert (both["htm one event"][1001 : 1001 + span] == 0).all() and both["htm one event"][1000] == 0.9


def test_compress_keeps_a_spike_and_haar_is_orthonormal() -> None:
    pts, last = nab_art.compress(np.r_[np.ones(6), 9.0, np.ones(5)], 3, 8.0)
    assert pts.tolist() == [1.0, 1.0, 9.0, 1.0] and last.tolist() == [2, 5, 8, 11]
    x = np.random.default_rng(0).normal(size=8)
    assert np.linalg.norm(nab_art.haar(x)) == pytest.approx(np.linalg.norm(x))


def test_only_the_first_resonance_setting_is_labelled_a_priori() -> None:
    from benchmarks.nab import ART_ROWS, ART_SETTINGS, provenance

    assert provenance("art fixed") == "a priori, resonance view (research)"
    assert provenance("kmeans htm art fixed onsets").startswith("a priori + resonance view")
    tuned = [f"art {n}" for n in ART_ROWS if n != "fixed"] + ["art likelihood onsets", "kmeans htm one event"]
    tuned += [f"kmeans htm art {n} onsets" for n in ART_ROWS if n != "fixed"]
    tuned += [f"kmeans htm art {n} one event" for n in ("artime", "faithful", "closer")]
    assert all(provenance(name) == "tuned on NAB" for name in tuned), [provenance(n) for n in tuned]
    assert len(ART_ROWS) + 2 <= ART_SETTINGS  # the views, the likelihood one and the one-event rule


def test_kept_rows_name_where_a_merged_file_got_them() -> None:
    from benchmarks.nab import keep_rows

    row = {"detector": "kmeans x", "standard": 1.0, "standard_threshold": None}
    other = {"rows": [row], "machine": {"date": "d1", "commit": "c1"}, "command": "cmd1",
             "merged": "2 rows from this run (measured d0, commit c0);"}
    mine = {"rows": [{"detector": "kmeans y"}], "families": ["kmeans"], "machine": {"date": "d2", "commit": "c2"}}
    out = keep_rows(mine, other, Path("nab.json"))
    assert [r["detector"] for r in out["rows"]] == ["kmeans y", "kmeans x"]
    assert out["rows"][1]["standard_threshold"] == float("inf")
    assert "commit c2" in out["merged"] and "commit c1" in out["merged"]
    assert "that file's own rows: 2 rows from this run (measured d0, commit c0)" in out["merged"]
