"""The testbed's dashboard: what a run looks like while it runs, served by the coordinator
(`--dashboard 127.0.0.1:8080`), and the same page as one self-contained HTML file for a
finished run (`python -m coordinator report RUN_DIR`).

`RunView` keeps what the page shows. It is fed the records the coordinator writes to
`events.jsonl` and `rounds.jsonl` (and presence heartbeats, which are not logged), so a
report rebuilt from a run folder shows the numbers the live page showed. `DashboardServer`
serves the page, its assets (no CDN: labs and boards are often offline) and the view,
live through Server-Sent Events. Everything a device sends (ids, reasons, capabilities) is
data: the page sets text, never HTML.
"""

import collections
import hmac
import http.server
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

__all__ = ["DashboardServer", "RunView", "is_loopback", "new_token", "render_report", "view_from_run_dir"]

log = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
ASSETS = {  # what the page loads, and nothing else is served
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
}
MAX_DEVICES = 10_000  # as many as the coordinator keeps presence for
MAX_REJECTIONS = 200  # the log keeps the latest
MAX_STREAMS = 16  # live pages at once
TEXT = 300  # characters of any device-sent text kept for the page


def _text(value: Any, limit: int = TEXT) -> str:
    return str(value)[:limit]


def _count(value: Any) -> int:
    """A list of clients (the coordinator's records) or their number (the simulation's)."""
    return value if isinstance(value, int) else len(value or [])


