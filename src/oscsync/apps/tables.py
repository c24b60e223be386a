"""Score tables for people and files: ``timetag sweep`` rows, aligned text tables (``sweep``,
``stats``, ``demo``), CSV, and the sweep's PNG plot (matplotlib, imported only for ``--plot``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

from oscsync.apps.labrecords import SessionResult
from oscsync.apps.scoring import score_follower

SWEEP_COLUMNS = [
    "offset_ms",
    "ioi_std_ms",
    "max_grid_error_ms",
    "arrived_late_pct",
    "played_late_pct",
    "late_pct",
    "lost",
    "received",
]


def sweep_row(offset: float, result: SessionResult) -> dict[str, Any]:
    """One row of ``timetag sweep``: the (single) follower's score at this offset."""
    follower = result.followers[0]
    row = {"offset_ms": round(offset * 1e3, 3), **score_follower(result, follower).row()}
    return {column: row[column] for column in SWEEP_COLUMNS}


def format_table(rows: Sequence[dict[str, Any]], first: str = "offset_ms") -> str:
    """The sweep/stats table for people: aligned columns, units in the header."""
    headers = {
        "offset_ms": "offset",
        "file": "log",
        "ioi_std_ms": "inter-onset std",
        "max_grid_error_ms": "max |onset-grid|",
        "arrived_late_pct": "arrived late",
        "played_late_pct": "played late",
        "late_pct": "late",
        "lost": "lost",
        "received": "ticks",
    }
    # The two kinds of late side by side; their sum (late_pct) stays in the files and the plot.
    columns = [first] + [c for c in SWEEP_COLUMNS if c not in ("offset_ms", "late_pct")]

    def cell(column: str, value: Any) -> str:
        if column == "offset_ms":
            return f"{value:g} ms"
        if column in ("ioi_std_ms", "max_grid_error_ms"):
            return "-" if value is None or value != value else f"{value:.3f} ms"
        if column.endswith("late_pct"):
            return "-" if value is None or value != value else f"{value:.1f} %"
        return str(value)

    table = [[headers[c] for c in columns]]
    table += [[cell(c, row.get(c)) for c in columns] for row in rows]
    return aligned(table, left_columns=1 if first == "file" else 0)


def aligned(table: Sequence[Sequence[str]], left_columns: int = 0) -> str:
    """A header row and rows of cells as text: a dashed rule under the header, the first
    ``left_columns`` columns left-aligned (names), the others right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for number, row in enumerate(table):
        cells = [
            text.ljust(width) if i < left_columns else text.rjust(width)
            for i, (text, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_csv(out: IO[str], rows: Sequence[dict[str, Any]]) -> None:
    """The rows as CSV into ``out`` (opened with newline="\n": csv writes its own \r\n)."""
    import csv

    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else SWEEP_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def plot_sweep(out: IO[bytes], rows: Sequence[dict[str, Any]], title: str) -> None:
    """Onset jitter and late % against the forward offset, as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    offsets = [row["offset_ms"] for row in rows]
    figure, (jitter_axes, late_axes) = plt.subplots(2, 1, sharex=True, figsize=(7, 6))
    jitter_axes.plot(offsets, [row["ioi_std_ms"] for row in rows], "o-", label="inter-onset std")
    jitter_axes.plot(
        offsets, [row["max_grid_error_ms"] for row in rows], "s--", label="max |onset − grid|"
    )
    jitter_axes.set_ylabel("ms")
    jitter_axes.legend()
    jitter_axes.grid(True, alpha=0.3)
    jitter_axes.set_title(title)
    late_axes.plot(
        offsets, [row["arrived_late_pct"] for row in rows], "o-", color="tab:red", label="arrived"
    )
    late_axes.plot(
        offsets, [row["played_late_pct"] for row in rows], "s--", color="tab:purple", label="played"
    )
    late_axes.legend()
    late_axes.set_ylabel("late ticks (%)")
    late_axes.set_xlabel("forward offset (ms)")
    late_axes.set_ylim(-2, 102)
    late_axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
