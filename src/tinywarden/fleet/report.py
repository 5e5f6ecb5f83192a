"""``fleet report``: one self-contained HTML page and a JSON summary of a trained fleet.

Read from the folder ``fleet train`` wrote (one summary per device, plus ``fleet-run.json`` for the
failures): per device the family, flash and RAM measured on the generated C, false alarms per day after
training and detection of the simulated attacks; fleet-wide, the windows of every device on the one
calibrated confidence scale, with one threshold for the whole fleet. Plots are PNGs embedded as base64,
so the page needs no server and no other file. A folder whose last run has not finished (still running, or
stopped: its record is marked so from the run's start) is refused in one line, never reported as it stands.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.errors import DataError
from tinywarden.fileio import atomic_write
from tinywarden.fleet.device import CONFIDENCE_EDGES
from tinywarden.fleet.ledger import REPORT_FIELDS, check_summary, last_run_failures


def load_summaries(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(device summaries sorted by device id, failed device -> error of the last run).

    Refused in one line while the last run has not finished (:func:`~tinywarden.fleet.ledger.unfinished_run`):
    its devices' results would be read beside an earlier run's, or without the failures it has not recorded.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder written by `tinywarden fleet train`")
    failed = last_run_failures(root)
    devices = []
    unfinished: dict[str, str] = {}
    for bundle in sorted(root.glob("*.twbundle")):  # other files (a report written here) are not devices
        path = bundle.with_suffix(".json")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            unfinished[bundle.stem] = f"{bundle}: no summary {path.name} (interrupted; rerun fleet train)"
            continue
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable device summary ({exc})") from None
        if not isinstance(doc, dict) or doc.get("device_id") != bundle.stem:
            raise DataError(f"{path}: not the summary of device {bundle.stem}")
        check_summary(doc, path, REPORT_FIELDS)
        devices.append(doc)
    # a device that failed in the last run but holds an earlier run's bundle and summary is reported with them,
    # marked: its figures are that bundle's, not the last run's
    for d in devices:
        if d["device_id"] in failed:
            d["last_run_failed"] = failed[d["device_id"]]
    done = {d["device_id"] for d in devices}
    failed = {k: v for k, v in failed.items() if k not in done} | unfinished
    if not devices and not failed:
        raise DataError(f"{root}: no device summaries (*.json); run `tinywarden fleet train` first")
    return devices, failed


def threshold_bin(confidence: float) -> int:
    """Index of the first confidence bin at or above ``confidence`` (bins of :data:`CONFIDENCE_EDGES`)."""
    if not 0.0 < confidence < 1.0:
        raise DataError(f"--confidence: expected a number in (0, 1), got {confidence!r}")
    return int(np.searchsorted(CONFIDENCE_EDGES, confidence - 1e-12, side="left"))


def summarize(devices: list[dict[str, Any]], failed: dict[str, str], confidence: float) -> dict[str, Any]:
    """The JSON summary: fleet totals, the fleet threshold's rates, and one row per device."""
    cut = threshold_bin(confidence)
    edge = float(CONFIDENCE_EDGES[cut])
    normal = np.zeros(len(CONFIDENCE_EDGES) - 1, dtype=np.int64)
    attack = np.zeros_like(normal)
    rows = []
    for d in devices:
        hist = d.get("confidence_hist") or {}
        n = np.asarray(hist.get("normal", np.zeros_like(normal)), dtype=np.int64)
        a = np.asarray(hist.get("attack", np.zeros_like(normal)), dtype=np.int64)
        normal += n
        attack += a
        days = d.get("normal_days") or 0.0
        rows.append({k: d.get(k) for k in ("device_id", "profile", "family", "flash", "ram", "version",
                                           "bundle_bytes", "false_alarms_per_day", "incidents", "detected",
                                           "detection_rate", "attacked", "firmware_update_day", "cold_start",
                                           "last_run_failed")}
                    | {"windows_over_fleet_threshold_per_day": float(n[cut:].sum() / days) if days else None})
    incidents = sum(int(d.get("incidents") or 0) for d in devices)
    detected = sum(int(d.get("detected") or 0) for d in devices)
    fa = [d["false_alarms_per_day"] for d in devices if d.get("false_alarms_per_day") is not None]
    return {
        "devices": len(devices), "failed": len(failed), "failures": failed,
        "stale": {d["device_id"]: d["last_run_failed"] for d in devices if d.get("last_run_failed")},
        "profiles": sorted({d["profile"] for d in devices}),
        "total_bundle_bytes": int(sum(d.get("bundle_bytes", 0) for d in devices)),
        "max_flash": max((d["flash"] for d in devices), default=None),
        "max_ram": max((d["ram"] for d in devices), default=None),
        "incidents": incidents, "detected": detected,
        "detection_rate": detected / incidents if incidents else None,
        "median_false_alarms_per_day": float(np.median(fa)) if fa else None,
        "fleet_threshold": {"confidence": confidence, "bin_edge": edge,
                            "normal_windows": int(normal.sum()), "attack_windows": int(attack.sum()),
                            "normal_over": int(normal[cut:].sum()), "attack_over": int(attack[cut:].sum())},
        "confidence_hist": {"edges": CONFIDENCE_EDGES.tolist(), "normal": normal.tolist(), "attack": attack.tolist()},
        "per_device": rows,
    }


