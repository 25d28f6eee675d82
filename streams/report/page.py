"""`ledger report`: fold the whole event log (ledger.analytics) into one static HTML page.

The page is self-contained: inline CSS and four matplotlib charts inlined as SVG (text drawn as
paths, so no font, script or network is needed to view it).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from html import escape
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.typing import RcKeyType
from pydantic import ValidationError

from ledger.analytics import (
    ChannelOutcomes,
    ChannelRow,
    Collections,
    Outstanding,
    Report,
    Settlement,
    build_report,
    duration_unit,
    format_duration,
    format_timestamp,
    format_yuan,
)
from schemas.events import Event, parse_event
from streams.errors import LedgerError
from streams.logread import read_log
from streams.settings import LedgerSettings

# Channels avoid green, red, purple and grey, which the outcomes chart gives a meaning.
PALETTE = ("#4C78A8", "#F58518", "#72B7B2", "#EECA3B", "#9D755D", "#1F3B73", "#FFBF79")
COMPONENT_COLOURS = {"principal": "#3A6A9B", "interest": "#8FB8DE", "fee": "#F2CF5B"}
FAILURE_COLOURS = ("#E45756", "#FF9D98", "#B5393A", "#F2A65A", "#8C2D2D")
SUCCEEDED_COLOUR, REVERSED_COLOUR, IN_FLIGHT_COLOUR = "#54A24B", "#B279A2", "#BAB0AC"
INK, MUTED, RULE = "#202124", "#5F6368", "#E3E5E8"
STYLE: dict[RcKeyType, object] = {
    "font.family": "DejaVu Sans", "font.size": 9.5, "text.color": INK, "legend.frameon": False,
    "axes.edgecolor": "#9AA0A6", "axes.labelcolor": MUTED, "axes.grid": True,
    "axes.axisbelow": True, "axes.spines.top": False, "axes.spines.right": False,
    "grid.color": RULE, "grid.linewidth": 0.8, "xtick.color": MUTED, "ytick.color": MUTED,
    "svg.fonttype": "path",  # glyphs as paths: the page renders the same without the font
    "svg.hashsalt": "ledger-report",  # stable element ids, so the same log gives the same page
}  # fmt: skip
MAX_BARS = 45  # above this many business days, draw the outstanding series as an area


def write_report(
    settings: LedgerSettings, out_dir: Path, title: str, generated_at: datetime
) -> Path:
    """Read `ledger.events` to its current end and write `out_dir/index.html`; return its path."""
    report = build_report(read_events(settings))
    page = render_page(report, title, generated_at)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    # 1. Write beside the page, 2. rename over it: a reader never sees half a page.
    partial = path.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return path


def read_events(settings: LedgerSettings) -> Iterator[tuple[Event, int]]:
    """Every committed event with its record timestamp; a record that does not parse stops the
    report, since only the decider writes this topic (an older reader than the writer?)."""
    for record in read_log(settings, "ledger.events"):
        if record.value is None:
            continue
        try:
            yield parse_event(record.value), record.timestamp_ms
        except ValidationError as error:
            raise LedgerError(
                f"the event at partition {record.partition} offset {record.offset} does not "
                f"parse ({error.error_count()} errors): upgrade ledger to the writers' version"
            ) from error


def charts(report: Report) -> dict[str, str]:
    """The four charts as inline SVG, by name."""
    with matplotlib.rc_context(STYLE):
        return {
            "collections": _svg(collections_chart(report.collections), "collections"),
            "outstanding": _svg(outstanding_chart(report.outstanding), "outstanding"),
            "outcomes": _svg(outcomes_chart(report.outcomes), "outcomes"),
            "settlement": _svg(settlement_chart(report.settlement), "settlement"),
        }


def _svg(figure: Figure, name: str) -> str:
    """The figure as an <svg> element for inlining: no XML prolog, no fixed size (CSS scales it),
    no RDF metadata, and every id prefixed with the chart's name (ids are global in a page)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    root_end = svg.index(">")
    root = re.sub(r'\s(width|height)="[^"]*"', "", svg[:root_end])
    svg = re.sub(r"<metadata>.*?</metadata>", "", root + svg[root_end:], flags=re.DOTALL)
    for marker in ('id="', 'href="#', "url(#"):
        svg = svg.replace(marker, f"{marker}{name}-")
    figure.clear()
    return svg


