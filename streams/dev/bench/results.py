"""The figures of a benchmark run: a table on the terminal and a JSON file.

Goals are reported beside the figures, never asserted: a benchmark is a program that prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Goal:
    """`value >= at_least` (or `<= at_most`) of the figure, or of its ratio when `of_ratio`."""

    text: str
    at_least: float | None = None
    at_most: float | None = None
    of_ratio: bool = False

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        judged = ratio if self.of_ratio else value
        if judged is None:
            return None
        if self.at_least is not None and judged < self.at_least:
            return False
        return not (self.at_most is not None and judged > self.at_most)


@dataclass(frozen=True)
class Figure:
    section: str
    name: str
    value: float | None  # None when it could not be measured (the note says why)
    unit: str
    ratio: float | None = None
    ratio_to: str = ""
    goal: Goal | None = None
    note: str = ""
    failed: bool = False  # could not be measured because the goal is out of reach (saturated)

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return False if self.failed else self.goal.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["goal"] = None if self.goal is None else self.goal.text
        found["met"] = self.met
        return found


@dataclass
class Report:
    run: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)

    def find(self, section: str, name: str) -> Figure | None:
        return next((f for f in self.figures if (f.section, f.name) == (section, name)), None)

    def value(self, section: str, name: str) -> float | None:
        found = self.find(section, name)
        return None if found is None else found.value

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "run": self.run,
            "figures": [f.as_json() for f in self.figures],
            "details": self.details,
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def table(report: Report, title: str) -> Table:
    shown = Table(title=title, title_justify="left")
    for heading, justify in HEADINGS:
        shown.add_column(heading, justify=justify)  # type: ignore[arg-type]
    for figure in report.figures:
        shown.add_row(*_cells(figure))
    return shown


HEADINGS = (
    ("section", "left"),
    ("figure", "left"),
    ("value", "right"),
    ("unit", "left"),
    ("ratio", "right"),
    ("goal", "left"),
    ("met?", "left"),
    ("note", "left"),
)


def _cells(figure: Figure) -> list[str]:
    met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[figure.met]
    shown_ratio = "" if figure.ratio is None else f"{_ratio(figure.ratio)} of {figure.ratio_to}"
    goal = "" if figure.goal is None else figure.goal.text
    return [
        figure.section,
        figure.name,
        _number(figure.value),
        figure.unit,
        shown_ratio,
        goal,
        met,
        figure.note,
    ]


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 else f"{value:.1e}"  # 0.00 would hide the size


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def show(report: Report, console: Console, title: str) -> None:
    console.print(table(report, title))
