"""Shared pieces of the MQTT federated tests: a tiny Fashion-MNIST-shaped IDX
dataset, run configs, the in-process reference (fedcore.rounds.simulate) and
helpers that run the coordinator and the clients (threads or processes)."""

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from coordinator.config import initial_state, make_evaluator
from coordinator.server import Coordinator, CoordinatorSettings
from coordinator.store import RunStore
from device.fl.client import FLClient
from device.fl.data import load_local_data
from device.fl.trainers import make_trainer
from fedcore.container import decode_message
from fedcore.experiment import MLPTrainer, build_numpy_model, client_ids, load_run_config
from fedcore.rounds import RoundClient, RoundServer, simulate
from fedlink.chunks import Reassembler, chunk_count, chunk_message, chunk_topic, split_topic
from fedlink.link import MqttLink
from fedlink.protocol import Topics, to_json
from fedlink.settings import parse_broker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path: str, array: np.ndarray) -> None:
    codes = {1: 0x0801, 3: 0x0803}
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", codes[array.ndim]))
        handle.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        handle.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_dataset(folder: str, train: int = 300, test: int = 100, seed: int = 0) -> str:
    """Ten classes of 28x28 noisy templates, as Fashion-MNIST-format IDX files."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28)).astype(np.float32)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        noise = rng.normal(0, 60, size=(count, 28, 28))
        images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), labels)
    return folder


def settings(data_dir: str, run_id: str = "t", clients: int = 3, rounds: int = 2, broadcast: str = "delta",
             error_feedback: bool = True, deadline_s: float = 5.0, min_updates: int = 0,
             coordinator: Optional[Dict[str, Any]] = None, strategy: Any = "fedavg") -> Dict[str, Any]:
    """A small run: MLP-16 on the fixture, top-k + 4-bit uplink, 4-bit downlink."""
    uplink: Dict[str, Any] = {"sparsify": {"keep": 0.3}, "error_feedback": error_feedback,
                              "wire": {"bits": 4, "entropy": "deflate"}}
    downlink: Dict[str, Any] = {"wire": {"bits": 4, "entropy": "deflate"}}
    if broadcast == "delta":
        downlink["sparsify"] = {"keep": 0.3}
    table = {"run_id": run_id, "keepalive": 2, "wait_s": 20.0, "presence_timeout_s": 0.0}
    table.update(coordinator or {})
    return {
        "name": run_id,
        "data": {"dataset": "fashion-mnist", "path": data_dir, "num_clients": clients, "alpha": 0.5,
                 "min_samples": 20, "seed": 3},
        "model": {"name": "mlp", "hidden": [16]},
        "federation": {"rounds": rounds, "fraction": 1.0, "min_clients": clients,
                       "min_updates": min_updates or clients, "deadline_s": deadline_s, "broadcast": broadcast,
                       "seed": 7, "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}, "strategy": strategy},
        "compression": {"uplink": uplink, "downlink": downlink},
        "coordinator": table,
    }


def write_config(folder: str, table: Dict[str, Any]) -> str:
    path = os.path.join(folder, "run.json")
    with open(path, "w") as handle:
        json.dump(table, handle)
    return path


def reference(config_path: str, rounds: Optional[int] = None) -> Dict[str, Any]:
    """The same run through fedcore.rounds.simulate, in process."""
    run = load_run_config(config_path)
    coord = CoordinatorSettings.from_run(run)
    server = RoundServer(initial_state(run, coord), run.federation)
    clients = {}
    for cid in client_ids(run.data.num_clients):
        x, y = load_local_data(run, cid)
        clients[cid] = RoundClient(cid, MLPTrainer(build_numpy_model(run.model, 784, 10, 0), x, y))
    evaluate = make_evaluator(run, coord)
    records: List[Dict[str, Any]] = []

    def on_round(result):
        records.append({"round": result.round, "bytes_up": result.bytes_up, "bytes_down": result.bytes_down,
                        **evaluate(server.global_state)})

    simulate(server, clients, rounds or run.federation.rounds, on_round)
    return {"state": server.global_state, "rounds": records}


def checkpoint_state(run_dir: str) -> Dict[str, np.ndarray]:
    """The model tensors of a run directory's checkpoint (without the strategy's state)."""
    with open(os.path.join(run_dir, "checkpoint.fedc"), "rb") as handle:
        tensors = decode_message(handle.read()).tensors
    return {name: value for name, value in tensors.items() if not name.startswith("@strategy/")}


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ------------------------------------------------------------ in process (threads)


class ThreadedRun:
    """Coordinator and clients in threads of this process, each with its own MQTT connection."""

    def __init__(self, broker_url: str, config_path: str, run_dir: str, client_ids_: Optional[List[str]] = None,
                 trainer: str = "", initial_model: str = "", evaluator: str = ""):
        """trainer, initial_model, evaluator: the CLIs' --trainer, --initial-model and --evaluator."""
        self.trainer, self.initial_model, self.evaluator = trainer, initial_model, evaluator
        self.run = load_run_config(config_path)
        self.coord_settings = CoordinatorSettings.from_run(self.run)
        self.address = parse_broker(broker_url)
        self.topics = Topics(self.coord_settings.run_id)
        self.run_dir = run_dir
        self.ids = client_ids_ or client_ids(self.run.data.num_clients)
        self.clients: List[FLClient] = []
        self.threads: List[threading.Thread] = []
        self.report: Optional[Dict[str, Any]] = None
        self.errors: List[BaseException] = []

    def _guard(self, target: Callable[[], Any]) -> Callable[[], None]:
        def body():
            try:
                target()
            except BaseException as error:  # surfaced by join()
                self.errors.append(error)
        return body

    def start_clients(self, ids: Optional[List[str]] = None, broker_url: str = "") -> None:
        """broker_url: where the clients connect (default: the run's broker), e.g. a proxy to it."""
        for cid in ids or self.ids:
            x, y = load_local_data(self.run, cid)
            link = MqttLink(parse_broker(broker_url) if broker_url else self.address, cid, FLClient.subscriptions(self.topics, cid), keepalive=2,
                            reconnect=(0.1, 0.5), max_payload=self.coord_settings.max_payload,
                            will=(self.topics.presence(cid), to_json({"status": "offline"})))
            trainer = make_trainer(self.run, x, y, self.trainer)
            client = FLClient(cid, self.coord_settings.run_id, trainer, link, heartbeat_s=1.0)
            link.on_connect = client.on_connect
            link.start()
            self.clients.append(client)
            thread = threading.Thread(target=self._guard(lambda c=client: c.run(timeout=60)), daemon=True)
            thread.start()
            self.threads.append(thread)

    def start_coordinator(self) -> None:
        link = MqttLink(self.address, "coordinator", [(self.topics.all_presence, 1), (self.topics.all_updates, 1)],
                        keepalive=2, reconnect=(0.1, 0.5), share_of=self.topics.sender,
                        max_payload=self.coord_settings.max_payload)
        coordinator = Coordinator(self.run, self.coord_settings, link, RunStore(self.run_dir),
                                  initial_state(self.run, self.coord_settings, self.initial_model),
                                  make_evaluator(self.run, self.coord_settings, self.evaluator))
        link.on_connect = coordinator.republish_retained
        link.start()
        self.coordinator_link = link

        def body():
            self.report = coordinator.run()
        thread = threading.Thread(target=self._guard(body), daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float) -> Dict[str, Any]:
        ends = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, ends - time.monotonic()))
        self.coordinator_link.stop()
        for client in self.clients:
            client.stop()
            client.link.stop()
        if self.errors:
            raise self.errors[0]
        if any(t.is_alive() for t in self.threads) or self.report is None:
            raise AssertionError(f"the run did not finish within {timeout} s")
        return self.report


