"""A picture of a run: one self-contained HTML page (``dbtools report RUN_ID --out run.html``).

The page holds a timeline with a bar per batch (a row per table and step), the rows per second
over the run, each table's window, the tables and their errors, and the run itself as JSON (the
schema of :mod:`dbtools.delta.runs`) for machines. The charts are Plotly's, with plotly.js inlined once:
the page needs no network.
"""

from __future__ import annotations

import html
import json
from datetime import datetime

STATUS_COLOURS = {"Completed": "#2e7d32", "Failed": "#c62828", "Running": "#f9a825"}


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def timeline_bars(run: dict) -> list[dict]:
    """A bar per batch that has a start and an end: its lane (table and step), start, end, status."""
    bars = []
    for b in run.get("batches", ()):
        start, end = _time(b["started_at"]), _time(b["completed_at"])
        if start is None or end is None:
            continue
        bars.append({"lane": f"{b['table']} | {b['step']} {b['name']}", "start": start, "end": end,
                     "status": b["status"], "batch": b["batch"], "rows": b["rows_processed"]})
    return bars


def _figures(run: dict):
    import plotly.graph_objects as go

    bars = timeline_bars(run)
    timeline = go.Figure()
    for status in sorted({b["status"] for b in bars}):
        chosen = [b for b in bars if b["status"] == status]
        timeline.add_trace(go.Bar(
            name=status, orientation="h",
            y=[b["lane"] for b in chosen],
            # A bar from its start (base) for its duration; at least 1 ms, so a batch of an instant shows.
            x=[max((b["end"] - b["start"]).total_seconds() * 1000, 1.0) for b in chosen],
            base=[b["start"].isoformat() for b in chosen],
            marker_color=STATUS_COLOURS.get(status, "#546e7a"),
            customdata=[[b["batch"], b["rows"], b["start"].isoformat(timespec="milliseconds"),
                         b["end"].isoformat(timespec="milliseconds")] for b in chosen],
            hovertemplate="%{y}<br>batch %{customdata[0]}: %{customdata[1]} row(s)<br>"
                          "%{customdata[2]} to %{customdata[3]} UTC<extra>%{fullData.name}</extra>",
        ))
    timeline.update_layout(title="Timeline: a bar per batch (UTC)", barmode="overlay", xaxis_type="date",
                           height=max(260, 60 + 28 * len({b["lane"] for b in bars})), legend_title="status",
                           margin={"l": 20, "r": 20, "t": 50, "b": 40})
    timeline.update_yaxes(autorange="reversed", automargin=True)

    done = sorted((b for b in bars if b["status"] == "Completed"), key=lambda b: b["end"])
    rate = go.Figure()
    rate.add_trace(go.Scatter(
        name="rows per second", mode="lines+markers",
        x=[b["end"].isoformat() for b in done],
        y=[round(b["rows"] / max((b["end"] - b["start"]).total_seconds(), 0.001), 1) for b in done],
        line_shape="hv"))
    total, cumulative = 0, []
    for b in done:
        total += b["rows"]
        cumulative.append(total)
    rate.add_trace(go.Scatter(name="rows so far", mode="lines", x=[b["end"].isoformat() for b in done],
                              y=cumulative, yaxis="y2"))
    rate.update_layout(title="Rows per second over the run (each batch, at its end; UTC)", xaxis_type="date",
                       yaxis={"title": "rows per second"},
                       yaxis2={"title": "rows so far", "overlaying": "y", "side": "right"}, height=320,
                       margin={"l": 20, "r": 20, "t": 50, "b": 40})

    windows = [t for t in run["tables"] if t.get("window_start") and t.get("window_end")]
    window = go.Figure()
    window.add_trace(go.Bar(
        name="window", orientation="h", y=[t["table"] for t in windows],
        x=[(_time(t["window_end"]) - _time(t["window_start"])).total_seconds() * 1000 for t in windows],
        base=[_time(t["window_start"]).isoformat() for t in windows],
        customdata=[[t["window_start"], t["window_end"]] for t in windows],
        hovertemplate="%{y}<br>[%{customdata[0]}, %{customdata[1]})<extra></extra>", marker_color="#1565c0"))
    window.update_layout(title="Window per table: [start, end) on the metadata ModifiedOn (UTC)", xaxis_type="date",
                         height=max(200, 60 + 40 * len(windows)), margin={"l": 20, "r": 20, "t": 50, "b": 40})
    window.update_yaxes(automargin=True)
    return timeline, rate, window