# Charts: one function each. Amounts are plotted in yuan: floats exist from here on only.


def collections_chart(series: Collections) -> Figure:
    figure, axis = _figure()
    if not series.dates:
        return _nothing(figure, axis, "Nothing collected yet")
    positions = list(range(len(series.dates)))
    above, below = [0.0] * len(positions), [0.0] * len(positions)
    for channel, colour in _channel_colours(list(series.collected_minor)).items():
        collected = _yuan(series.collected_minor[channel])
        axis.bar(positions, collected, 0.72, bottom=above, color=colour, label=channel)
        above = [a + c for a, c in zip(above, collected, strict=True)]
        reversed_ = [-r for r in _yuan(series.reversed_minor[channel])]
        if any(reversed_):
            axis.bar(positions, reversed_, 0.72, bottom=below, color="white", edgecolor=colour,
                     hatch="////", linewidth=0.8)  # fmt: skip
            below = [b + r for b, r in zip(below, reversed_, strict=True)]
    if any(below):
        axis.axhline(0, color=MUTED, linewidth=0.8)
        # One legend entry for every channel's reversals: the hatch says "reversed".
        axis.add_patch(Rectangle((0, 0), 0, 0, facecolor="white", edgecolor=MUTED, hatch="////",
                                 linewidth=0.8, label="reversed"))  # fmt: skip
    if len(positions) <= 12:
        for x, total in zip(positions, above, strict=True):
            axis.annotate(_axis_yuan(total), (x, total), xytext=(0, 3), textcoords="offset points",
                          ha="center", fontsize=8, color=MUTED)  # fmt: skip
    axis.margins(y=0.12)
    _date_axis(axis, series.dates)
    _yuan_axis(axis)
    _legend_above(axis)
    return figure


def outstanding_chart(series: Outstanding) -> Figure:
    figure, axis = _figure()
    if not series.dates:
        return _nothing(figure, axis, "No loan yet")
    positions = list(range(len(series.dates)))
    layers = [(name, _yuan(v)) for name, v in series.by_component_minor.items() if any(v)]
    if len(positions) > MAX_BARS:
        axis.stackplot(positions, *[values for _, values in layers], alpha=0.9,
                       labels=[name for name, _ in layers],
                       colors=[COMPONENT_COLOURS[name] for name, _ in layers])  # fmt: skip
    else:
        bottom = [0.0] * len(positions)
        for name, values in layers:
            axis.bar(positions, values, 0.72, bottom=bottom, color=COMPONENT_COLOURS[name],
                     label=name)  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    _date_axis(axis, series.dates)
    _yuan_axis(axis)
    _legend_above(axis)
    return figure


def outcomes_chart(outcomes: Sequence[ChannelOutcomes]) -> Figure:
    figure, axis = _figure(height=max(2.6, 1.3 + 0.5 * len(outcomes)))
    if not outcomes:
        return _nothing(figure, axis, "No deduction attempt yet")
    rows = list(range(len(outcomes)))
    left = [0] * len(rows)
    segments = _outcome_segments(outcomes)
    widest = max(sum(values[i] for _, _, values in segments) for i in rows)
    for label, colour, values in segments:
        axis.barh(rows, values, 0.62, left=left, color=colour, label=label)
        for row, (start, count) in enumerate(zip(left, values, strict=True)):
            if count and count >= 0.05 * widest:
                axis.text(start + count / 2, row, f"{count:,}", ha="center", va="center",
                          fontsize=8, color=_text_on(colour))  # fmt: skip
        left = [a + b for a, b in zip(left, values, strict=True)]
    axis.set_yticks(rows, [o.channel for o in outcomes])
    room = max(0.0, (3 - len(rows)) / 2)  # at least three bars' room, so one bar is not a slab
    axis.set_ylim(len(rows) - 0.5 + room, -0.5 - room)  # top to bottom, in channel order
    axis.grid(axis="y", visible=False)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("attempts")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(4, len(segments)),
                fontsize=8.5)  # fmt: skip
    return figure


