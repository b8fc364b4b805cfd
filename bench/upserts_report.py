"""Tables, goals and the chart of bench/upserts.py's saved results (JSON from ``--save``).

``render_docs([before.json, after.json])`` rewrites the block between the upserts markers of
docs/benchmarks.md and writes docs/upserts-bench.svg (rows/s per contender, one point per round).
"""

from __future__ import annotations

import html
import json
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "upserts-bench.svg"
BEGIN, END = "<!-- upserts:begin -->", "<!-- upserts:end -->"
BASELINE, BULK, STREAMING, TVP, PEER, DLT, SINGLE = (
    "baseline (tuned)", "bulk", "bulk, streaming input", "tvp", "SQLAlchemy executemany", "dlt merge", "single")


def rates(report: dict, group: str, name: str) -> list[float]:
    return [r["rate"] for r in report[group]["runs"].get(name, [])]


def by_round(report: dict, group: str, name: str) -> dict[int, float]:
    return {r["round"]: r["rate"] for r in report[group]["runs"].get(name, [])}


def ratios(report: dict, group: str, a: str, b: str) -> list[float]:
    ra, rb = by_round(report, group, a), by_round(report, group, b)
    return [ra[k] / rb[k] for k in sorted(ra) if k in rb]


def goals(report: dict) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for issue 20's goals; met None: not measured."""
    out = []
    bb = ratios(report, "main", BULK, BASELINE)
    if bb:
        med = statistics.median(bb)
        out.append(("bulk / tuned baseline, median of rounds >= 0.9", f"{med:.2f}", med >= 0.9))
        out.append(("bulk / tuned baseline, every round >= 0.75", f"lowest {min(bb):.2f}", min(bb) >= 0.75))
    tb = ratios(report, "main", TVP, BASELINE)
    if tb:
        med = statistics.median(tb)
        out.append(("tvp (default batch) / tuned baseline, median >= 0.5", f"{med:.2f}", med >= 0.5))
    ts = ratios(report, "small", TVP, SINGLE)
    if ts:
        med = statistics.median(ts)
        out.append((f"tvp / single at {report['small']['events']:,} events, median >= 20", f"{med:.1f}", med >= 20))
    bp = ratios(report, "main", BULK, PEER)
    if bp:
        out.append(("bulk / SQLAlchemy executemany, every round >= 2.5", f"lowest {min(bp):.2f}", min(bp) >= 2.5))
    bd = ratios(report, "main", BULK, DLT)
    if bd:
        med = statistics.median(bd)
        out.append(("bulk / dlt merge, median >= 5", f"{med:.1f} (lowest {min(bd):.1f})", med >= 5))
    else:
        out.append(("bulk / dlt merge, median >= 5", f"not measured: {report.get('no_dlt') or 'not a contender'}",
                    None))
    memory = report.get("memory", {}).get("bulk")
    if memory and len(memory) >= 2:
        sizes = sorted(memory, key=int)
        ratio = memory[sizes[-1]] / memory[sizes[0]]
        out.append((f"bulk writer peak RSS, {int(sizes[-1]):,} / {int(sizes[0]):,} events <= 1.15",
                    f"{memory[sizes[-1]]:.0f} / {memory[sizes[0]]:.0f} MiB = {ratio:.2f}", ratio <= 1.15))
    return out


def mark(ok: bool | None) -> str:
    return "not measured" if ok is None else "**met**" if ok else "**missed**"


def contender_table(report: dict, group: str) -> list[str]:
    g = report[group]
    lines = ["| contender | batch | median rows/s | rows/s per round (round: rate) | median s | peak RSS (MiB) "
             "| matches the oracle |", "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for name, runs in g["runs"].items():
        rs = [r["rate"] for r in runs]
        agree = all(r["agrees"] for r in runs)
        differ = max(r["differ"] for r in runs)
        verdict = "yes" if agree else f"**no**: {differ:,} of {g['oracle']['rows']:,} rows differ"
        batch = f"{runs[0]['batch']:,}" if runs[0]["batch"] else "dlt's"
        lines.append(f"| {name} | {batch} | {statistics.median(rs):,.0f} | "
                     + ", ".join(f"{r['round']}: {r['rate']:,.0f}" for r in sorted(runs, key=lambda r: r["round"]))
                     + f" | {statistics.median(r['seconds'] for r in runs):.2f} "
                     f"| {max(r['rss_mib'] for r in runs):.0f} | {verdict} |")
    return lines


def ratio_table(report: dict) -> list[str]:
    pairs = [(BULK, BASELINE), (STREAMING, BASELINE), (TVP, BASELINE), (BULK, PEER), (BULK, DLT)]
    rounds = sorted({r["round"] for runs in report["main"]["runs"].values() for r in runs})
    lines = ["| ratio | median | " + " | ".join(f"round {k}" for k in rounds) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in rounds) + " |"]
    for a, b in pairs:
        rs = ratios(report, "main", a, b)
        if rs:
            lines.append(f"| {a} / {b} | {statistics.median(rs):.2f} | " + " | ".join(f"{x:.2f}" for x in rs) + " |")
    return lines


