"""The MQTT coordinator: the shared round engine (fedcore.rounds.RoundServer)
driven by MQTT messages. It waits for clients, runs each round to its
deadline, validates every update, aggregates, evaluates, logs and
checkpoints. All protocol logic runs in the caller's thread; paho's thread
only queues messages (see fedlink.link.MqttLink).
"""

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import numpy as np

from fedcore.atomic import atomic_write
from fedcore.checks import boolean, check_table, number
from fedcore.container import DecodeLimits, layout_difference
from fedcore.errors import ConfigError, FedCoreError
from fedcore.experiment import RunConfig
from fedcore.rounds import RoundResult, RoundServer
from fedlink.chunks import HEADER_BYTES, remember
from fedlink.link import Incoming, MqttLink
from fedlink.protocol import (
    PRESENCE,
    PROTOCOL_VERSION,
    Topics,
    blob_id,
    check_name,
    from_json,
    to_json,
)
from fedlink.settings import LinkSettings

from .dashboard import RunView
from .report import TABLE_HEADER, plot_rounds, table_row
from .store import RunStore

__all__ = ["CoordinatorSettings", "Coordinator", "Evaluator", "LinkError", "RunHealth", "same_layout"]

log = logging.getLogger(__name__)

class LinkError(FedCoreError):
    """The broker cannot carry the run as configured (the text says which setting to change)."""


# state -> {"accuracy": ..., "loss": ...}
Evaluator = Callable[[Dict[str, np.ndarray]], Dict[str, float]]


@dataclass(frozen=True)
class CoordinatorSettings:
    """The ``[coordinator]`` table of a run's TOML file.

    run_id: topic namespace (default: the run's name); expected_clients: how
    many clients to wait for before round 1 (default: data.num_clients);
    wait_s: how long to wait for them before starting with min_clients;
    presence_timeout_s: a client silent for longer is not available (0: rely
    on its last will only); max_update_bytes: larger updates are rejected
    unread (0: twice the float32 model plus 64 KiB); keepalive: MQTT keepalive
    (s); evaluate: held-out accuracy after every round; in_features,
    num_classes: model dimensions when the dataset is not a known one;
    stall_rounds, max_accuracy_drop: the run ends, as a failure, after
    stall_rounds rounds in a row without an accepted update or with the held-out
    accuracy more than max_accuracy_drop below its best (0 turns either off).
    """

    run_id: str
    expected_clients: int
    wait_s: float = 60.0
    presence_timeout_s: float = 30.0
    max_update_bytes: int = 0
    keepalive: int = 10
    max_payload: int = 128 << 10
    evaluate: bool = True
    in_features: int = 784
    num_classes: int = 10
    stall_rounds: int = 3
    max_accuracy_drop: float = 0.3

    @classmethod
    def from_run(cls, run: RunConfig) -> "CoordinatorSettings":
        table = check_table(run.settings.get("coordinator", {}), list(cls.__dataclass_fields__), "coordinator")
        link = LinkSettings.from_table(table, run.name)
        where = "coordinator"
        return cls(
            run_id=link.run_id,
            expected_clients=number(table, "expected_clients", run.data.num_clients, 1, 1 << 20, True, where),
            wait_s=number(table, "wait_s", cls.wait_s, 0.0, 1e7, where=where),
            presence_timeout_s=number(table, "presence_timeout_s", cls.presence_timeout_s, 0.0, 1e7, where=where),
            max_update_bytes=number(table, "max_update_bytes", 0, 0, 1 << 40, True, where),
            keepalive=link.keepalive,
            max_payload=link.max_payload,
            evaluate=boolean(table, "evaluate", True, where),
            in_features=number(table, "in_features", cls.in_features, 1, 1 << 24, True, where),
            num_classes=number(table, "num_classes", cls.num_classes, 2, 1 << 20, True, where),
            stall_rounds=number(table, "stall_rounds", cls.stall_rounds, 0, 1_000_000, True, where),
            max_accuracy_drop=number(table, "max_accuracy_drop", cls.max_accuracy_drop, 0.0, 1.0, where=where),
        )


