"""A run directory: the checkpoint a restarted coordinator resumes from and
the JSONL logs of rounds and events.

Order of writes after each round: the round's line is appended to
rounds.jsonl (flushed and fsynced), then the checkpoint replaces the old one
atomically (fedcore.atomic: temporary file + fsync + os.replace + fsync of the
folder). A crash between the two
leaves one extra line, for a round the checkpoint does not contain; on resume
`trim_rounds` drops it, so the round is run again and logged once.
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional

from fedcore.atomic import atomic_write

__all__ = ["RunStore"]


class RunStore:
    """Files of one coordinator run under `root`."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.checkpoint_path = os.path.join(root, "checkpoint.fedc")
        self.rounds_path = os.path.join(root, "rounds.jsonl")
        self.events_path = os.path.join(root, "events.jsonl")
        self.report_path = os.path.join(root, "report.json")
        self.plot_path = os.path.join(root, "rounds.png")

    def load_checkpoint(self) -> Optional[bytes]:
        if not os.path.exists(self.checkpoint_path):
            return None
        with open(self.checkpoint_path, "rb") as handle:
            return handle.read()

    def save_checkpoint(self, blob: bytes) -> None:
        atomic_write(self.checkpoint_path, blob)

    def _append(self, path: str, record: Mapping[str, Any], sync: bool) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            if sync:
                handle.flush()
                os.fsync(handle.fileno())

    def append_round(self, record: Mapping[str, Any]) -> None:
        self._append(self.rounds_path, record, sync=True)

    def append_event(self, record: Mapping[str, Any]) -> None:
        self._append(self.events_path, record, sync=False)

    def read_rounds(self) -> List[Dict[str, Any]]:
        return self._read_lines(self.rounds_path)

    def issued_plans(self) -> Dict[str, int]:
        """plan id -> round of every round this run directory's coordinators opened. Read a line
        at a time, and only the "open" lines are parsed: a restart's memory and work do not grow
        with what a flood once left in events.jsonl."""
        plans = {}
        for event in self._read_lines(self.events_path, strict=False, containing='"event": "open"'):
            plan_id, number = event.get("plan_id"), event.get("round")
            if event.get("event") == "open" and isinstance(plan_id, str) and isinstance(number, int):
                plans[plan_id] = number
        return plans

    def _read_lines(self, path: str, strict: bool = True, containing: str = "") -> List[Dict[str, Any]]:
        """The JSON objects of a JSONL log, a line at a time; `strict`: a bad line other than a torn
        last one is an error. `containing`: only lines with this text are parsed."""
        if not os.path.exists(path):
            return []
        records: List[Dict[str, Any]] = []
        torn = 0  # the number of a bad line, an error only if a good one follows
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip() or containing not in line:
                    continue
                if torn and strict:
                    raise RuntimeError(f"{path}:{torn}: not a JSON line")
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    torn = number  # a crash while appending tears the last line only: that round reruns
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def trim_rounds(self, completed: int) -> List[Dict[str, Any]]:
        """Keep the lines of rounds 1..completed (the checkpoint's); return them."""
        records = self.read_rounds()
        kept = [r for r in records if int(r.get("round", 0)) <= completed]
        if len(kept) != len(records):
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            atomic_write(self.rounds_path, text.encode("utf-8"))
        return kept
