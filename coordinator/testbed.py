"""`make testbed` (`python -m coordinator.testbed`): a whole federated testbed
on one machine: a broker, the coordinator and N device processes, each a
separate program talking MQTT exactly as boards on a lab network would.

The coordinator prints the live per-round table; at the end the run folder
holds rounds.jsonl, events.jsonl, report.json, rounds.png, the checkpoint,
every process's log, and testbed.json (the report plus the processes' exit
codes and wall time).

All children share one process group: whatever ends the testbed (the end of
the run, a coordinator that fails, Ctrl-C, SIGTERM, SIGHUP) stops the broker
and every device with it. The embedded broker listens on loopback only: it
takes anyone (no passwords), so nothing outside this machine may reach it.
"""

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from fedcore.console import add_verbosity, show_logs
from fedcore.errors import FedCoreError
from fedcore.experiment import client_ids, load_run_config

from .server import CoordinatorSettings

log = logging.getLogger(__name__)

__all__ = ["Testbed", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join("configs", "testbed", "fmnist_mlp128.toml")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, timeout: float, what: str) -> None:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


class Testbed:
    """Starts and stops the processes of one testbed run."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, config: str, run_dir: str, clients: int, broker: str = "embedded",
                 nice: int = 0, env: Optional[Dict[str, str]] = None, dashboard: str = ""):
        self.config = os.path.abspath(config)
        self.run_dir = os.path.abspath(run_dir)
        self.clients = clients
        self.broker = broker
        self.nice = nice
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        self.processes: List[subprocess.Popen] = []
        self.group = 0  # the children's process group (the first child's pid)
        self.url = broker
        self.dashboard = dashboard  # the coordinator's --dashboard HOST:PORT ("" none)

    def _spawn(self, argv: List[str], log_name: str, stdout_to_console: bool = False) -> subprocess.Popen:
        log = open(os.path.join(self.run_dir, "logs", log_name), "ab")
        prefix = ["nice", "-n", str(self.nice)] if self.nice and shutil.which("nice") else []
        group = self.group
        process = subprocess.Popen(prefix + argv, cwd=ROOT, env=self.env, stderr=log,
                                   stdout=None if stdout_to_console else log,
                                   preexec_fn=lambda: os.setpgid(0, group))  # 0: a new group, led by this child
        log.close()
        self.group = self.group or process.pid
        self.processes.append(process)
        return process

    def start_broker(self) -> str:
        if self.broker.startswith(("mqtt://", "mqtts://")):
            return self.broker  # an external broker
        port = _free_port()
        if self.broker == "embedded":
            process = self._spawn([sys.executable, "-m", "coordinator.broker", "--host", "127.0.0.1",
                                   "--port", str(port)], "broker.log")
        elif self.broker == "mosquitto":
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if not os.access(binary, os.X_OK):
                raise RuntimeError("mosquitto not found: apt-get install mosquitto, or use --broker embedded")
            conf = os.path.join(self.run_dir, "mosquitto.conf")
            with open(conf, "w") as handle:
                # set_tcp_nodelay: a retained model sent right after a SUBACK must not wait for the
                # device's delayed ACK (40 ms a fetch with Mosquitto's default).
                handle.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "set_tcp_nodelay true\n")
            process = self._spawn([binary, "-c", conf], "broker.log")
        else:
            raise ValueError(f"--broker must be embedded, mosquitto or an mqtt:// URL, got {self.broker!r}")
        _wait_listening(port, process, 30.0, f"the {self.broker} broker")
        return f"mqtt://127.0.0.1:{port}"

    def run(self) -> Dict[str, Any]:
        os.makedirs(os.path.join(self.run_dir, "logs"), exist_ok=True)
        began = time.monotonic()
        previous = {number: signal.signal(number, _stop_signal) for number in (signal.SIGTERM, signal.SIGHUP)}
        try:
            self.url = self.start_broker()
            log.info("testbed: broker %s, %d devices, run folder %s, process group %d", self.url, self.clients,
                     self.run_dir, self.group)
            devices = [self._spawn([sys.executable, "-m", "device", "fl", "--broker", self.url, "--config",
                                    self.config, "--client-id", cid], f"{cid}.log")
                       for cid in client_ids(self.clients)]
            coordinator = self._spawn([sys.executable, "-m", "coordinator", "--broker", self.url, "--config",
                                       self.config, "--run-dir", self.run_dir]
                                      + (["--dashboard", self.dashboard] if self.dashboard else []),
                                      "coordinator.log", stdout_to_console=True)  # (it prints the dashboard's URL)
            status = coordinator.wait()
            # After a clean end the devices have read "done" and exit by themselves; after a
            # failure nobody will tell them, so they are stopped now.
            patience = 30.0 if status == 0 else 0.0
            codes = {}
            for cid, device in zip(client_ids(self.clients), devices):
                try:
                    codes[cid] = device.wait(patience)
                except subprocess.TimeoutExpired:
                    codes[cid] = None
        finally:
            self.stop()
            for number, handler in previous.items():
                signal.signal(number, handler)
        summary: Dict[str, Any] = {"coordinator_status": status, "device_status": codes,
                                   "broker": self.broker, "clients": self.clients,
                                   "wall_time_s": round(time.monotonic() - began, 2)}
        report_path = os.path.join(self.run_dir, "report.json")
        if os.path.exists(report_path):
            with open(report_path) as handle:
                summary["report"] = json.load(handle)
        with open(os.path.join(self.run_dir, "testbed.json"), "w") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
        return summary

    def stop(self) -> None:
        """Stop the whole process group (devices, coordinator, broker, and anything they started)."""
        if not self.group:
            return
        for number in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.group, number)
            except ProcessLookupError:
                break  # nobody left
            ends = time.monotonic() + 5.0
            while time.monotonic() < ends and any(p.poll() is None for p in self.processes):
                time.sleep(0.05)
            if not _group_alive(self.group):
                break
        for process in self.processes:
            process.poll()  # reap


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_signal(number: int, frame: Any) -> None:
    """SIGTERM/SIGHUP: unwind through Testbed.run's `finally`, which stops every child."""
    raise SystemExit(128 + number)