def _outcome_segments(outcomes: Sequence[ChannelOutcomes]) -> list[tuple[str, str, list[int]]]:
    codes = sorted({code for outcome in outcomes for code in outcome.failed_by_code})
    segments = [
        ("succeeded", SUCCEEDED_COLOUR, [o.succeeded for o in outcomes]),
        ("reversed", REVERSED_COLOUR, [o.reversed for o in outcomes]),
    ]
    for index, code in enumerate(codes):
        colour = FAILURE_COLOURS[index % len(FAILURE_COLOURS)]
        segments.append(
            (f"failed: {code}", colour, [o.failed_by_code.get(code, 0) for o in outcomes])
        )
    segments.append(("in flight", IN_FLIGHT_COLOUR, [o.in_flight for o in outcomes]))
    return [segment for segment in segments if any(segment[2])]


def settlement_chart(settlement: Settlement) -> Figure:
    figure, axis = _figure()
    if not settlement.durations_ms:
        return _nothing(figure, axis, "No deduction settled yet")
    divisor, unit = duration_unit(settlement.durations_ms[-1])
    values = [d / divisor for d in settlement.durations_ms]
    bins = min(40, max(8, round(2 * len(values) ** 0.5)))
    axis.hist(values, bins=bins, color=PALETTE[0], edgecolor="white", linewidth=0.6)
    for (percentile, at_ms), style in zip(
        settlement.percentiles_ms.items(), ("-", "--", ":"), strict=True
    ):
        axis.axvline(at_ms / divisor, color=INK, linestyle=style, linewidth=1.1,
                     label=f"p{percentile} {format_duration(at_ms)}")  # fmt: skip
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel(f"request to settlement ({unit})")
    axis.set_ylabel("settlements")
    _legend_above(axis)
    return figure


def _legend_above(axis: Axes) -> None:
    """Above the plot, in one row, where it cannot hide a bar."""
    handles, labels = axis.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "reversed")  # reversals last
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    axis.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.02), borderaxespad=0,
                ncol=len(labels), fontsize=8.5, handlelength=1.4, columnspacing=1.2)  # fmt: skip


def _figure(height: float = 3.2) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(6.4, height))
    return figure, figure.add_subplot()


def _nothing(figure: Figure, axis: Axes, text: str) -> Figure:
    figure.set_size_inches(6.4, 1.2)
    axis.set_axis_off()
    axis.text(0.5, 0.5, text, ha="center", va="center", color=MUTED, fontsize=12,
              transform=axis.transAxes)  # fmt: skip
    return figure


def _date_axis(axis: Axes, dates: Sequence[date]) -> None:
    """Business dates as categories (a day without activity takes no room), at most ~10 labels."""
    step = -(-len(dates) // 10)
    ticks = list(range(0, len(dates), step))
    axis.set_xticks(ticks, [f"{dates[i]:%b} {dates[i].day}" for i in ticks])
    room = max(0.0, (4 - len(dates)) / 2)  # at least four bars' room: one bar is not a wall
    axis.set_xlim(-0.6 - room, len(dates) - 0.4 + room)
    axis.grid(axis="x", visible=False)
    first, last = dates[0].year, dates[-1].year
    axis.set_xlabel(f"business date ({first}{f'-{last}' if last != first else ''})")


def _yuan_axis(axis: Axes) -> None:
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _axis_yuan(value)))
    axis.yaxis.set_major_locator(MaxNLocator(6))


def _axis_yuan(value: float) -> str:
    return f"{'-' if value < 0 else ''}¥{abs(value):,.0f}"


def _yuan(amounts: Sequence[int]) -> list[float]:
    return [amount / 100 for amount in amounts]


def _channel_colours(channels: Sequence[str]) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sorted(channels))}


def _text_on(colour: str) -> str:
    """White on dark fills, ink on light ones (by relative luminance)."""
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return INK if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 150 else "white"


# The page: inline CSS, headline cards, the four charts with their captions, a table per channel.

