"""A real Mosquitto broker for the tests: started on a free loopback port with a
generated config, stopped (or restarted on the same port) by the test."""

import os
import shutil
import socket
import subprocess
import time
from typing import List, Optional

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_mosquitto() -> str:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto, or `make setup` as root)")
    return MOSQUITTO


class Mosquitto:
    """mosquitto -c <generated conf>; `extra` lines are appended to the config
    (e.g. password_file / acl_file for the ACL test)."""

    def __init__(self, folder: str, extra: Optional[List[str]] = None, port: int = 0,
                 lines: Optional[List[str]] = None, cwd: Optional[str] = None):
        self.binary = require_mosquitto()
        self.folder = folder
        self.port = port or free_port()
        self.config = os.path.join(folder, "mosquitto.conf")
        self.log = os.path.join(folder, "mosquitto.log")
        self.cwd = cwd
        if lines is None:
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                     "set_tcp_nodelay true",
                     "log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
        lines = list(lines) + list(extra or [])
        with open(self.config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 5.0) -> "Mosquitto":
        log = open(self.log, "ab")
        self.process = subprocess.Popen([self.binary, "-c", self.config], stdout=log, stderr=log,
                                        cwd=self.cwd)
        log.close()
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self, down_s: float = 0.3) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ThrottledProxy:
    """A TCP relay on a free loopback port to `port`, at most `rate` bytes a second each way:
    a slow uplink, so that a broker can go away in the middle of a transfer. When the broker
    side closes, the client side is closed too (as a real network path would break)."""

    def __init__(self, port: int, rate: float):
        import threading
        self.target, self.rate = port, rate
        self.port = free_port()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(16)
        self._stop = threading.Event()
        self._open: List[socket.socket] = []
        self._threading = threading
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Break every connection going through now (a cable pulled); new ones are accepted."""
        for end in list(self._open):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=1.0)
            except OSError:
                client.close()  # no broker: the device sees a refused connection and retries
                continue
            self._open = [e for e in self._open if e.fileno() != -1] + [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(None)
        try:
            while not self._stop.is_set():
                data = source.recv(4096)
                if not data:
                    break
                sink.sendall(data)
                time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