RUN_FILES = ("checkpoint.fedc", "rounds.jsonl", "events.jsonl", "report.json", "rounds.png", "testbed.json",
             "mosquitto.conf")


def _clear(run_dir: str) -> None:
    """Remove what an earlier testbed run left in run_dir (its files only, nothing else)."""
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.remove(path)
    logs = os.path.join(run_dir, "logs")
    if os.path.isdir(logs):
        for name in os.listdir(logs):
            if name.endswith(".log"):
                os.remove(os.path.join(logs, name))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator.testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"the run's TOML file (default {DEFAULT_CONFIG})")
    parser.add_argument("--clients", type=int, default=0, help="device processes (default: data.num_clients)")
    parser.add_argument("--broker", default="embedded",
                        help="embedded (amqtt child process), mosquitto, or the URL of a running broker")
    parser.add_argument("--run-dir", help="default: runs/testbed/<run id>")
    parser.add_argument("--resume", action="store_true", help="keep the run folder's checkpoint and continue")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the child processes")
    parser.add_argument("--dashboard", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="the coordinator's live dashboard (default %(default)s; another free port if that one "
                        "is taken; \"\" for none)")
    add_verbosity(parser)
    args = parser.parse_args(argv)
    show_logs(args)
    try:
        run = load_run_config(args.config)
        settings = CoordinatorSettings.from_run(run)
    except FedCoreError as error:
        print(f"testbed: {error}", file=sys.stderr)
        return 2
    clients = args.clients or run.data.num_clients
    if not 1 <= clients <= run.data.num_clients:
        print(f"testbed: --clients must lie in [1, {run.data.num_clients}] (data.num_clients)", file=sys.stderr)
        return 2
    run_dir = args.run_dir or os.path.join("runs", "testbed", settings.run_id)
    if not args.resume:
        _clear(run_dir)  # a testbed run starts from round 1 unless asked to resume
    testbed = Testbed(args.config, run_dir, clients, args.broker, args.nice, dashboard=args.dashboard)
    try:
        summary = testbed.run()
    except (RuntimeError, ValueError) as error:
        print(f"testbed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("testbed: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    bad = {cid: code for cid, code in summary["device_status"].items() if code != 0}
    print(f"testbed: coordinator exit {summary['coordinator_status']}, devices with a problem: {bad or 'none'}, "
          f"{summary['wall_time_s']} s; report {os.path.join(run_dir, 'testbed.json')}", flush=True)
    return 0 if summary["coordinator_status"] == 0 and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