# ------------------------------------------------------------ processes


def python_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def spawn_coordinator(broker_url: str, config_path: str, run_dir: str, log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "coordinator", "--broker", broker_url, "--config",
                                config_path, "--run-dir", run_dir, "--quiet"], cwd=ROOT, env=python_env(),
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def spawn_client(broker_url: str, config_path: str, client_id: str, log_path: str, keepalive: int = 2
                 ) -> subprocess.Popen:
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "device", "fl", "--broker", broker_url, "--config",
                                config_path, "--client-id", client_id, "--heartbeat", "1",
                                "--keepalive", str(keepalive),
                                "--timeout", "90"], cwd=ROOT, env=python_env(),
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_all(processes: List[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(5)


class Watcher:
    """A plain paho subscriber that records what it receives (topic -> payloads)."""

    def __init__(self, broker_url: str, topic: str, username: str = "", password: str = ""):
        import paho.mqtt.client as mqtt
        address = parse_broker(broker_url)
        self.messages: List[tuple] = []
        self.ready = threading.Event()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"watcher-{time.monotonic_ns()}")
        if username:
            client.username_pw_set(username, password)

        def on_connect(c, userdata, flags, reason_code, properties):
            c.subscribe(topic, 1)

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            self.ready.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        client.connect(address.host, address.port, keepalive=5)
        client.loop_start()
        self.client = client
        if not self.ready.wait(5):
            raise AssertionError("watcher could not subscribe")

    def payloads(self, topic: str) -> List[bytes]:
        return [p for t, p in list(self.messages) if t == topic]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def blobs(self, topic: str) -> List[bytes]:
        """The whole blobs seen on `topic`, put together from their chunks (fedlink.chunks), in order."""
        parts = Reassembler(1 << 30, 1 << 31, 1 << 31, per_sender=1 << 10)
        found = []
        for seen, payload in list(self.messages):
            base, index = split_topic(seen)
            if base == topic and payload:
                blob = parts.add(base, payload, "watcher", index).blob
                if blob is not None:
                    found.append(blob)
        return found

    def publish_blob(self, topic: str, blob: bytes, retain: bool = False, max_payload: int = 128 << 10) -> None:
        """`blob` as a device or the coordinator sends it: chunks on topic/chunk/<i>."""
        digest = hashlib.sha256(blob).digest()
        size, count = chunk_count(len(blob), max_payload)
        for index in range(count):
            self.publish(chunk_topic(topic, index), chunk_message(blob, digest, size, index), retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def online(watcher: "Watcher", topics: Topics, ids: List[str]) -> bool:
    """Every client in `ids` said it is online (its last presence message)."""
    for cid in ids:
        seen = watcher.payloads(topics.presence(cid))
        if not seen or not seen[-1] or json.loads(seen[-1]).get("status") != "online":
            return False
    return True


def ghost(watcher: "Watcher", topics: Topics, client_id: str) -> None:
    """A client that joins and never trains: every round it is selected in waits for its deadline."""
    watcher.publish(topics.presence(client_id), to_json({"v": 1, "status": "online", "client": client_id}),
                    retain=True)