def same_layout(state: Mapping[str, np.ndarray], model: Mapping[str, np.ndarray]) -> Optional[str]:
    """None when `state` has exactly the tensor names and shapes of `model`, else what differs."""
    return layout_difference({n: np.shape(v) for n, v in model.items()}, {n: np.shape(v) for n, v in state.items()})


class RunHealth:
    """Says when a run has stopped learning (stall_rounds rounds in a row without an
    accepted update, or with the held-out accuracy more than max_accuracy_drop below
    its best): then the coordinator ends the run and exits non-zero."""

    def __init__(self, stall_rounds: int, max_accuracy_drop: float):
        self.stall_rounds = stall_rounds
        self.max_drop = max_accuracy_drop
        self.best: Optional[float] = None
        self.idle = 0       # rounds in a row without an accepted update
        self.collapsed = 0  # rounds in a row far below the best accuracy

    def check(self, record: Mapping[str, Any]) -> Optional[str]:
        """Take one round's record; the reason to stop, or None."""
        self.idle = 0 if record.get("accepted") else self.idle + 1
        accuracy = record.get("accuracy")
        if isinstance(accuracy, float):
            self.best = accuracy if self.best is None else max(self.best, accuracy)
            low = self.max_drop > 0 and accuracy < self.best - self.max_drop
            self.collapsed = self.collapsed + 1 if low else 0
        if not self.stall_rounds:
            return None
        if self.idle >= self.stall_rounds:
            return f"no update was accepted in the last {self.idle} rounds (coordinator.stall_rounds)"
        if self.collapsed >= self.stall_rounds:
            return (f"the held-out accuracy stayed more than {self.max_drop:g} below its best {self.best:.4f} for "
                    f"{self.collapsed} rounds (now {accuracy:.4f}; coordinator.max_accuracy_drop)")
        return None


MAX_CLIENTS = 10_000  # client ids a coordinator keeps presence for: a flood of new ids is refused beyond


class Complaints:
    """The messages refused between two round openings, in memory and files that stay bounded
    whatever their number: counts by sender and status, the first few of each sender in full
    (event, log line, ack) and a sample for the round's record. A flood is counted, not written."""

    per_sender = 20    # refusals a sender gets logged in full per round
    max_senders = 200  # senders counted by name; the rest together as "(others)"
    sample_size = 50   # refusals of the round's record

    def __init__(self):
        self.counts: Dict[str, Dict[str, int]] = {}
        self.sample: List[Dict[str, Any]] = []
        self.suppressed = 0

    def note(self, sender: str, status: str, record: Dict[str, Any]) -> bool:
        """Count one refusal; True when it should be written out in full."""
        key = sender if sender in self.counts or len(self.counts) < self.max_senders else "(others)"
        per = self.counts.setdefault(key, {})
        per[status] = per.get(status, 0) + 1
        if sum(per.values()) > self.per_sender:
            self.suppressed += 1
            return False
        if len(self.sample) < self.sample_size:
            self.sample.append(record)
        return True

    def summary(self) -> Dict[str, Any]:
        return {"counts": self.counts, "suppressed": self.suppressed}


class _Presence:
    def __init__(self):
        self.online: Dict[str, float] = {}  # client -> last heard (monotonic)
        self.capabilities: Dict[str, Dict[str, Any]] = {}
        self.train_s: Dict[Tuple[str, str], float] = {}  # (client, plan_id) -> training seconds
        # (client, plan_id) -> bytes of retained full models the client read to catch up before it
        # trained: downloads beyond the round's broadcast, which the round engine does not count.
        self.full_model_bytes: Dict[Tuple[str, str], int] = {}
        self.wire_down: Dict[Tuple[str, str], int] = {}  # (client, plan_id) -> model chunk bytes it read

    def available(self, timeout: float) -> List[str]:
        now = time.monotonic()
        return sorted(c for c, seen in self.online.items() if timeout <= 0 or now - seen <= timeout)


