"""Plots and tables of federated runs (matplotlib, Agg backend)."""

import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

__all__ = ["plot_rounds", "pareto_front", "plot_pareto", "plot_pruning", "format_table"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _plain_log_ticks(axis) -> None:
    """Label only the decades of a log axis: minor labels collide."""
    from matplotlib.ticker import NullFormatter

    axis.xaxis.set_minor_formatter(NullFormatter())


def plot_rounds(runs: Mapping[str, List[Dict[str, Any]]], path: str, title: str = ""):
    """Accuracy against rounds and against cumulative bytes (both directions), one line a run,
    under `title` (say which data, model and seed the lines are); one legend for both panels."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, (by_round, by_bytes) = plt.subplots(1, 2, figsize=(12, 4.6))
    for label, rows in runs.items():
        points = [r for r in rows if "accuracy" in r]
        by_round.plot([r["round"] for r in points], [100 * r["accuracy"] for r in points], marker=".", label=label)
        by_bytes.plot([r["cum_bytes"] / 1e6 for r in points], [100 * r["accuracy"] for r in points], marker=".",
                      label=label)
    by_round.set_xlabel("round")
    by_round.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    by_round.set_title("accuracy against rounds", fontsize=9)
    by_bytes.set_xlabel("cumulative MB (up + down)")
    by_bytes.set_xscale("log")
    by_bytes.set_title("accuracy against bytes sent", fontsize=9)
    _plain_log_ticks(by_bytes)
    for axis in (by_round, by_bytes):
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    handles, labels = by_round.get_legend_handles_labels()
    columns = min(4, max(1, len(labels)))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    rows_of_legend = -(-len(labels) // columns)
    fig.tight_layout(rect=(0, 0.04 + 0.045 * rows_of_legend, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig  # closed, for inspection


def pareto_front(points: Sequence[Tuple[str, float, float]]) -> List[Tuple[str, float, float]]:
    """The (label, total bytes, accuracy) points no other point beats on both: fewer bytes and higher accuracy."""
    front = []
    best = -math.inf
    for label, size, accuracy in sorted(points, key=lambda p: (p[1], -p[2])):
        if accuracy > best:
            front.append((label, size, accuracy))
            best = accuracy
    return front


def _plain_ticks(axis, values: Sequence[float]) -> None:
    """Readable ticks 1-2-5 per decade over the span of `values` on a log x axis."""
    low, high = min(values), max(values)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5) if low / 1.5 <= m * 10.0 ** e <= high * 1.5]
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.minorticks_off()


MARKERS = "osD^vP*Xh<>p8"


def plot_pareto(points: Sequence[Tuple[str, float, float]], path: str, title: str = ""):
    """Accuracy against total bytes: each method its own marker and colour, named in the
    legend with its figures (labels beside close points overprint), the front as a line."""
    plt = _pyplot()
    front = pareto_front(points)
    on_front = {label for label, _, _ in front}
    fig, axis = plt.subplots(figsize=(10, 4.8))
    axis.plot([p[1] / 1e6 for p in front], [100 * p[2] for p in front], "-", color="0.3", zorder=1,
              label="Pareto front")
    for number, (label, size, accuracy) in enumerate(points):
        axis.scatter(size / 1e6, 100 * accuracy, s=46 if label in on_front else 30, zorder=3,
                     marker=MARKERS[number % len(MARKERS)], color=f"C{number % 10}",
                     edgecolors="black" if label in on_front else "none",
                     label=f"{label}: {size / 1e6:.2f} MB, {100 * accuracy:.2f}%{' (front)' if label in on_front else ''}")
    axis.set_xscale("log")
    _plain_ticks(axis, [p[1] / 1e6 for p in points])
    axis.set_xlabel("total MB (up + down, all rounds)")
    axis.set_ylabel("final test accuracy (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    return fig  # closed, for inspection


def plot_pruning(rows: Sequence[Mapping[str, Any]], path: str, title: str = "") -> None:
    """Accuracy and uplink message size against the pruning rate, one line per dataset and
    kind of pruning (rows: dataset, pruning, rate, accuracy_mean, message_bytes_mean)."""
    plt = _pyplot()
    fig, (accuracy, size) = plt.subplots(1, 2, figsize=(10, 4))
    lines: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for row in rows:
        if "rate" in row:
            lines.setdefault((row["dataset"], row["pruning"]), []).append(row)
    for (dataset, kind), points in lines.items():
        rates = [100 * p["rate"] for p in points]
        accuracy.plot(rates, [p["accuracy_mean"] for p in points], "o-", label=f"{dataset} {kind}")
        size.plot(rates, [p["message_bytes_mean"] / 1e3 for p in points], "o-", label=f"{dataset} {kind}")
    accuracy.set_ylabel("final test accuracy (%)")
    size.set_ylabel("kB per uplink message")
    for axis in (accuracy, size):
        axis.set_xlabel("pruning rate (%)")
        axis.grid(alpha=0.3)
    accuracy.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width text table (first column left-aligned, the others right-aligned)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(parts))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
