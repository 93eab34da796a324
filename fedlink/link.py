"""The paho-mqtt (2.x) link used by the coordinator and the device clients.

paho does the reconnecting (reconnect_delay_set + its network thread, as its
own documentation advises); this class only re-subscribes and re-publishes the
caller's retained state after each (re)connect, and hands received messages to
the caller's thread through a queue so that no protocol logic runs inside
paho's callbacks.
"""

import collections
import hashlib
import logging
import queue
import socket
import ssl
import sys
import threading
import time
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Set, Tuple

import paho.mqtt.client as mqtt

from .chunks import (
    MAGIC,
    ChunkError,
    Reassembler,
    check_max_payload,
    chunk_count,
    chunk_message,
    chunk_topic,
    remember,
    split_topic,
)
from .settings import BrokerAddress

__all__ = ["DEFAULT_MAX_PAYLOAD", "Incoming", "MqttLink", "Outgoing"]

log = logging.getLogger(__name__)

INBOX_BYTES = 32 << 20  # what received messages may hold while they wait for the caller
DEFAULT_MAX_PAYLOAD = 128 << 10  # AWS IoT Core's cap; Mosquitto's message_size_limit is often this size
QUEUE_MESSAGES = 64  # what paho may hold unsent: a failed publish is then an error, not a growing queue
WINDOW = 8  # chunks handed to paho and not yet acknowledged by the broker, for all blobs together
STATUS_S = 2.0  # a blob under way without progress for this long: tell its sender what is missing


def _cost(topic: str, payload: bytes) -> int:
    """What a waiting message holds in memory, roughly: its payload, its topic and the record."""
    return len(payload) + len(topic) + 200


class Incoming(NamedTuple):
    topic: str
    payload: bytes
    received: float  # time.monotonic() at arrival
    error: str = ""  # a refused chunk: why (the payload is then empty)
    wire_bytes: int = 0  # a blob: the chunk messages that carried it, headers and repeats included
    blob_id: str = ""  # a refused chunk: the blob it claims to belong to (hex SHA-256), when it says


# on_status(topic, blob id (hex SHA-256), missing [first, last] chunk ranges; [] when the blob is
# complete here): the receiver of a blob tells its sender where the transfer stands.
StatusHook = Callable[[str, str, List[List[int]]], None]


class Outgoing:
    """A blob being sent as chunks on `topic`: which chunks still go out, and what crossed the wire."""

    def __init__(self, topic: str, blob: bytes, retain: bool, max_payload: int):
        self.topic, self.blob, self.retain = topic, blob, retain
        self.digest = hashlib.sha256(blob).digest()
        self.chunk_size, self.count = chunk_count(len(blob), max_payload)
        self.queue: Deque[int] = collections.deque(range(self.count))
        self.sent = 0  # chunk messages handed to the broker, re-sends included
        self.resent = 0
        self.wire_bytes = 0  # their bytes, headers included

    @property
    def blob_id(self) -> str:
        return self.digest.hex()


