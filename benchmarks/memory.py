"""Peak memory of a piece of a benchmark, sampled in a thread (psutil)."""

import threading

__all__ = ["PeakMemory"]


class PeakMemory:
    """The largest total RSS seen, sampled in a thread, of this process and (with `ray`) of
    every process Ray started (driver-side workers, raylet, GCS)."""

    def __init__(self, ray: bool = False, every_s: float = 0.2):
        import psutil

        self.psutil, self.ray, self.every_s = psutil, ray, every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _total(self) -> int:
        me = self.psutil.Process()
        total = me.memory_info().rss
        if self.ray:
            for process in self.psutil.process_iter(["cmdline", "memory_info"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if process.pid != me.pid and ("ray::" in cmdline or "/ray/" in cmdline or "raylet" in cmdline):
                    total += process.info["memory_info"].rss if process.info["memory_info"] else 0
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._total())
            except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                pass
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