def _cell(value) -> str:
    return "" if value is None else html.escape(str(value))


def render(run: dict) -> str:
    """The page for ``run`` (a :func:`dbtools.delta.runs.load` document, with its batches)."""
    timeline, rate, window = _figures(run)
    charts = [timeline.to_html(full_html=False, include_plotlyjs=True, div_id="timeline"),
              rate.to_html(full_html=False, include_plotlyjs=False, div_id="rate"),
              window.to_html(full_html=False, include_plotlyjs=False, div_id="windows")]
    rows = "".join(
        f"<tr class='table-row' data-table='{_cell(t['table'])}'><td>{_cell(t['table'])}</td>"
        f"<td class='status {_cell(t['status'])}'>{_cell(t['status'])}</td>"
        f"<td>{_cell(t['window_start'])}</td><td>{_cell(t['window_end'])}</td><td>{_cell(t['rows'])}</td>"
        f"<td>{_cell(t['started_at'])}</td><td>{_cell(t['duration_s'])}</td><td>{_cell(t['error'])}</td></tr>"
        for t in run["tables"])
    errors = [(b["table"], b["step"], b["name"], b["batch"], b["error"]) for b in run.get("batches", ()) if b["error"]]
    error_list = ("<ul class='errors'>" + "".join(
        f"<li>{_cell(t)}, step {_cell(s)} {_cell(n)}, batch {_cell(b)}: {_cell(e)}</li>" for t, s, n, b, e in errors)
        + "</ul>") if errors else "<p>None.</p>"
    header = (f"<dl><dt>status</dt><dd class='status {_cell(run['status'])}'>{_cell(run['status'])}</dd>"
              f"<dt>type</dt><dd>{_cell(run['run_type'])} ({_cell(run['mode'])}"
              f"{', ' + _cell(run['table']) if run['table'] else ''})</dd>"
              f"<dt>started (UTC)</dt><dd>{_cell(run['started_at'])}</dd>"
              f"<dt>completed (UTC)</dt><dd>{_cell(run['completed_at'])}</dd>"
              f"<dt>duration</dt><dd>{_cell(run['duration_s'])} s</dd><dt>rows</dt><dd>{_cell(run['rows'])}</dd>"
              f"<dt>requested by</dt><dd>{_cell(run['requested_by'])}</dd></dl>")
    document = json.dumps(run).replace("</", "<\\/")  # safe inside a script element
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dbtools run {_cell(run['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #212121; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }}
dt {{ font-weight: 600; }}
.Failed {{ color: #c62828; }} .Succeeded {{ color: #2e7d32; }} .Interrupted, .Running {{ color: #ef6c00; }}
</style>
</head>
<body>
<h1>Run {_cell(run['run_id'])}</h1>
{header}
{f"<p class='Failed'>{_cell(run['error'])}</p>" if run.get('error') else ''}
<h2>Tables</h2>
<table id="tables"><thead><tr><th>table</th><th>status</th><th>window start (UTC)</th><th>window end (UTC)</th>
<th>rows</th><th>started (UTC)</th><th>duration (s)</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>
{charts[0]}
{charts[1]}
{charts[2]}
<h2>Errors</h2>
{error_list}
<script type="application/json" id="dbtools-run">{document}</script>
</body>
</html>
"""