CSS = """
:root { --ink: #202124; --muted: #5f6368; --rule: #e3e5e8; --bg: #f5f6f8; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
  "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 28px 48px; }
h1 { font-size: 27px; font-weight: 650; letter-spacing: -0.01em; margin: 0 0 4px; }
h2 { font-size: 16px; font-weight: 600; margin: 0 0 10px; }
.sub, footer, figcaption, .note { color: var(--muted); }
.sub { margin: 0; font-size: 13.5px; }
.panel, .card { background: var(--card); border: 1px solid var(--rule); border-radius: 10px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(175px, 1fr)); gap: 12px;
  margin: 24px 0 18px; }
.card { padding: 14px 16px; }
.label { font-size: 11.5px; text-transform: uppercase; letter-spacing: 0.07em;
  color: var(--muted); }
.value { font-size: 23px; font-weight: 650; font-variant-numeric: tabular-nums; white-space: nowrap;
  margin: 2px 0 1px; }
.note { font-size: 12.5px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(500px, 1fr)); gap: 16px; }
figure { margin: 0; padding: 18px 20px 16px; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { font-size: 13px; margin-top: 10px; max-width: 70ch; }
section.panel { margin-top: 16px; padding: 18px 20px 8px; overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums;
  font-size: 14px; }
th, td { padding: 8px 12px; text-align: right; border-bottom: 1px solid var(--rule);
  white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { font-size: 11.5px; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted);
  font-weight: 600; }
tfoot td { font-weight: 650; border-bottom: 0; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 8px; }
.empty { padding: 48px 28px; text-align: center; margin-top: 24px; }
.empty p { margin: 6px 0; }
footer { font-size: 12.5px; margin-top: 20px; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", monospace; }
"""


def render_page(report: Report, title: str, generated_at: datetime) -> str:
    """The whole HTML document."""
    stamp = f"{generated_at:%Y-%m-%d %H:%M} UTC"
    body = _empty_body(stamp) if report.events == 0 else _report_body(report, stamp)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body><main><header><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )


def _empty_body(stamp: str) -> str:
    return (
        f'<p class="sub">Generated {stamp}.</p></header>'
        '<div class="panel empty" id="empty"><h2>Nothing to report yet</h2>'
        "<p>The event log is empty: no loan has been opened.</p>"
        '<p class="note">Run <code>ledger report</code> again once the ledger has recorded '
        "events.</p></div>"
    )


def _report_body(report: Report, stamp: str) -> str:
    span = ""
    if report.first_timestamp_ms is not None and report.last_timestamp_ms is not None:
        first, last = report.first_timestamp_ms, report.last_timestamp_ms
        span = f" Events recorded from {format_timestamp(first)} to {format_timestamp(last)}."
    skipped = report.repeats_skipped
    repeats = f", {skipped:,} repeated records counted once" if skipped else ""
    if report.quarantined:
        listed = "; ".join(escape(line) for line in report.quarantined[:20])
        repeats += (
            f". ALERT: {len(report.quarantined)} loans quarantined by a gap in their log, their "
            f"later events left out ({listed})"
        )
    svgs = charts(report)
    return (
        f'<p class="sub">{_count(report.headline.loans, "loan")}, '
        f"{_count(report.events, 'event')} on the log.{span}</p></header>"
        f"{_cards(report)}"
        f'<div class="charts">{"".join(_figure_html(report, svgs))}</div>'
        f"{_channel_table(report)}"
        f"<footer>Generated {stamp} from the whole of <code>ledger.events</code>{repeats}. "
        "Amounts in yuan (CNY); the ledger itself counts integer fen.</footer>"
    )


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'s' if number != 1 else ''}"


def _cards(report: Report) -> str:
    h = report.headline
    rate = "n/a" if h.success_rate_bps is None else f"{h.success_rate_bps / 100:.1f} %"
    net = h.collected_minor - h.reversed_minor
    collected_note = f"{format_yuan(net)} net of reversals" if h.reversed_minor else "no reversals"
    cards = [
        ("loans", "Loans", f"{h.loans:,}", "opened", None),
        ("collected", "Money collected", format_yuan(h.collected_minor), collected_note,
         h.collected_minor),
        ("refunds", "Refunds", format_yuan(h.refunded_minor), "confirmed by the channels",
         h.refunded_minor),
        ("outstanding", "Outstanding", format_yuan(h.outstanding_minor),
         "principal, interest and fees owed", h.outstanding_minor),
        ("attempts", "Deduction attempts", f"{h.attempts:,}",
         f"{h.attempts - h.decided:,} still in flight", None),
        ("success-rate", "Success rate", rate, f"{h.succeeded:,} of {h.decided:,} answered", None),
    ]  # fmt: skip
    return '<div class="cards">' + "".join(_card(*card) for card in cards) + "</div>"


