"""The device's federated client over MQTT (protocol: docs/protocol.md).

It follows every model broadcast of the run (whole weights, or deltas on the
model it holds; a client that missed one reads the retained full model),
trains when a round announcement selects it and it holds that round's model,
and publishes its compressed update (fedcore.rounds.RoundClient does the
training call and the compression). paho reconnects on its own; after every
(re)connect the client announces itself again and re-sends an update the
coordinator has not acknowledged yet. Protocol logic runs in one thread, the
caller's; paho's thread only queues messages, a small thread sends heartbeats.
"""

import logging
import platform
import sys
import threading
import time
from typing import Any, Dict, Optional, Set, Tuple

from fedcore.errors import ConfigError, FedCoreError, MessageError
from fedcore.rounds import OutOfSync, RoundClient, RoundPlan, Trainer
from fedlink.link import Incoming, MqttLink
from fedlink.protocol import (
    ACK,
    ANNOUNCEMENT,
    PROTOCOL_VERSION,
    Topics,
    blob_id,
    check_name,
    from_json,
    to_json,
)

__all__ = ["Announcement", "FLClient", "default_capabilities"]

log = logging.getLogger(__name__)


class Announcement:
    """A parsed round announcement (or the end of the run)."""

    def __init__(self, data: Dict[str, Any]):
        if data.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            raise ConfigError(f"announcement: protocol version {data.get('v')!r}, this client speaks {PROTOCOL_VERSION}")
        self.done = data.get("done") is True
        self.plan_id = ""
        self.plan: Optional[RoundPlan] = None
        self.model_ids: Set[str] = set()
        self.model_id = self.full_id = ""
        if self.done:
            return
        plan_id = data.get("plan_id")
        if not isinstance(plan_id, str) or not plan_id.isalnum() or len(plan_id) > 64:
            raise ConfigError(f"announcement: plan_id must be a short alphanumeric id, got {plan_id!r}")
        model_id, full_id = data.get("model_id"), data.get("full_id")
        if not (isinstance(model_id, str) and model_id.isalnum() and isinstance(full_id, str) and full_id.isalnum()):
            raise ConfigError(f"announcement: model_id and full_id must be ids, got {[model_id, full_id]!r}")
        self.plan_id = plan_id
        self.plan = RoundPlan.from_dict(data.get("plan", {}))
        self.model_ids = {model_id, full_id}
        self.model_id, self.full_id = model_id, full_id