class RunView:
    """The dashboard's state of one run; thread-safe. `version` grows with every change and
    `wait(version, timeout)` returns once it has moved past `version`."""

    def __init__(self, header: Optional[Mapping[str, Any]] = None):
        self._lock = threading.Condition()
        self.version = 0
        self.header: Dict[str, Any] = dict(header or {})
        self.header.setdefault("state", "waiting for devices")
        self.rounds: List[Dict[str, Any]] = []
        self.devices: Dict[str, Dict[str, Any]] = {}
        self.rejections: Deque[Dict[str, Any]] = collections.deque(maxlen=MAX_REJECTIONS)
        self.current_round = 0

    # ------------------------------------------------------------ feeding

    def set_state(self, state: str, **fields: Any) -> None:
        with self._lock:
            self.header["state"] = _text(state, 1000)
            self.header.update(fields)
            self._changed()

    def seen(self, client: str, when: float, capabilities: Optional[Mapping[str, Any]] = None) -> None:
        """A presence message: the device is online as of `when` (epoch seconds)."""
        with self._lock:
            device = self._device(client)
            if device is None:
                return
            device["online"], device["last_seen"] = True, when
            if capabilities:
                device["backend"] = _text(capabilities.get("backend") or capabilities.get("trainer") or "")
                fps = capabilities.get("fps")
                device["fps"] = fps if isinstance(fps, (int, float)) and not isinstance(fps, bool) else None
            self._changed()

    def apply_event(self, record: Mapping[str, Any]) -> None:
        """One record of events.jsonl."""
        kind, when = record.get("event"), record.get("time")
        with self._lock:
            if kind == "join":
                device = self._device(record.get("client", ""))
                if device is not None:
                    device["online"], device["last_seen"] = True, when
                    caps = record.get("capabilities")
                    if isinstance(caps, Mapping):
                        device["backend"] = _text(caps.get("backend") or caps.get("trainer") or "")
            elif kind == "leave":
                device = self._device(record.get("client", ""))
                if device is not None:
                    device["online"] = False
            elif kind == "open":
                self.current_round = int(record.get("round", 0))
                self.header["round"] = self.current_round
                self.header["state"] = "training"
                for client in record.get("selected", []):
                    device = self._device(client)
                    if device is not None:
                        device["selected"] += 1  # (a missed deadline stays red until it answers again)
            elif kind == "update" and record.get("status") != "accepted":
                self._reject(when, record.get("client", "?"), record.get("round"), record.get("status", ""),
                             record.get("reason", ""))
            elif kind == "bad_message":
                topic = str(record.get("topic", ""))
                self._reject(when, topic.rsplit("/", 1)[-1] or "?", None, "bad message", record.get("reason", ""))
            elif kind == "stopped":
                self.header["state"] = "failed: " + _text(record.get("reason", ""), 1000)
            elif kind == "resume":
                self.header["resumed_at_round"] = record.get("completed_rounds")
            else:
                return
            self._changed()

    def apply_round(self, record: Mapping[str, Any]) -> None:
        """One record of rounds.jsonl: the round's figures, and each selected device's part."""
        with self._lock:
            clients = record.get("clients") or {}
            train = [c.get("train_s") for c in clients.values() if isinstance(c.get("train_s"), (int, float))]
            alone = record.get("train_s")  # a simulation's round: no devices, its whole time is training
            slowest = max(train) if train else (float(alone) if isinstance(alone, (int, float)) else 0.0)
            self.rounds.append({
                "round": record.get("round"), "accuracy": record.get("accuracy"), "loss": record.get("loss"),
                "bytes_up": record.get("bytes_up", 0), "bytes_down": record.get("bytes_down", 0),
                "raw_up": record.get("raw_up"), "raw_down": record.get("raw_down"),
                "wire_up": record.get("wire_up"), "wire_down": record.get("wire_down"),
                "round_time_s": record.get("round_time_s"), "train_s": slowest,
                "wait_s": max(0.0, (record.get("round_time_s") or 0.0) - slowest),
                "aggregate_s": record.get("aggregate_s"),
                "accepted": _count(record.get("accepted")), "selected": _count(record.get("selected")),
                "rejected": record.get("rejected_total", _count(record.get("rejected"))),
                "restored": bool(record.get("restored")), "time": record.get("time"),
            })
            for client, part in clients.items():
                device = self._device(client)
                if device is None:
                    continue
                status = part.get("status")
                device["answered"] += status == "accepted"
                device["late"] += status == "late"
                device["rejected_rounds"] += status == "rejected"
                device["missed_deadline"] = status != "accepted"
                if isinstance(part.get("train_s"), (int, float)):
                    device["train_s"].append(float(part["train_s"]))
                device["bytes_sent"] += int(part.get("bytes_up") or 0)
                device["bytes_received"] += int(part.get("bytes_down") or 0) + int(part.get("bytes_full_model") or 0)
            self.header["round"] = record.get("round")
            self.header["state"] = "waiting for devices"
            self._changed()

    def _reject(self, when: Any, client: Any, round_number: Any, status: str, reason: Any) -> None:
        self.rejections.append({"time": when, "client": _text(client, 64), "round": round_number,
                                "status": _text(status, 32), "reason": _text(reason, 1000)})
        device = self._device(str(client))
        if device is not None:
            device["last_reason"] = _text(reason, 1000)

    def _device(self, client: str) -> Optional[Dict[str, Any]]:
        device = self.devices.get(client)
        if device is None:
            if len(self.devices) >= MAX_DEVICES or not client:
                return None
            device = self.devices[client] = {
                "online": False, "last_seen": None, "selected": 0, "answered": 0, "late": 0, "rejected_rounds": 0,
                "last_reason": "", "train_s": [], "bytes_sent": 0, "bytes_received": 0, "backend": "",
                "fps": None, "missed_deadline": False}
        return device

    def _changed(self) -> None:
        self.version += 1
        self._lock.notify_all()

    # ------------------------------------------------------------ reading

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            devices = []
            for client, d in sorted(self.devices.items()):
                row = {k: v for k, v in d.items() if k != "train_s"}
                row["client"] = client
                row["mean_train_s"] = sum(d["train_s"]) / len(d["train_s"]) if d["train_s"] else None
                devices.append(row)
            return {"version": self.version, "header": dict(self.header), "rounds": list(self.rounds),
                    "devices": devices, "rejections": list(self.rejections)}

    def wait(self, version: int, timeout: float) -> int:
        with self._lock:
            self._lock.wait_for(lambda: self.version != version, timeout)
            return self.version