def _card(name: str, label: str, value: str, note: str, minor: int | None) -> str:
    data = "" if minor is None else f' data-minor="{minor}"'
    return (
        f'<div class="card" id="headline-{name}"{data}><div class="label">{label}</div>'
        f'<div class="value">{value}</div><div class="note">{escape(note)}</div></div>'
    )


def _figure_html(report: Report, svgs: dict[str, str]) -> Iterator[str]:
    for name, heading, caption in _captions(report):
        yield (
            f'<figure class="panel chart" id="chart-{name}"><h2>{heading}</h2>{svgs[name]}'
            f"<figcaption>{caption}</figcaption></figure>"
        )


def _captions(report: Report) -> list[tuple[str, str, str]]:
    return [
        ("collections", "Collections per business day",
         "Money collected each business day, stacked by channel: a success counts on the "
         "business date its attempt started on, a reversal (hatched, below zero) on the date it "
         "was recorded."),
        ("outstanding", "Outstanding receivables",
         "Principal, interest and fees still owed by all loans at the end of each business day, "
         "from every posting folded in log order. A loan's postings count on its latest closed "
         "business date, those before its first close on that first date."),
        ("outcomes", "Deduction outcomes by channel",
         "Every deduction attempt by where it stands now: succeeded, reversed after succeeding, "
         "failed (by the channel's code) or still in flight."),
        ("settlement", "Time from request to settlement", _settlement_caption(report.settlement)),
    ]  # fmt: skip


def _settlement_caption(settlement: Settlement) -> str:
    if not settlement.durations_ms:
        return "No deduction has settled yet."
    marks = ", ".join(f"p{p} {format_duration(v)}" for p, v in settlement.percentiles_ms.items())
    return (
        f"From DeductionStarted to DeductionSucceeded over {len(settlement.durations_ms):,} "
        f"settlements, by Kafka record timestamps (the processors' clocks): {marks}."
    )


def _channel_table(report: Report) -> str:
    if not report.channels:
        return ""
    colours = _channel_colours([row.channel for row in report.channels])
    head = "".join(f"<th>{name}</th>" for name in TABLE_COLUMNS)
    rows = "".join(
        f'<tr><td><span class="swatch" style="background:{colours[row.channel]}"></span>'
        f"{escape(row.channel)}</td>{_cells(_row_figures(row))}</tr>"
        for row in report.channels
    )
    total = [
        sum(column) for column in zip(*(_row_figures(r) for r in report.channels), strict=True)
    ]
    several = len(report.channels) > 1
    foot = f"<tfoot><tr><td>All channels</td>{_cells(total)}</tr></tfoot>" if several else ""
    return (
        '<section class="panel" id="channels"><h2>By channel</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>{foot}</table></section>"
    )


TABLE_COLUMNS = ("Channel", "Attempts", "Succeeded", "Failed", "In flight", "Unknowns resolved",
                 "Collected", "Reversed", "Refunds")  # fmt: skip
MONEY_COLUMNS = 3  # the last three figures of a row are amounts in fen


def _row_figures(row: ChannelRow) -> list[int]:
    return [row.attempts, row.succeeded, row.failed, row.in_flight, row.unknowns_resolved,
            row.collected_minor, row.reversed_minor, row.refunded_minor]  # fmt: skip


def _cells(figures: Sequence[int]) -> str:
    counts, amounts = figures[:-MONEY_COLUMNS], figures[-MONEY_COLUMNS:]
    return "".join(f"<td>{n:,}</td>" for n in counts) + "".join(
        f"<td>{format_yuan(m)}</td>" for m in amounts
    )