class FLClient:
    """One device in one run. `run()` returns when the coordinator ends the run
    (or `stop()` is called)."""

    def __init__(self, client_id: str, run_id: str, trainer: Trainer, link: MqttLink,
                 heartbeat_s: float = 5.0, capabilities: Optional[Dict[str, Any]] = None):
        self.client_id = check_name(client_id, "client id")
        self.topics = Topics(run_id)
        self.engine = RoundClient(client_id, trainer)
        self.link = link
        self.heartbeat_s = heartbeat_s
        self.capabilities = dict(capabilities or {})
        self.capabilities.setdefault("protocol", PROTOCOL_VERSION)
        self.capabilities.setdefault("python", platform.python_version())
        self.capabilities.setdefault("machine", platform.machine())
        self.announcement: Optional[Announcement] = None
        self.held_ids: Set[str] = set()       # ids of the blobs equivalent to the model held
        self.trained: Set[str] = set()        # plan ids this client already answered
        self.rounds_trained = 0
        self._pending: Optional[Tuple[str, str, str]] = None  # plan id, topic, update id (sent by the link)
        self._sent_at = 0.0
        self.resend_s = max(2.0, 2 * heartbeat_s)
        self._last_update: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._want_full = False
        self._full_model_bytes = 0  # full models read to catch up since the last update (reported)
        self._wire_mark = 0  # link.wire_received when the last update went out
        # A retained "done" left by an earlier run must not end a client that waits for the next one.
        self._seen_plan = False

    @staticmethod
    def subscriptions(topics: Topics, client_id: str):
        # Models are fetched (fedlink.link.MqttLink.fetch) when an announcement names one this client lacks.
        return [(topics.round, 1), (topics.ack(client_id), 1)]

    # ------------------------------------------------------------ presence

    def presence(self, status: str = "online") -> bytes:
        with self._lock:
            payload = {"v": PROTOCOL_VERSION, "status": status, "client": self.client_id,
                       "capabilities": self.capabilities, "time": time.time()}
            if self._last_update is not None:
                payload["last_update"] = dict(self._last_update)
        return to_json(payload)

    def on_connect(self) -> None:
        """After each (re)connect, in paho's thread: say we are here, re-send what is unacknowledged."""
        self.link.publish(self.topics.presence(self.client_id), self.presence(), qos=1, retain=True)
        self._resend("after reconnecting")

    def _resend(self, why: str) -> None:
        """Ask where the unacknowledged update stands: its last chunk goes out again, and the
        coordinator answers with its verdict, or names the chunks it lacks (the link re-sends
        those only). Nothing is sent while the broker is away, nor while chunks are going out."""
        pending = self._pending
        if pending is None or not self.link.connected.is_set():
            return
        out = self.link.outgoing(pending[1])
        if out is not None and not out.queue and self.link.probe(pending[1]):
            log.info("%s: asking after the update for plan %s %s", self.client_id, pending[0], why)
            self._sent_at = time.monotonic()

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self.link.connected.is_set():
                self.link.publish(self.topics.presence(self.client_id), self.presence(), qos=1, retain=True)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ main loop

    def run(self, timeout: Optional[float] = None) -> int:
        """Serve rounds until the run is done; returns the number of rounds trained."""
        beat = threading.Thread(target=self._heartbeats, name=f"{self.client_id}-heartbeat", daemon=True)
        beat.start()
        ends = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._stop.is_set():
                if ends is not None and time.monotonic() > ends:
                    raise RuntimeError(f"{self.client_id}: the run did not end within {timeout} s")
                self._handle(self.link.get(0.2))
                if self.announcement is not None and self.announcement.done and self._seen_plan:
                    log.info("%s: the coordinator ended the run after %d rounds trained here",
                             self.client_id, self.rounds_trained)
                    break
                self._maybe_train()
                if self._pending is not None and time.monotonic() - self._sent_at > self.resend_s:
                    self._resend(f"(no acknowledgement after {self.resend_s:.0f} s)")
        finally:
            self._stop.set()
        return self.rounds_trained

    def _handle(self, incoming: Optional[Incoming]) -> None:
        if incoming is not None and incoming.error:
            log.warning("%s: refused a chunk on %s: %s", self.client_id, incoming.topic, incoming.error)
            return
        if incoming is None or not incoming.payload:  # an empty retained message clears a topic
            return
        try:
            if incoming.topic == self.topics.round:
                self._on_announcement(from_json(incoming.payload, "round announcement", ANNOUNCEMENT))
            elif incoming.topic in (self.topics.model, self.topics.full_model):
                self._on_model(incoming.payload, incoming.topic == self.topics.full_model)
            elif incoming.topic == self.topics.ack(self.client_id):
                self._on_ack(from_json(incoming.payload, "acknowledgement", ACK))
        except (ConfigError, MessageError) as error:
            log.warning("%s: ignored a message on %s: %s", self.client_id, incoming.topic, error)

    def _on_announcement(self, data: Dict[str, Any]) -> None:
        announcement = Announcement(data)
        self.announcement = announcement
        self._seen_plan = self._seen_plan or announcement.plan is not None
        pending = self._pending
        if pending is not None and pending[0] != announcement.plan_id:
            self._pending = None  # that round is over: nobody wants the update any more
            self.link.finish(pending[1])
        elif pending is not None:
            # The same announcement again: the coordinator reconnected and may have missed our update.
            self._resend("(round announced again)")
        if announcement.plan is not None:
            if self.held_ids & announcement.model_ids:
                self.held_ids |= announcement.model_ids
            elif not self._want_full:
                # A client holding no model yet reads the whole one; else the broadcast (a delta
                # it cannot apply sends it to the whole one, see _on_model).
                whole = not self.held_ids and announcement.full_id != announcement.model_id
                if whole:
                    log.info("%s: holds no model yet: reading the retained full model", self.client_id)
                self._fetch(self.topics.full_model if whole else self.topics.model,
                            announcement.full_id if whole else announcement.model_id)
            log.info("%s: round %d announced (plan %s, %d selected%s)", self.client_id, announcement.plan.round,
                     announcement.plan_id, len(announcement.plan.selected),
                     ", including this client" if self.client_id in announcement.plan.selected else "")

    def _on_model(self, blob: bytes, full: bool) -> None:
        identity = blob_id(blob)
        if identity in self.held_ids:
            if full:
                self._stop_full()
            return
        try:
            number = self.engine.follow(blob)
        except OutOfSync as error:
            log.info("%s: %s; reading the retained full model", self.client_id, error)
            current = self.announcement
            if current is not None and current.full_id:
                self._fetch(self.topics.full_model, current.full_id)
            return
        self.held_ids = {identity}
        current = self.announcement
        if current is not None and identity in current.model_ids:
            self.held_ids |= current.model_ids
        log.info("%s: holds the model of round %d (%s, %d bytes)", self.client_id, number,
                 "full" if full else "broadcast", len(blob))
        if full:
            self._full_model_bytes += len(blob)
            self._stop_full()

    def _fetch(self, topic: str, want: str) -> None:
        """Read the retained blob `want` on `topic` (the link subscribes to its chunks)."""
        if topic == self.topics.full_model:
            self._want_full = True
        self.link.fetch(topic, want)

    def _stop_full(self) -> None:
        if self._want_full:
            self._want_full = False
            self.link.end_fetch(self.topics.full_model)

    def _on_ack(self, data: Dict[str, Any]) -> None:
        status, reason = data.get("status"), data.get("reason", "")
        pending = self._pending
        if status == "partial":
            if pending is not None and data.get("update_id", "").startswith(pending[2]):
                count = self.link.resend(pending[1], data["update_id"], data.get("missing", []))
                log.info("%s: the coordinator lacks %d chunk(s) of the update for plan %s: re-sending them",
                         self.client_id, count, pending[0])
            return
        if pending is not None and data.get("update_id") == pending[2]:
            self._pending = None
            self.link.finish(pending[1])
            if status not in ("accepted", "duplicate"):
                log.warning("%s: update for plan %s %s: %s", self.client_id, pending[0], status, reason)
            return
        # An answer to a message we did not send: someone else used our topic (the ACL should stop that).
        log.warning("%s: acknowledgement for an update this client did not send: %s %s", self.client_id,
                    status, reason)

    # ------------------------------------------------------------ training

    def _ready(self) -> Optional[Announcement]:
        current = self.announcement
        if current is None or current.plan is None or current.plan_id in self.trained:
            return None
        if self.client_id not in current.plan.selected:
            return None
        if not self.held_ids & current.model_ids or self.engine.model_round != current.plan.round:
            return None
        return current

    def _maybe_train(self) -> None:
        current = self._ready()
        if current is None:
            return
        plan = current.plan
        if plan is None:   # only the end of the run has none, and it is never current
            return
        self.trained.add(current.plan_id)
        began = time.monotonic()
        try:
            blob = self.engine.run_round(plan)
        except FedCoreError as error:
            # This round is lost for this client (it is marked done); the next one may work.
            log.error("%s: round %d failed: %s", self.client_id, plan.round, error)
            return
        train_s = time.monotonic() - began
        # Messages that came in while training: a newer announcement voids this update.
        while True:
            incoming = self.link.get(0.0)
            if incoming is None:
                break
            self._handle(incoming)
        if self.announcement is None or self.announcement.plan_id != current.plan_id:
            log.warning("%s: round %d was superseded while training; update dropped", self.client_id, plan.round)
            return
        topic = self.topics.update(self.client_id, current.plan_id)
        with self._lock:
            wire = self.link.wire_received
            self._last_update = {"plan_id": current.plan_id, "round": plan.round, "train_s": round(train_s, 4),
                                 "bytes": len(blob), "full_model_bytes": self._full_model_bytes,
                                 "wire_down": wire - self._wire_mark}
            self._full_model_bytes = 0
            self._wire_mark = wire
        # Presence first: the coordinator knows the training time when the update arrives (same
        # connection, QoS 1: the broker keeps the order).
        self.link.publish(self.topics.presence(self.client_id), self.presence(), qos=1, retain=True)
        self._pending = (current.plan_id, topic, blob_id(blob))
        self._sent_at = time.monotonic()
        self.link.send_blob(topic, blob)
        self.rounds_trained += 1
        log.info("%s: round %d trained in %.2f s, update of %d bytes sent", self.client_id, plan.round,
                 train_s, len(blob))


def default_capabilities(samples: int, trainer: str) -> Dict[str, Any]:
    return {"samples": int(samples), "trainer": trainer, "platform": sys.platform,
            "fewshot_while_training": False}