# ---------------------------------------------------------------- the page

def _asset(name: str) -> bytes:
    with open(os.path.join(STATIC, name), "rb") as handle:
        return handle.read()


def _page(data: Optional[Mapping[str, Any]], inline: bool) -> bytes:
    """The page; with `data`, that run's view inlined (a report that needs no server)."""
    html = _asset("dashboard.html").decode("utf-8")
    if inline:
        styles = "<style>%s\n%s</style>" % (_asset("vendor/uPlot.min.css").decode("utf-8"),
                                            _asset("dashboard.css").decode("utf-8"))
        scripts = "<script>%s</script>\n<script>%s</script>" % (
            _asset("vendor/uPlot.iife.min.js").decode("utf-8").replace("</", "<\\/"),
            _asset("dashboard.js").decode("utf-8").replace("</", "<\\/"))
    else:
        styles = ('<link rel="stylesheet" href="static/vendor/uPlot.min.css">'
                  '<link rel="stylesheet" href="static/dashboard.css">')
        scripts = '<script src="static/vendor/uPlot.iife.min.js"></script><script src="static/dashboard.js"></script>'
    # JSON inside <script>: no "<" survives, so no text of a device can close the element.
    payload = json.dumps(data, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026") if data is not None else "null"
    html = html.replace("<!--STYLES-->", styles).replace("<!--SCRIPTS-->", scripts)
    return html.replace("/*DATA*/null", payload).encode("utf-8")


def render_report(view: RunView) -> bytes:
    """One HTML file with the page, its assets and the run's data: opens without a server."""
    return _page(view.snapshot(), inline=True)


def view_from_run_dir(run_dir: str) -> RunView:
    """The view of a finished (or interrupted) run, rebuilt from the files it wrote: the
    coordinator's (report.json, events.jsonl, rounds.jsonl) or the simulation's
    (`python -m training.fl`: summary.json, config.json, rounds.jsonl)."""
    if os.path.isfile(os.path.join(run_dir, "summary.json")) and not os.path.isfile(
            os.path.join(run_dir, "report.json")):
        return _simulation_view(run_dir)
    report_path = os.path.join(run_dir, "report.json")
    header: Dict[str, Any] = {}
    if os.path.isfile(report_path):
        with open(report_path) as handle:
            report = json.load(handle)
        header = {key: report.get(key) for key in ("run", "fingerprint", "config", "raw_model_bytes",
                                                   "rounds_planned")}
    view = RunView(header)
    events, rounds = os.path.join(run_dir, "events.jsonl"), os.path.join(run_dir, "rounds.jsonl")
    if not os.path.isfile(rounds) and not os.path.isfile(events):
        raise FileNotFoundError(f"{run_dir}: no rounds.jsonl or events.jsonl: not a run folder")
    timeline: List[Tuple[float, int, Dict[str, Any]]] = []
    for path, kind in ((events, 0), (rounds, 1)):
        if not os.path.isfile(path):
            continue
        with open(path) as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line of an interrupted run
                if isinstance(record, dict):
                    timeline.append((float(record.get("time") or 0.0), kind, record))
    for _, kind, record in sorted(timeline, key=lambda item: (item[0], item[1])):
        if kind == 0:
            view.apply_event(record)
        else:
            view.apply_round(record)
    if os.path.isfile(report_path):
        view.set_state("failed: " + report["stopped"] if report.get("stopped") else "finished")
        for device in view.devices.values():
            device["online"] = False
    return view


def _simulation_view(run_dir: str) -> RunView:
    with open(os.path.join(run_dir, "summary.json")) as handle:
        summary = json.load(handle)
    settings: Dict[str, Any] = {}
    if os.path.isfile(os.path.join(run_dir, "config.json")):
        with open(os.path.join(run_dir, "config.json")) as handle:
            settings = json.load(handle)
    config = dict(settings.get("federation") or {})
    config.update({k: v for k, v in (settings.get("compression") or {}).items() if k in ("uplink", "downlink")})
    config.setdefault("rounds", summary.get("rounds"))
    raw = 4 * int(summary.get("params_exchanged") or 0)
    view = RunView({"run": summary.get("name"), "fingerprint": "simulation (%s engine)" % summary.get("engine"),
                    "config": config, "raw_model_bytes": raw})
    rounds_path = os.path.join(run_dir, "rounds.jsonl")
    if os.path.isfile(rounds_path):
        with open(rounds_path) as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    view.apply_round(dict(row, round_time_s=row.get("train_s"), raw_up=raw * _count(row.get("accepted")),
                                          raw_down=raw * _count(row.get("selected"))))
    view.set_state("finished")
    return view


# ---------------------------------------------------------------- the server

class DashboardServer:
    """The page and the live view over HTTP, in daemon threads of the coordinator's process.
    A bind address other than loopback needs `token` (?token=... or an Authorization: Bearer
    header); then the token is the only way in."""

    def __init__(self, view: RunView, host: str = "127.0.0.1", port: int = 8080, token: str = ""):
        if not is_loopback(host) and not token:
            raise ValueError(f"--dashboard {host}:{port} listens beyond this machine: give a token "
                             "(--dashboard-token or FL_DASHBOARD_TOKEN)")
        self.view, self.token = view, token
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        server = http.server.ThreadingHTTPServer((host, port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self.host, self.port = host, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        shown = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d/%s" % (shown, self.port, "?token=" + self.token if self.token else "")

    def start(self) -> "DashboardServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def allowed(self, headers: Any, query: Mapping[str, List[str]]) -> bool:
        if not self.token:
            return True
        given = (query.get("token") or [""])[0]
        bearer = headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = given or bearer[7:]
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))


def new_token() -> str:
    return secrets.token_urlsafe(18)


def is_loopback(host: str) -> bool:
    """Whether a bind address serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler(dashboard: DashboardServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "fl-dashboard"
        timeout = 30  # an idle connection does not hold a thread for ever

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug("dashboard %s: " + format, self.address_string(), *args)

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            parts = urlsplit(self.path)
            path = parts.path
            # The page and its assets hold no data; the run's data needs the token, if any.
            if path in ("/state", "/events") and not dashboard.allowed(self.headers, parse_qs(parts.query)):
                self._send(403, b"a token is needed (?token=...)", "text/plain; charset=utf-8")
                return
            if path in ("/", "/index.html"):
                self._send(200, _page(None, inline=False), "text/html; charset=utf-8")
            elif path.startswith("/static/") and path[len("/static/"):] in ASSETS:
                name = path[len("/static/"):]
                self._send(200, _asset(name), ASSETS[name])
            elif path == "/state":
                self._send(200, json.dumps(dashboard.view.snapshot()).encode("utf-8"), "application/json")
            elif path == "/events":
                self._events()
            else:
                self._send(404, b"not found", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(body)

        def _events(self) -> None:
            """Server-Sent Events: the whole view on connect and after every change (at most
            every 0.2 s), a comment every 15 s to keep proxies from closing the stream."""
            if not dashboard._streams.acquire(blocking=False):
                self._send(503, b"too many live pages", "text/plain; charset=utf-8")
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                version = -1
                while True:
                    latest = dashboard.view.wait(version, 15.0)
                    if latest == version:
                        self.wfile.write(b": keepalive\n\n")
                    else:
                        version = latest
                        data = json.dumps(dashboard.view.snapshot(), separators=(",", ":"))
                        self.wfile.write(b"data: " + data.encode("utf-8") + b"\n\n")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the page went away
            finally:
                dashboard._streams.release()

    return Handler