def write_report(folder: str | Path, out: str | Path, json_out: str | Path, confidence: float = 0.999
                 ) -> dict[str, Any]:
    """Write the HTML page ``out`` and the JSON summary ``json_out``; return the summary."""
    devices, failed = load_summaries(folder)
    summary = summarize(devices, failed, confidence)
    atomic_write(json_out, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    atomic_write(out, render_html(summary))
    return summary


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(summary: dict[str, Any]) -> list[tuple[str, str]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = []
    hist = summary["confidence_hist"]
    edges = np.asarray(hist["edges"])
    # x = -log10(1 - confidence): 1, 2, 3 ... nines; the last edge (1.0) is drawn one step past the rest
    nines = -np.log10(np.maximum(1.0 - edges, 10 ** -5.1))
    fig = Figure(figsize=(8, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, colour in (("normal", "tab:blue"), ("attack", "tab:red")):
        counts = np.asarray(hist[name], dtype=float)
        total = counts.sum()
        if total:
            ax.stairs(counts / total, nines, label=f"{name} windows ({int(total)})", color=colour)
    cut = summary["fleet_threshold"]["bin_edge"]
    ax.axvline(-np.log10(1.0 - cut), color="k", ls="--",
               label=f"fleet threshold {summary['fleet_threshold']['confidence']}")
    ax.set_yscale("log")
    ax.set_xlabel("calibrated confidence, as nines: -log10(1 - confidence)")
    ax.set_ylabel("share of windows")
    ax.legend()
    out.append(("Every device on the calibrated confidence scale (after training)", _png(fig)))

    rows = summary["per_device"]
    if rows:
        fig = Figure(figsize=(8, 3.6), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax1, ax2 = fig.subplots(1, 2)
        profiles = summary["profiles"]
        for i, p in enumerate(profiles):
            mine = [r for r in rows if r["profile"] == p]
            ax1.scatter([r["flash"] for r in mine], [r["ram"] for r in mine], label=p, s=12, color=f"C{i}")
        ax1.set_xlabel("flash (B)")
        ax1.set_ylabel("RAM (B)")
        ax1.legend(fontsize=8)
        data = [[r["false_alarms_per_day"] for r in rows if r["profile"] == p
                 and r["false_alarms_per_day"] is not None] for p in profiles]
        ax2.boxplot(data, tick_labels=profiles)
        ax2.set_ylabel("false alarms per day")
        out.append(("Footprint and false alarms by profile", _png(fig)))
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return html.escape(str(v))


def render_html(summary: dict[str, Any]) -> str:
    """The page: totals, plots (inline PNG), the per-device table and the failures."""
    t = summary["fleet_threshold"]
    rate = summary["detection_rate"]
    normal_share = t["normal_over"] / t["normal_windows"] if t["normal_windows"] else 0.0
    attack_share = t["attack_over"] / t["attack_windows"] if t["attack_windows"] else 0.0
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tinywarden fleet report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}</style></head><body>",
        "<h1>tinywarden fleet report</h1>",
        f"<p>{summary['devices']} device(s) trained and signed ({', '.join(map(html.escape, summary['profiles']))}), "
        f"{summary['failed']} failed; {summary['total_bundle_bytes']} bundle bytes in all; largest module "
        f"{_cell(summary['max_flash'])} B flash, {_cell(summary['max_ram'])} B RAM.</p>",
        f"<p>Simulated attacks detected: {summary['detected']} of {summary['incidents']}"
        f"{'' if rate is None else f' ({rate:.0%})'}; median false alarms per day "
        f"{_cell(summary['median_false_alarms_per_day'])} (each device at its own calibrated threshold).</p>",
        f"<p>One fleet threshold, confidence &ge; {t['confidence']}: {t['normal_over']} of {t['normal_windows']} "
        f"normal windows over it ({normal_share:.3%}), {t['attack_over']} of {t['attack_windows']} attack "
        f"windows ({attack_share:.1%}).</p>",
    ]
    for title, png in _plots(summary):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    cols = ["device_id", "profile", "family", "flash", "ram", "version", "bundle_bytes", "false_alarms_per_day",
            "windows_over_fleet_threshold_per_day", "incidents", "detected", "firmware_update_day", "cold_start"]
    parts.append("<h2>Devices</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
    for r in summary["per_device"]:
        parts.append("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>")
    parts.append("</table>")
    if summary.get("stale"):
        parts.append("<h2>Reported from an earlier run's bundle</h2><p>The last run failed these devices; the table "
                     "shows the bundle and figures of the run before, which they still hold.</p><ul>")
        parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sorted(summary["stale"].items())]
        parts.append("</ul>")
    if summary["failures"]:
        parts.append("<h2>Failed devices</h2><ul>")
        parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sorted(summary["failures"].items())]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