class MqttLink:
    """One MQTT connection. `subscriptions` are (topic filter, qos) pairs made
    again on every connect; `on_connect` (optional) runs after each connect in
    paho's thread, e.g. to publish presence again."""

    def __init__(self, address: BrokerAddress, client_id: str, subscriptions: List[Tuple[str, int]],
                 keepalive: int = 10, will: Optional[Tuple[str, bytes]] = None,
                 reconnect: Tuple[float, float] = (0.2, 5.0), ca_file: Optional[str] = None,
                 on_connect: Optional[Callable[[], None]] = None, inbox_bytes: int = INBOX_BYTES,
                 share_of: Callable[[str], str] = lambda topic: topic, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_blob_bytes: int = 256 << 20, on_status: Optional[StatusHook] = None):
        self.address = address
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        # Received messages wait here for the caller, in bounded memory: at most `inbox_bytes` in all,
        # and at most half of it from one sender (`share_of(topic)`), so that a flood costs a fixed
        # amount of memory and cannot crowd the others out. A message beyond is dropped and counted
        # (a device re-sends an update until it is acknowledged); one alone always gets in.
        # Senders in `priority` (a coordinator's selected clients) have an inbox of their own of the
        # same size: a flood from anyone else cannot crowd them out.
        self.inbox: Any = queue.Queue()  # a queue.Queue (subscripted only from 3.9) of (Incoming, its sender, its cost, whether it came in with priority)
        self.inbox_bytes = inbox_bytes
        self.priority: Set[str] = set()
        self.dropped = 0
        self._share_of = share_of
        self._held: Dict[str, int] = {}  # sender -> bytes waiting
        self._held_total = {False: 0, True: 0}  # bytes waiting, without and with priority
        self._held_lock = threading.Lock()
        self._dropped_noted = 0.0
        self.connected = threading.Event()
        self.connects = 0
        self.on_connect = on_connect  # settable after construction
        # Blobs travel as chunks of at most `max_payload` bytes (fedlink.chunks; 0: one message each).
        self.max_payload = check_max_payload(max_payload)
        self.on_status = on_status
        self._chunks = Reassembler(max_blob_bytes, sender_bytes=max(inbox_bytes // 2, max_blob_bytes),
                                   total_bytes=2 * max(inbox_bytes, max_blob_bytes))
        self._fetches: Dict[str, str] = {}  # blob topic -> the blob id wanted there
        self._fetch_filters: Dict[str, List[str]] = {}  # blob topic -> what its fetch subscribed
        self._told: Dict[str, float] = {}  # blob topic -> when its sender was last told (repeats)
        self._outbox: Dict[str, Outgoing] = {}  # blob topic -> the blob being sent there
        self._retained_counts: Dict[str, int] = {}  # blob topic -> chunks retained there
        self._inflight: Dict[int, int] = {}  # paho message id -> bytes, for chunks not yet acknowledged
        self._reserved = 0  # chunks being handed to paho right now
        self._early: Dict[int, None] = {}  # acks that came before _pump recorded their message id
        self._out_lock = threading.Lock()
        self._stall_checked = 0.0
        self.wire_sent = 0  # chunk bytes handed to the broker, headers and re-sends included
        self._chunk_lock = threading.Lock()
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True)
        if address.username:
            client.username_pw_set(address.username, address.password)
        if address.tls:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        # While the broker is away nothing piles up: chunks go out only while connected, a window at a
        # time, and paho holds at most QUEUE_MESSAGES; beyond, a publish fails and says so.
        client.max_queued_messages_set(QUEUE_MESSAGES)
        client.max_inflight_messages_set(20)
        # Fractions of a second work (paho only multiplies and sleeps): fast tests, quick recovery.
        client.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])  # type: ignore[arg-type]
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        self._client = client
        self._keepalive = keepalive

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "MqttLink":
        """Connect in the background; paho retries until the broker answers."""
        self._client.connect_async(self.address.host, self.address.port, keepalive=self._keepalive)
        self._client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, final: Optional[Tuple[str, bytes, bool]] = None) -> None:
        """Publish `final` (topic, payload, retain) if connected, then disconnect."""
        if final is not None and self.connected.is_set():
            info = self._client.publish(final[0], final[1], qos=1, retain=final[2])
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as error:
                log.warning("%s: final message not sent: %s", self.client_id, error)
        self._client.disconnect()
        self._client.loop_stop()

    # ------------------------------------------------------------ traffic

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; False when paho refused it (it then says why in the log)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("%s: publish to %s failed: %s", self.client_id, topic, mqtt.error_string(info.rc))
            return False
        return True

    def subscribe(self, topic: str, qos: int = 1) -> None:
        if (topic, qos) not in self.subscriptions:
            self.subscriptions.append((topic, qos))
        if self.connected.is_set():
            self._client.subscribe(topic, qos)

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions = [s for s in self.subscriptions if s[0] != topic]
        if self.connected.is_set():
            self._client.unsubscribe(topic)

    def get(self, timeout: float) -> Optional[Incoming]:
        """The next message or whole blob (chunks are put together here, in the caller's thread),
        or None after `timeout` seconds. A refused chunk comes out as an Incoming with `error`."""
        ends = time.monotonic() + max(0.0, timeout)
        while True:
            self._pump()
            self._tell_stalled()
            try:
                incoming, key, size, prior = self.inbox.get(timeout=max(0.0, min(ends - time.monotonic(), 0.5)))
            except queue.Empty:
                if time.monotonic() >= ends:
                    return None
                continue
            with self._held_lock:
                self._held_total[prior] -= size
                left = self._held[key] - size
                if left:
                    self._held[key] = left
                else:
                    del self._held[key]
            base, index = split_topic(incoming.topic)
            if index < 0:
                return incoming
            if incoming.payload:  # an empty one clears a retained chunk
                whole = self._take_chunk(base, index, incoming)
                if whole is not None:
                    return whole
            if time.monotonic() >= ends:
                return None

    # ------------------------------------------------------------ blobs as chunks

    def send_blob(self, topic: str, blob: bytes, retain: bool = False) -> Outgoing:
        """Send `blob` on `topic` as chunks (fedlink.chunks), replacing a blob still going out
        there. Chunks go out only while connected, WINDOW at a time; a retained blob clears the
        chunks a longer one left on the topic."""
        out = Outgoing(topic, blob, retain, self.max_payload)
        with self._out_lock:
            self._outbox[topic] = out
            stale = range(out.count, self._retained_counts.get(topic, 0)) if retain else range(0)
            if retain:
                self._retained_counts[topic] = out.count
        for index in stale:
            self.publish(chunk_topic(topic, index), b"", retain=True)
        self._pump()
        return out

    def resend(self, topic: str, blob_id: str, missing: List[List[int]]) -> int:
        """Queue again the chunks in `missing` ([first, last] ranges) of the blob going out on
        `topic`, if it is still the blob `blob_id`; how many were queued."""
        with self._out_lock:
            out = self._outbox.get(topic)
            if out is None or out.blob_id != blob_id:
                return 0
            queued = set(out.queue)
            added = 0
            for first, last in missing:
                for index in range(max(0, first), min(last, out.count - 1) + 1):
                    if index not in queued:
                        out.queue.append(index)
                        queued.add(index)
                        added += 1
            out.resent += added
        self._pump()
        return added

    def probe(self, topic: str) -> bool:
        """Send the last chunk of the blob going out on `topic` again: a receiver that has it all
        answers that it is complete, one that lacks chunks names them (on_status). False when
        no blob goes out there or nothing can be sent now."""
        with self._out_lock:
            out = self._outbox.get(topic)
            if out is None or not self.connected.is_set():
                return False
            if out.count - 1 not in out.queue:
                out.queue.append(out.count - 1)
                out.resent += 1
        self._pump()
        return True

    def outgoing(self, topic: str) -> Optional[Outgoing]:
        with self._out_lock:
            return self._outbox.get(topic)

    def finish(self, topic: str) -> Optional[Outgoing]:
        """Stop sending the blob on `topic` (it was acknowledged, or is void); what it sent."""
        with self._out_lock:
            return self._outbox.pop(topic, None)

    def set_blob_limits(self, max_blob_bytes: int, total_bytes: int) -> None:
        """What a blob may weigh here, and all blobs under way together (before start())."""
        self._chunks = Reassembler(max_blob_bytes, sender_bytes=2 * max_blob_bytes,
                                   total_bytes=max(total_bytes, 2 * max_blob_bytes))

    @property
    def wire_received(self) -> int:
        """Chunk bytes received, headers, repeats and refused ones included."""
        return self._chunks.wire_bytes

    def fetch(self, topic: str, want: str) -> None:
        """Receive the retained blob whose id starts with `want` on `topic`: subscribe to its
        chunks; after a reconnect, only to those still missing. Ends when the blob is whole
        (or with end_fetch); chunks of other blobs there are dropped."""
        with self._chunk_lock:
            if self._fetches.get(topic) == want:
                return
            self._fetches[topic] = want
        self._subscribe_fetch(topic)

    def end_fetch(self, topic: str) -> None:
        with self._chunk_lock:
            self._fetches.pop(topic, None)
            filters = self._fetch_filters.pop(topic, [])
        if filters and self.connected.is_set():
            self._client.unsubscribe(filters)

    def _subscribe_fetch(self, topic: str, reconnected: bool = False) -> None:
        with self._chunk_lock:
            want = self._fetches.get(topic)
            if want is None:
                return
            partial = self._chunks.partials.get(topic)
            if partial is not None and partial.blob.hex().startswith(want) and partial.missing_count() <= 256:
                # Resume: only the chunks not received yet cross the wire again.
                filters = [chunk_topic(topic, i) for first, last in partial.missing(limit=256)
                           for i in range(first, last + 1)]
            else:
                filters = [chunk_topic(topic, "+")]
            old = [] if reconnected else self._fetch_filters.get(topic, [])
            self._fetch_filters[topic] = filters
        if not self.connected.is_set():
            return
        gone = [f for f in old if f not in filters]
        if gone:
            self._client.unsubscribe(gone)
        self._client.subscribe([(f, 1) for f in filters if f not in old])

    def _take_chunk(self, base: str, index: int, incoming: Incoming) -> Optional[Incoming]:
        with self._chunk_lock:
            try:
                added = self._chunks.add(base, incoming.payload, self._share_of(base), index, incoming.received,
                                         self._fetches.get(base))
            except ChunkError as error:
                claimed = incoming.payload[8:40].hex() if incoming.payload[:4] == MAGIC[:4] else ""
                return Incoming(base, b"", incoming.received, str(error), blob_id=claimed)
            if added.other:
                return None
            finished = added.blob is not None and base in self._fetches
        if finished:
            self.end_fetch(base)
        if added.repeat and self.on_status is not None:
            # The sender re-sent a chunk we hold: it asks where the transfer stands (once a second).
            if time.monotonic() - self._told.get(base, 0.0) >= 1.0:
                remember(self._told, base, time.monotonic(), 1024)
                self.on_status(base, added.blob_id, added.missing or [])
        if added.blob is None:
            return None
        return Incoming(base, added.blob, incoming.received, wire_bytes=added.wire_bytes)

    def _tell_stalled(self) -> None:
        now = time.monotonic()
        if now - self._stall_checked < 0.5:
            return
        self._stall_checked = now
        with self._chunk_lock:
            for topic in self._chunks.expire(now):
                log.warning("%s: dropped the incomplete blob on %s (no chunk for %.0f s)", self.client_id, topic,
                            self._chunks.timeout_s)
            stalled = self._chunks.stalled(STATUS_S, now)
        if self.on_status is not None and self.connected.is_set():
            for topic, blob, missing in stalled:
                self.on_status(topic, blob, missing)

    def _pump(self) -> None:
        """Hand chunks to paho while connected and the window has room. paho's lock is never
        taken while ours is held (paho calls on_publish holding its own)."""
        while True:
            with self._out_lock:
                if not self.connected.is_set() or len(self._inflight) + self._reserved >= WINDOW:
                    return
                out = next((o for o in self._outbox.values() if o.queue), None)
                if out is None:
                    return
                index = out.queue.popleft()
                self._reserved += 1
            message = chunk_message(out.blob, out.digest, out.chunk_size, index)
            try:
                info = self._client.publish(chunk_topic(out.topic, index), message, qos=1, retain=out.retain)
            except (ValueError, TypeError) as error:  # e.g. one chunk over MQTT's 256 MiB: never sendable
                with self._out_lock:
                    self._reserved -= 1
                    if self._outbox.get(out.topic) is out:
                        del self._outbox[out.topic]
                log.error("%s: the blob on %s cannot be sent and is dropped: %s", self.client_id, out.topic, error)
                return
            with self._out_lock:
                self._reserved -= 1
                if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho sends it on reconnect
                    if info.mid in self._early:
                        del self._early[info.mid]  # acknowledged before we saw its id
                    else:
                        self._inflight[info.mid] = len(message)
                    out.sent += 1
                    out.wire_bytes += len(message)
                    self.wire_sent += len(message)
                    continue
                out.queue.appendleft(index)
            log.warning("%s: chunk %d of %s not sent: %s; it goes out when paho has room", self.client_id, index,
                        out.topic, mqtt.error_string(info.rc))
            return

    # ------------------------------------------------------------ paho callbacks

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("%s: broker refused the connection: %s", self.client_id, reason_code)
            return
        self.connects += 1
        # Small control messages (an ack, then a subscription) must not wait for the broker's
        # delayed ACK (Nagle's algorithm): that cost every fetch 40-90 ms on loopback.
        sock = client.socket()
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        log.info("%s: connected to %s:%d (connection %d)", self.client_id, self.address.host,
                 self.address.port, self.connects)
        for topic, qos in self.subscriptions:
            client.subscribe(topic, qos)
        self.connected.set()
        with self._chunk_lock:
            fetches = list(self._fetches)
        for topic in fetches:
            self._subscribe_fetch(topic, reconnected=True)
        self._pump()
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception:  # a bug in the hook must not kill paho's thread
                log.exception("%s: on_connect hook failed", self.client_id)

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._out_lock:
            if self._inflight.pop(mid, None) is None:
                # one of ours whose id _pump has not recorded yet, or a plain publish
                remember(self._early, mid, None, 256)
        self._pump()

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            log.warning("%s: disconnected (%s); paho reconnects", self.client_id, reason_code)
        else:
            log.info("%s: disconnected", self.client_id)

    def _handle_connect_fail(self, client, userdata) -> None:
        # paho calls this inside its `except OSError`: the exception says why (refused, DNS, TLS).
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError):
            log.warning("%s: TLS with %s:%d failed: %s; retrying (check --ca-file and the broker's "
                        "certificate)", self.client_id, self.address.host, self.address.port, error)
        else:
            log.info("%s: broker %s:%d not reachable yet (%s); retrying", self.client_id,
                     self.address.host, self.address.port, error or "no answer")

    def _handle_message(self, client, userdata, message) -> None:
        topic, payload = message.topic, bytes(message.payload)
        key, size = self._share_of(topic), _cost(topic, payload)
        prior = key in self.priority
        with self._held_lock:
            mine, held = self._held.get(key, 0), self._held_total[prior]
            admitted = held == 0 or (held + size <= self.inbox_bytes and (mine == 0 or mine + size <= self.inbox_bytes // 2))
            if admitted:
                self._held[key] = mine + size
                self._held_total[prior] += size
            else:
                self.dropped += 1
        if admitted:
            self.inbox.put((Incoming(topic, payload, time.monotonic()), key, size, prior))
        elif time.monotonic() - self._dropped_noted >= 5.0:  # a flood logs a line every 5 s, not a line a message
            self._dropped_noted = time.monotonic()
            log.warning("%s: inbox full (%d MiB; one sender may hold half): %d message(s) dropped so far, "
                        "the last from %s", self.client_id, self.inbox_bytes >> 20, self.dropped, key)

