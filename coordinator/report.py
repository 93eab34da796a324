"""What a run shows: the live per-round console table and the final PNG."""

import logging
import os
from typing import Any, Dict, List, Mapping, Sequence

__all__ = ["TABLE_HEADER", "table_row", "plot_rounds"]

log = logging.getLogger(__name__)

TABLE_HEADER = (f"{'round':>5} {'sel':>4} {'ok':>4} {'miss':>4} {'rej':>4} {'late':>4} "
                f"{'accuracy':>8} {'up bytes':>10} {'down bytes':>11} {'time s':>7} {'ovh s':>6}")


def _cell(value: Any, width: int, digits: int = 2) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}f}"
    return f"{value:>{width}}"


def table_row(record: Mapping[str, Any]) -> str:
    accuracy = record.get("accuracy")
    return " ".join([
        _cell(record["round"], 5),
        _cell(len(record["selected"]), 4),
        _cell(len(record["accepted"]), 4),
        _cell(len(record["missing"]), 4),
        _cell(len(record["rejected"]), 4),
        _cell(len(record["late"]), 4),
        _cell(None if accuracy is None else 100.0 * accuracy, 8),
        _cell(record["bytes_up"], 10),
        _cell(record["bytes_down"], 11),
        _cell(record["round_time_s"], 7),
        _cell(record.get("overhead_s"), 6),
    ])


def plot_rounds(records: Sequence[Mapping[str, Any]], path: str, title: str) -> bool:
    """Accuracy and cumulative bytes per round as a PNG; False (logged) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot at %s (pip install matplotlib)", path)
        return False
    rounds = [r["round"] for r in records]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    accuracy: List[Dict[str, float]] = [r for r in records if r.get("accuracy") is not None]
    if accuracy:
        left.plot([r["round"] for r in accuracy], [100.0 * r["accuracy"] for r in accuracy], marker="o")
    left.set_xlabel("round")
    left.set_ylabel("held-out accuracy (%)")
    left.grid(True, alpha=0.3)
    up, down, total_up, total_down = [], [], 0, 0
    for record in records:
        total_up += record["bytes_up"]
        total_down += record["bytes_down"]
        up.append(total_up / 1e6)
        down.append(total_down / 1e6)
    right.plot(rounds, up, marker="o", label="uplink")
    right.plot(rounds, down, marker="s", label="downlink")
    right.set_xlabel("round")
    right.set_ylabel("cumulative MB (encoded messages)")
    right.legend()
    right.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