class Coordinator:
    """Runs a federated run over an MqttLink. `run()` returns the final report."""

    def __init__(self, run: RunConfig, settings: CoordinatorSettings, link: MqttLink, store: RunStore,
                 initial: Mapping[str, np.ndarray], evaluator: Optional[Evaluator] = None,
                 show: Optional[Callable[[str], None]] = None, view: Optional[RunView] = None):
        self.run_config = run
        self.settings = settings
        self.topics = Topics(settings.run_id)
        self.link = link
        self.store = store
        self.evaluator = evaluator
        self.show = show  # where the live table's lines go (the program's choice: print, or nowhere)
        # What the dashboard shows (coordinator.dashboard): fed the records the run writes.
        self.view = view
        raw = sum(int(np.asarray(v).size) for v in initial.values()) * 4
        self.raw_model_bytes = raw  # the model as float32: what compression is measured against
        self.max_update_bytes = settings.max_update_bytes or 2 * raw + 65536
        elements = sum(int(np.asarray(v).size) for v in initial.values())
        self.limits = DecodeLimits(max_message_bytes=self.max_update_bytes, max_elements=2 * elements + 1024)
        self.server, self.history = self._restore_or_start(initial)
        # Updates arrive as chunks: one client's update at a time may be under way, at most every
        # client of a round at once; the link tells the senders which chunks it lacks (_on_transfer).
        federation = run.federation
        per_round = max(federation.min_clients, int(np.ceil(federation.fraction * run.data.num_clients)))
        if link is not None:  # (None: the round logic alone, in tests)
            # A blob may be an update or this coordinator's own model read back (_check_delivery);
            # an update over max_update_bytes is refused by name once whole (_on_update).
            largest = max(self.max_update_bytes, raw + 65536)
            link.set_blob_limits(largest, (per_round + 2) * largest)
            link.on_status = self._on_transfer
        # client -> (update id, the last verdict sent to it): repeated when the client asks again
        self._acks: Dict[str, Tuple[str, bytes]] = {}
        self._echo_checked = False
        self._wire_mark = 0
        self._closing = 0.0
        if view is not None:
            view.header.update(run=settings.run_id, fingerprint=run.federation.fingerprint(),
                               config=run.federation.to_dict(), raw_model_bytes=raw)
            for record in self.history:
                view.apply_round(record)
        # The last model whose held-out accuracy was not a collapse: a collapsed round's model is
        # replaced by it, never checkpointed (see _keep_or_restore).
        self._good_model = dict(self.server.global_state)
        known = [r["accuracy"] for r in self.history if isinstance(r.get("accuracy"), float) and not r.get("restored")]
        self._best_accuracy: Optional[float] = max(known) if known else None
        self.presence = _Presence()
        self._retained: Dict[str, Tuple[bytes, bool]] = {}  # topic -> (payload, whether it is a blob)
        self._retained_lock = threading.Lock()
        self._plan_id = ""
        self._plans = store.issued_plans()  # plan id -> round, earlier sessions' included
        self._complaints = Complaints()
        self._sizes: Dict[str, int] = {}
        self._wire: Dict[str, int] = {}  # client -> chunk bytes that carried its accepted update
        self._broadcast_bytes = 0

    # ------------------------------------------------------------ set-up

    def _restore_or_start(self, initial: Mapping[str, np.ndarray]) -> Tuple[RoundServer, List[Dict[str, Any]]]:
        federation = self.run_config.federation
        blob = self.store.load_checkpoint()
        if blob is None:
            return RoundServer(initial, federation, self.limits), []
        server = RoundServer.restore(blob, federation, DecodeLimits())
        if server.completed_rounds > federation.rounds:
            raise ConfigError(
                f"{self.store.checkpoint_path}: the checkpoint is at round {server.completed_rounds}, but the run "
                f"has {federation.rounds} rounds: raise federation.rounds to go on, or use a new --run-dir")
        problem = same_layout(server.global_state, initial)
        if problem:
            raise ConfigError(f"{self.store.checkpoint_path}: the checkpoint does not hold the run's model: {problem}")
        server.limits = self.limits
        history = self.store.trim_rounds(server.completed_rounds)
        log.info("resuming %s from its checkpoint: %d of %d rounds done", self.settings.run_id,
                 server.completed_rounds, federation.rounds)
        self._event({"event": "resume", "completed_rounds": server.completed_rounds})
        return server, history

    def republish_retained(self) -> None:
        """After a (re)connect: a restarted broker without persistence lost our retained messages."""
        with self._retained_lock:
            items = list(self._retained.items())
        for topic, (payload, blob) in items:
            self._publish_retained(topic, payload, blob)

    def _retain(self, topic: str, payload: bytes, blob: bool = False) -> None:
        """Publish retained (a model as chunks), and again after every reconnect."""
        with self._retained_lock:
            self._retained[topic] = (payload, blob)
        self._publish_retained(topic, payload, blob)

    def _publish_retained(self, topic: str, payload: bytes, blob: bool) -> None:
        if blob:
            self.link.send_blob(topic, payload, retain=True)
        else:
            self.link.publish(topic, payload, qos=1, retain=True)

    # ------------------------------------------------------------ the run

    def run(self) -> Dict[str, Any]:
        federation = self.run_config.federation
        started = time.monotonic()
        # A new coordinator session: an earlier one's announcement is void (devices fetch a model only
        # by the id an announcement names, so models it left retained are never taken).
        self._retain(self.topics.round, b"")
        if self.show is not None:
            self.show(TABLE_HEADER)
            for record in self.history:
                self.show(table_row(record))
        first = True
        health = RunHealth(self.settings.stall_rounds, self.settings.max_accuracy_drop)
        for record in self.history:
            health.check(record)
        stopped: Optional[str] = None
        while self.server.completed_rounds < federation.rounds and not stopped:
            available = self._wait_for_clients(first)
            first = False
            record = self._run_round(available)
            self.history.append(record)
            if self.show is not None:
                self.show(table_row(record))
            stopped = health.check(record)
        done = {"v": PROTOCOL_VERSION, "run": self.settings.run_id, "done": True,
                "completed_rounds": self.server.completed_rounds}
        if stopped:
            log.error("the run stopped learning: %s", stopped)
            self._event({"event": "stopped", "reason": stopped})
            done["stopped"] = stopped
        self._retain(self.topics.round, to_json(done))
        report = self._final_report(time.monotonic() - started)
        report["stopped"] = stopped
        if self.view is not None and not stopped:
            self.view.set_state("finished")
        return report

    def _wait_for_clients(self, first: bool) -> List[str]:
        """Clients available for the next round: before round 1, everyone expected
        (or min_clients after wait_s); later, whoever is there (at least min_clients)."""
        federation = self.run_config.federation
        began = last_note = time.monotonic()
        while True:
            available = self.presence.available(self.settings.presence_timeout_s)
            waited = time.monotonic() - began
            enough = len(available) >= federation.min_clients
            if enough and (not first or len(available) >= self.settings.expected_clients
                           or waited >= self.settings.wait_s):
                return available
            if time.monotonic() - last_note >= 10.0:
                log.info("waiting for clients: %d available, %d needed (%d expected)", len(available),
                         federation.min_clients, self.settings.expected_clients)
                last_note = time.monotonic()
            self._handle(self.link.get(0.2))

    def _run_round(self, available: List[str]) -> Dict[str, Any]:
        server = self.server
        began = time.monotonic()
        plan = server.open_round(available)
        self.link.priority = set(plan.selected)  # their updates get in whatever anyone else sends
        self._plan_id = uuid.uuid4().hex[:12]
        self._plans[self._plan_id] = plan.round
        broadcast = server.broadcast
        full = server.full_model() if self.run_config.federation.broadcast == "delta" else broadcast
        announcement = {
            "v": PROTOCOL_VERSION, "run": self.settings.run_id, "plan_id": self._plan_id,
            "plan": plan.to_dict(), "model_id": blob_id(broadcast), "full_id": blob_id(full),
            "issued_at": time.time(),
        }
        if full is not broadcast:
            self._retain(self.topics.full_model, full, blob=True)
        self._retain(self.topics.model, broadcast, blob=True)
        if not self._echo_checked:
            self._check_delivery(broadcast)
        self._retain(self.topics.round, to_json(announcement))
        self._event({"event": "open", "round": plan.round, "plan_id": self._plan_id,
                     "selected": list(plan.selected), "available": available})
        deadline = began + plan.deadline_s
        late: List[Dict[str, Any]] = []
        self._flush_complaints()  # those since the last round closed
        self._sizes = {}
        self._wire = {}
        self._wire_mark = self.link.wire_received
        self._broadcast_bytes = len(broadcast)
        arrivals: Dict[str, float] = {}
        selected: Set[str] = set(plan.selected)
        while time.monotonic() < deadline and not selected <= set(arrivals):
            self._handle(self.link.get(deadline - time.monotonic()), arrivals, late, began)
        if self.view is not None:
            self.view.set_state("aggregating")
        self._closing = time.monotonic()
        result = server.close_round()
        closed = time.monotonic()
        # Updates already queued when the round closed are late: log them now.
        self._drain(arrivals, late, began)
        return self._finish_round(result, began, closed, arrivals, late)

    def _drain(self, arrivals: Dict[str, float], late: List[Dict[str, Any]], began: float) -> None:
        while True:
            incoming = self.link.get(0.0)
            if incoming is None:
                return
            self._handle(incoming, arrivals, late, began)

    # ------------------------------------------------------------ messages

    def _handle(self, incoming: Optional[Incoming], arrivals: Optional[Dict[str, float]] = None,
                late: Optional[List[Dict[str, Any]]] = None, began: float = 0.0) -> None:
        if incoming is None:
            return
        kind, client, plan_id = self.topics.parse(incoming.topic)
        try:
            if incoming.error and kind == "update" and check_name(client, "update topic client id"):
                # The sender hears why (it would otherwise ask again and again).
                reason = f"chunk refused: {incoming.error} (max_update_bytes {self.max_update_bytes})"
                self._verdict(client, plan_id, self._plans.get(plan_id, 0), "rejected", reason, 0, b"",
                              incoming.blob_id[:16] or "0")
                return
            if incoming.error:
                raise ConfigError(f"chunk refused: {incoming.error}")
            if kind == "presence":
                self._on_presence(client, incoming.payload)
            elif kind == "update":
                self._on_update(client, plan_id, incoming, arrivals, late, began)
        except ConfigError as error:
            record = {"event": "bad_message", "topic": incoming.topic[:200], "reason": str(error)[:1000]}
            if self._complaints.note(client or "?", "bad_message", record):
                self._event(record)
                log.warning("%s: %s", record["topic"], record["reason"])

    def _on_presence(self, client: str, payload: bytes) -> None:
        check_name(client, "presence topic client id")
        if not payload:
            self.presence.online.pop(client, None)
            return
        data = from_json(payload, f"presence of {client}", PRESENCE)
        if data.get("client", client) != client:
            # With the ACL broker the topic is the authenticated user's; the payload must agree.
            raise ConfigError(f"presence of {client}: the payload says client {data['client']!r}")
        if data["status"] == "online":
            known = client in self.presence.online or client in self.presence.capabilities
            if not known and len(self.presence.online) + len(self.presence.capabilities) >= 2 * MAX_CLIENTS:
                raise ConfigError(f"presence of {client}: {MAX_CLIENTS} clients are known already")
            if client not in self.presence.online:
                self._event({"event": "join", "client": client, "capabilities": data.get("capabilities")})
            self.presence.online[client] = time.monotonic()
            if self.view is not None:
                self.view.seen(client, time.time(), data.get("capabilities"))
            if "capabilities" in data:
                self.presence.capabilities[client] = data["capabilities"]
                samples = data["capabilities"].get("samples")
                if type(samples) is int and 1 <= samples <= 1 << 31:  # bounds the num_samples it may claim
                    self.server.announced_samples[client] = samples
            last = data.get("last_update")
            if last is not None and "train_s" in last and last["plan_id"] in self._plans:
                self.presence.train_s[(client, last["plan_id"])] = last["train_s"]
                self.presence.full_model_bytes[(client, last["plan_id"])] = last.get("full_model_bytes", 0)
                if "wire_down" in last:
                    self.presence.wire_down[(client, last["plan_id"])] = last["wire_down"]
        elif self.presence.online.pop(client, None) is not None:
            self._event({"event": "leave", "client": client})

    def _on_update(self, client: str, plan_id: str, incoming: Incoming, arrivals: Optional[Dict[str, float]],
                   late: Optional[List[Dict[str, Any]]], began: float) -> None:
        payload = incoming.payload
        nbytes = len(payload)
        check_name(client, "update topic client id")
        open_now = self.server.round_open and arrivals is not None
        round_number = self.server.plan.round if self.server.round_open else self.server.completed_rounds
        if plan_id not in self._plans:
            reason = f"plan {plan_id!r} was never announced in this run"
            self._verdict(client, plan_id, 0, "rejected", reason, nbytes, payload)
            return
        if not open_now or plan_id != self._plan_id:
            # A straggler after its round closed, or from before a coordinator restart.
            number = self._plans[plan_id]
            record = {"client": client, "plan_id": plan_id, "nbytes": nbytes,
                      "reason": f"round {number} (plan {plan_id!r}) is closed"}
            if self._verdict(client, plan_id, number, "late", record["reason"], nbytes, payload) and late is not None:
                late.append(record)
            return
        if nbytes > self.max_update_bytes:
            reason = f"payload of {nbytes} bytes exceeds max_update_bytes {self.max_update_bytes}"
            self._verdict(client, plan_id, round_number, "rejected", reason, nbytes, payload)
            return
        verdict = self.server.submit(payload, sender=client)
        if verdict.accepted:
            arrivals[client] = incoming.received - began
            self._sizes[client] = nbytes
            self._wire[client] = incoming.wire_bytes
        written = self._verdict(client, plan_id, verdict.round or round_number, verdict.status, verdict.reason,
                                nbytes, payload)
        if verdict.status == "late" and late is not None and written:
            late.append({"client": client, "plan_id": plan_id, "nbytes": nbytes, "reason": verdict.reason})

    def _verdict(self, client: str, plan_id: str, round_number: int, status: str, reason: str,
                 nbytes: int, payload: bytes, update_id: str = "") -> bool:
        """Event, log line and ack of one update's verdict; a refusal beyond its sender's share
        of this round is only counted (Complaints). True when it was written out."""
        event = {"event": "update", "client": client, "plan_id": plan_id, "round": round_number,
                 "status": status, "reason": reason, "nbytes": nbytes}
        if status != "accepted" and not self._complaints.note(client, status, {
                "sender": client, "status": status, "reason": reason[:1000], "nbytes": nbytes}):
            return False
        self._event(event)
        if status != "accepted" or reason:
            log.warning("update from %s (plan %s, %d bytes) %s: %s", client, plan_id, nbytes, status, reason)
        update_id = update_id or blob_id(payload)
        ack = to_json({"v": PROTOCOL_VERSION, "plan_id": plan_id, "round": round_number, "status": status,
                       "reason": reason, "update_id": update_id})
        remember(self._acks, client, (update_id, ack), MAX_CLIENTS)
        self.link.publish(self.topics.ack(client), ack, qos=1)
        return True

    def _on_transfer(self, topic: str, blob: str, missing: List[List[int]]) -> None:
        """The link's word on an update under way (link thread-free: called from link.get): name
        the chunks it lacks to its sender, or repeat the verdict on one complete here (the sender
        asks because the answer was lost)."""
        kind, client, plan_id = self.topics.parse(topic)
        if kind != "update":
            return
        if missing:
            status = {"v": PROTOCOL_VERSION, "plan_id": plan_id, "status": "partial", "update_id": blob,
                      "missing": missing, "round": self._plans.get(plan_id, 0)}
            log.info("update from %s (plan %s) is missing chunks %s: asked again", client, plan_id, missing[:4])
            self.link.publish(self.topics.ack(client), to_json(status), qos=1)
            return
        last = self._acks.get(client)
        if last is not None and blob.startswith(last[0]):
            self.link.publish(self.topics.ack(client), last[1], qos=1)

    def _check_delivery(self, broadcast: bytes) -> None:
        """Read this session's first broadcast back through the broker: a broker drops a message
        larger than its cap without a word to the sender (Mosquitto's message_size_limit, AWS IoT
        Core's 128 KiB), so a model that does not come back is one no device will ever get."""
        want = blob_id(broadcast)
        self.link.fetch(self.topics.model, want)
        wait_s = 10.0 + len(broadcast) / 1e6
        ends = time.monotonic() + wait_s
        while time.monotonic() < ends:
            incoming = self.link.get(min(0.2, ends - time.monotonic()))
            if incoming is not None and incoming.topic == self.topics.model:
                if incoming.error:
                    raise LinkError(f"the round's model came back from the broker damaged: {incoming.error}")
                if blob_id(incoming.payload) == want:
                    self._echo_checked = True
                    return
            self._handle(incoming)
            if not self.link.connected.is_set():
                ends = max(ends, time.monotonic() + wait_s)  # an outage is not the broker refusing the size
        self.link.end_fetch(self.topics.model)
        size = self.settings.max_payload or len(broadcast) + HEADER_BYTES
        raise LinkError(
            f"the broker did not deliver the round's model ({len(broadcast)} bytes, sent in messages of up to "
            f"{size} bytes) back within {wait_s:.0f} s: brokers drop messages larger than their cap without telling "
            f"the sender (Mosquitto: message_size_limit / max_packet_size; AWS IoT Core: 128 KiB). Set [coordinator] "
            f"max_payload (or --max-payload) to a size the broker accepts, e.g. 131072, or raise the broker's limit")

    def _flush_complaints(self) -> Dict[str, Any]:
        """What the ledger counted since the last flush (one event when something was held back)."""
        complaints, self._complaints = self._complaints, Complaints()
        if complaints.suppressed:
            self._event({"event": "suppressed", **complaints.summary()})
            log.warning("%d refused message(s) counted but not logged (more than %d from one sender): %s",
                        complaints.suppressed, Complaints.per_sender,
                        ", ".join(sorted(complaints.counts)[:10]))
        return complaints

    def _event(self, record: Dict[str, Any]) -> None:
        record = dict(record, time=time.time())
        self.store.append_event(record)
        if self.view is not None:
            self.view.apply_event(record)

    # ------------------------------------------------------------ after a round

    def _finish_round(self, result: RoundResult, began: float, closed: float, arrivals: Dict[str, float],
                      late: List[Dict[str, Any]]) -> Dict[str, Any]:
        metrics = self.evaluator(self.server.global_state) if self.evaluator is not None else {}
        aggregate_s = time.monotonic() - self._closing  # the strategy's close and the held-out evaluation
        restored = self._keep_or_restore(metrics.get("accuracy"))
        train_s = {c: self.presence.train_s.get((c, self._plan_id)) for c in result.accepted}
        known = [t for t in train_s.values() if t is not None]
        round_time = closed - began
        rejected = [{"sender": v.sender, "reason": v.reason, "nbytes": v.nbytes} for v in result.rejected]
        complaints = self._flush_complaints()
        rejected += [{k: r[k] for k in ("sender", "reason", "nbytes")} for r in complaints.sample
                     if r.get("status") == "rejected"
                     and not any(v.sender == r["sender"] and v.reason == r["reason"] for v in result.rejected)]
        clients = {}
        for client in result.selected:
            status = "accepted" if client in result.accepted else "missing"
            if status == "missing" and any(r["sender"] == client for r in rejected):
                status = "rejected"
            elif status == "missing" and any(r["client"] == client for r in late):
                status = "late"
            clients[client] = {
                "status": status,
                "wire_up": self._wire.get(client, 0),
                "wire_down": self.presence.wire_down.get((client, self._plan_id)),
                "arrival_s": arrivals.get(client),
                "train_s": train_s.get(client),
                "bytes_up": self._sizes.get(client, 0),
                "bytes_down": self._broadcast_bytes,
                "bytes_full_model": self.presence.full_model_bytes.get((client, self._plan_id), 0),
                **result.client_metrics.get(client, {}),
            }
        record = {
            "round": result.round, "plan_id": self._plan_id, "selected": result.selected,
            "accepted": result.accepted, "missing": result.missing,
            "rejected": rejected, "late": late, "refused": complaints.summary(),
            "rejected_total": sum(per.get("rejected", 0) for per in complaints.counts.values()),
            "aggregated": result.aggregated, "bytes_up": result.bytes_up, "bytes_down": result.bytes_down,
            "bytes_full_model": sum(c["bytes_full_model"] for c in clients.values()),
            # What crossed the wire as chunks (headers, repeats and refused ones included): all update
            # chunks received this round, and the model chunks the answering clients said they read.
            "wire_up": self.link.wire_received - self._wire_mark,
            "wire_down": sum(c["wire_down"] or 0 for c in clients.values()),
            "num_samples": result.num_samples, "round_time_s": round(round_time, 4),
            # Round time minus the slowest client's training: what the protocol and the server cost.
            "overhead_s": (round(round_time - max(known), 4)
                           if known and len(known) == len(result.accepted) and not result.missing else None),
            "accuracy": metrics.get("accuracy"), "loss": metrics.get("loss"),
            # The same traffic as float32 (the compression ratio), and the server's own time.
            "raw_up": self.raw_model_bytes * len(result.accepted),
            "raw_down": self.raw_model_bytes * (result.bytes_down // self._broadcast_bytes
                                                if self._broadcast_bytes else 0),
            "aggregate_s": round(aggregate_s, 4),
            "clients": clients, "time": time.time(),
        }
        if restored:
            record["restored"] = restored
        self.store.append_round(record)
        self.store.save_checkpoint(self.server.checkpoint())
        if self.view is not None:
            self.view.apply_round(record)
        return record

    def _keep_or_restore(self, accuracy: Any) -> Optional[str]:
        """Keep the round's model unless its held-out accuracy fell more than max_accuracy_drop
        below the best so far: then the last good model comes back, so that neither the next
        round nor the checkpoint starts from a collapse. Returns why it was restored, or None."""
        drop = self.settings.max_accuracy_drop
        if not isinstance(accuracy, float) or drop <= 0:
            self._good_model = dict(self.server.global_state)
            return None
        if self._best_accuracy is not None and accuracy < self._best_accuracy - drop:
            self.server.global_state = dict(self._good_model)
            reason = (f"held-out accuracy {accuracy:.4f} is more than {drop:g} below the best "
                      f"{self._best_accuracy:.4f}: the last good model was restored")
            log.error("round %d: %s", self.server.completed_rounds, reason)
            self._event({"event": "restored", "round": self.server.completed_rounds, "reason": reason})
            return reason
        self._best_accuracy = accuracy if self._best_accuracy is None else max(self._best_accuracy, accuracy)
        self._good_model = dict(self.server.global_state)
        return None

    def _final_report(self, elapsed: float) -> Dict[str, Any]:
        history = self.history
        last_accuracy = next((r["accuracy"] for r in reversed(history)
                              if r.get("accuracy") is not None and not r.get("restored")), None)
        report = {
            "run": self.settings.run_id, "rounds": len(history),
            "final_accuracy": last_accuracy,
            "bytes_up": sum(r["bytes_up"] for r in history),
            "bytes_down": sum(r["bytes_down"] for r in history),
            "bytes_full_model": sum(r.get("bytes_full_model", 0) for r in history),
            "rejected": sum(r.get("rejected_total", len(r["rejected"])) for r in history),
            "late": sum(len(r["late"]) for r in history),
            "session_time_s": round(elapsed, 3),
            "fingerprint": self.run_config.federation.fingerprint(),
            "raw_model_bytes": self.raw_model_bytes,
            "config": self.run_config.federation.to_dict(),
            "per_round": [{k: r[k] for k in ("round", "accuracy", "bytes_up", "bytes_down", "round_time_s",
                                             "overhead_s", "accepted", "missing")} for r in history],
        }
        atomic_write(self.store.report_path, json.dumps(report, indent=2, sort_keys=True).encode("utf-8"))
        plot_rounds(history, self.store.plot_path, f"run {self.settings.run_id}")
        return report
