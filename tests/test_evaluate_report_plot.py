"""The people-facing outputs of tinywarden.evaluate: the rich report and the PNG plot."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from rich.console import Console

from tinywarden.errors import ConfigError
from tinywarden.evaluate import WindowScores, evaluate, format_duration, plot_evaluation, render
from tinywarden.evaluate.plot import DPI, FIGSIZE_IN, _y_scale
from tinywarden.telemetry import Series

T0 = 1_700_000_000.0


def scenario(n: int = 400, period: float = 5.0, spread: float = 1.0) -> tuple[Series, WindowScores]:
    labels = np.zeros(n, np.int8)
    attacks = np.full(n, "", dtype=object)
    labels[100:150] = 1
    attacks[100:150] = "port_scan"
    labels[300:310] = 1
    attacks[300:310] = "exfil"
    s = Series(T0 + period * np.arange(n), np.zeros((n, 1)), ("x",), labels, attacks, "sim.csv")
    window = 10
    ends = np.arange(window - 1, n, dtype=np.int64)
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 0.5, len(ends)) * spread
    scores[(ends >= 150) & (ends < 170)] *= 1e5 if spread > 1 else 10
    raw = (scores > 3.0 * spread).astype(np.uint8)
    return s, WindowScores(ends, window, scores, raw, raw.copy(), 3.0 * spread)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.25, "0.25s"), (3.0, "3s"), (42.4, "42s"), (250.0, "4m10s"), (7500.0, "2h05m"),
     (3 * 86400 + 4 * 3600, "3d04h"), (float("nan"), "-")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_render_shows_summary_and_per_attack_rows() -> None:
    s, ws = scenario()
    ev = evaluate(s, ws, params=1234, model_bytes=5000, detector="kmeans")
    console = Console(record=True, width=140)
    console.print(render(ev))
    text = console.export_text()
    assert "Evaluation of kmeans" in text
    assert "1234 params, 4.9 KiB" in text
    for a in ev.per_attack:
        assert a.attack in text
    port_scan = next(a for a in ev.per_attack if a.attack == "port_scan")
    assert port_scan.detected == 1
    assert format_duration(port_scan.mean_latency_s) in text
    assert f"{100 * ev.fpr:.1f}%" in text


def test_render_without_incidents_says_so() -> None:
    n = 50
    s = Series(T0 + np.arange(n, dtype=float), np.zeros((n, 1)), ("x",), np.zeros(n, np.int8))
    ws = WindowScores(
        np.arange(n, dtype=np.int64), 1, np.zeros(n), np.zeros(n, np.uint8), np.zeros(n, np.uint8), 1.0
    )
    console = Console(record=True, width=140)
    console.print(render(evaluate(s, ws, params=0, model_bytes=0)))
    assert "(no labelled incidents)" in console.export_text()


def test_plot_writes_png_of_expected_size(tmp_path) -> None:
    s, ws = scenario()
    ev = evaluate(s, ws, params=10, model_bytes=40, detector="ewma", skip_rows=50)
    out = plot_evaluation(s, ws, ev, tmp_path / "sub" / "eval.png", title="ewma on sim")
    assert out == tmp_path / "sub" / "eval.png"
    assert out.stat().st_size > 5000
    img = imread(out)
    assert img.shape[:2] == (round(FIGSIZE_IN[1] * DPI), round(FIGSIZE_IN[0] * DPI))
    # Not a blank canvas: the score line, spans and markers put many distinct colours on it.
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20


def test_plot_uses_log_axis_for_wide_score_range(tmp_path) -> None:
    s, ws = scenario(spread=10.0)
    assert ws.scores.max() / ws.scores.min() > 1e3
    ev = evaluate(s, ws, params=1, model_bytes=1)
    assert plot_evaluation(s, ws, ev, tmp_path / "log.png").stat().st_size > 0


def test_y_scale_choice() -> None:
    assert _y_scale(np.array([1.0, 2.0, 900.0]))[0] == "linear"
    assert _y_scale(np.array([1.0, 2.0, 2000.0]))[0] == "log"
    scale, kwargs = _y_scale(np.array([0.0, 0.01, 50.0]))
    assert scale == "symlog" and kwargs == {"linthresh": 0.01}
    assert _y_scale(np.array([-1.0, 0.0]))[0] == "linear"


def test_plot_to_unwritable_path_is_a_clear_error(tmp_path) -> None:
    s, ws = scenario()
    ev = evaluate(s, ws, params=1, model_bytes=1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the plot"):
        plot_evaluation(s, ws, ev, blocker / "eval.png")



def test_a_plot_replaces_a_link_at_its_path_instead_of_writing_through_it(tmp_path) -> None:
    # savefig opened the path itself: a link planted there (a shared folder, run as root) had the PNG written into
    # the file it named, and a crash mid-write left a torn file; the tune Pareto plot did the same
    s, ws = scenario()
    ev = evaluate(s, ws, params=1, model_bytes=1)
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n")
    (tmp_path / "eval.png").symlink_to(victim)
    out = plot_evaluation(s, ws, ev, tmp_path / "eval.png")
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink() and imread(out).ndim == 3
    assert sorted(q.name for q in tmp_path.iterdir()) == ["eval.png", "victim.conf"]  # no temporary left

def test_plot_with_infinite_threshold_still_draws(tmp_path) -> None:
    # A detector calibrated to never alarm may carry an infinite threshold; the plot omits the line.
    s, ws = scenario()
    ws = WindowScores(ws.end_rows, ws.window, ws.scores, ws.raw_flags * 0, ws.alarms * 0, float("inf"))
    ev = evaluate(s, ws, params=1, model_bytes=1)
    assert imread(plot_evaluation(s, ws, ev, tmp_path / "inf.png")).shape[0] == round(FIGSIZE_IN[1] * DPI)