def section(report: dict, title: str) -> list[str]:
    m = report["main"]
    mix, total = m["mix"], sum(m["mix"].values())
    loads = sorted({tuple(r["load"]) for runs in m["runs"].values() for r in runs})
    lines = [f"#### {title}", "",
             f"Measured {report['date']} on {report['machine']}; `{report['command']}`, {report['rounds']} rounds. "
             f"Load averages (1, 5, 15 min; `os.getloadavg`): {report['load_start']} at the start, "
             f"{report['load_end']} at the end, {min(l[0] for l in loads):.2f} to {max(l[0] for l in loads):.2f} "
             "(1 min) before the runs.", "",
             f"{m['events']:,} events after {m['existing']:,} pre-loaded: "
             + ", ".join(f"{mix.get(k, 0) / total:.1%} {k}" for k in ("new", "newer", "stale", "duplicate"))
             + f". Oracle: {m['oracle']['rows']:,} rows, digest `{m['oracle']['digest'][:12]}`.", ""]
    lines += contender_table(report, "main") + [
        "", "*Peak RSS* in this table includes the input the child built before its clock (a list of dicts); the "
        "memory table below measures the writers on streaming input.", ""] + ratio_table(report) + [""]
    s = report["small"]
    lines += [f"Single row against tvp, {s['events']:,} events:", ""] + contender_table(report, "small") + [""]
    memory = report.get("memory")
    if memory:
        sizes = sorted(next(iter(memory.values())), key=int)
        lines += ["Peak RSS of the writer's process (`VmHWM`, streaming input; includes Python, SQLAlchemy and "
                  "psycopg, about 60 MiB before any row):", "",
                  "| writer | " + " | ".join(f"{int(x):,} events (MiB)" for x in sizes) + " | ratio |",
                  "| --- | " + " | ".join("---:" for _ in sizes) + " | ---: |"]
        for path, peaks in memory.items():
            lines.append(f"| {path} | " + " | ".join(f"{peaks[x]:.1f}" for x in sizes)
                         + f" | {peaks[sizes[-1]] / peaks[sizes[0]]:.2f} |")
        lines.append("")
    lines += ["| goal | measured | |", "| --- | --- | --- |"]
    lines += [f"| {label} | {value} | {mark(ok)} |" for label, value, ok in goals(report)]
    return lines + [""]


def summary(report: dict) -> str:
    return "\n".join(section(report, "Results"))


def svg(reports: list[tuple[str, dict]]) -> str:
    """A static chart: one row per contender and report, a point per round, a bar at the median."""
    rows = [(label, name, [r["rate"] for r in runs], any(not r["agrees"] for r in runs))
            for label, report in reports for name, runs in report["main"]["runs"].items()]
    top = max(max(r[2]) for r in rows) * 1.08
    left, width, row_h, top_pad = 290, 560, 22, 40
    height = top_pad + row_h * len(rows) + 50
    x = lambda v: left + width * v / top  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14" font-weight="bold">Event upserts, rows/s per contender '
           f'({reports[-1][1]["main"]["events"]:,} events; bar: median, dots: rounds)</text>']
    step = 25_000 if top > 100_000 else 10_000
    for v in range(0, int(top) + 1, step):
        out.append(f'<line x1="{x(v):.1f}" y1="{top_pad - 5}" x2="{x(v):.1f}" y2="{height - 40}" stroke="#ddd"/>')
        out.append(f'<text x="{x(v):.1f}" y="{height - 25}" text-anchor="middle">{v // 1000}k</text>')
    colours = {label: c for (label, _), c in zip(reports, ("#999999", "#1f77b4", "#2ca02c"))}
    for i, (label, name, rs, wrong) in enumerate(rows):
        y = top_pad + i * row_h + row_h / 2
        text = html.escape(f"{label}: {name}" + (" (disagrees with oracle)" if wrong else ""))
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
        med = statistics.median(rs)
        out.append(f'<rect x="{left}" y="{y - 6:.1f}" width="{x(med) - left:.1f}" height="12" '
                   f'fill="{colours[label]}" fill-opacity="0.35"/>')
        for v in rs:
            out.append(f'<circle cx="{x(v):.1f}" cy="{y:.1f}" r="3.2" fill="{colours[label]}"/>')
    out.append(f'<text x="{left + width / 2}" y="{height - 8}" text-anchor="middle">rows per second</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_docs(paths: list[Path]) -> None:
    """Each path may be written LABEL=PATH; unlabelled, two are "before" and "after", more their stems."""
    pairs = [str(p).partition("=")[::2] if "=" in str(p) else ("", str(p)) for p in paths]
    defaults = ["before", "after"] if len(paths) == 2 else [Path(path).stem for _, path in pairs]
    reports = [(label or default, json.loads(Path(path).read_text())) for (label, path), default in zip(pairs, defaults)]
    CHART.write_text(svg(reports))
    lines = [BEGIN, "### Measured results (generated: `bench/upserts.py --save` then `--render`)", ""]
    for label, report in reports:
        lines += section(report, label[:1].upper() + label[1:])
    lines += [f"![rows/s per contender, one point per round]({CHART.name})", "", END]
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: "\n".join(lines), text, count=1)
    DOC.write_text(text)
