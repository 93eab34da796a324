"""Our round engine on Flower's simulation engine (flwr, its Ray backend): `engine = "flower"`.

    python -m training.fl --config configs/fl/fmnist_mlp.toml --engine flower
    pip install -e ".[scale]"        # flwr[simulation] and ray, pinned; workstation only

Each client is a Flower ClientApp on a virtual SuperNode (`partition-id` n is client-00n):
it decodes the broadcast, trains with the run's trainer and encodes its update with its
own codecs, exactly as a RoundClient does; its error-feedback residual lives in the node's
Context between rounds. The ServerApp drives fedcore's RoundServer (selection, validation,
the strategy's aggregation: FedAvg, FedAvgM, median, trimmed mean) through Flower's Grid.
What travels in Flower's messages is our container's bytes (a ConfigRecord of bytes), so
the byte ledger is counted from the same messages as in our own engine, and with the same
config and seed both engines give the same models and ledgers, bit for bit.

Flower users can take our compression the other way round: `fedcore_mod` for their
ClientApp and `FedcoreCompression` around their server Strategy (see the README).
"""

import hashlib
import json
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from fedcore.container import Message as FedcoreMessage
from fedcore.container import decode_message, encode_message
from fedcore.errors import ConfigError, FedCoreError
from fedcore.experiment import client_ids
from fedcore.rounds import RoundPlan, RoundResult, RoundServer

__all__ = ["run_on_flower", "make_client_app", "fedcore_mod", "FedcoreCompression", "backend_config",
           "RECORD"]

RECORD = "fedcore"  # the ConfigRecord our bytes travel in

try:
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import Strategy
except ImportError as error:  # pragma: no cover - the message is the point
    raise ConfigError(f"engine \"flower\" needs Flower (flwr[simulation]) and Ray: pip install -e \".[scale]\" "
                      f"({error})") from None


def backend_config(sim) -> Dict[str, Any]:
    """Flower's Ray backend settings from [simulation.flower]."""
    flower = sim.flower
    init: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if flower.ray_address:
        init["address"] = flower.ray_address
    else:
        init["num_cpus"] = flower.num_cpus or os.cpu_count() or 1
    return {"client_resources": {"num_cpus": flower.client_cpus, "num_gpus": flower.client_gpus},
            "init_args": init}


# ----------------------------------------------------------------------------- client side


_ACTOR_SETUPS: Dict[str, Any] = {}


def _client_setup(settings: Mapping[str, Any]):
    """The run's Setup in this Ray worker, built once per worker and run (data, model, partition)."""
    import torch

    from .config import load_config
    from .simulation import build, load_data

    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _ACTOR_SETUPS:
        _ACTOR_SETUPS.clear()
        run, sim = load_config(settings)
        torch.set_num_threads(sim.threads)  # float sums depend on it: the same as the driver's
        _ACTOR_SETUPS[key] = build(run, sim, load_data(run, sim))
    return _ACTOR_SETUPS[key]


def _pack(tensors: Mapping[str, Any]) -> bytes:
    """Float32 tensors as one lossless container (a node's carried state)."""
    return encode_message(FedcoreMessage(dict(tensors), 0, "carried", 0, "weights", {}))[0]


def _ray_node() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - not inside Ray: no node to name
        return ""


def make_client_app(settings: Mapping[str, Any]) -> "ClientApp":
    """The ClientApp of a run: node `partition-id` n is our client n."""
    app = ClientApp()

    @app.query()
    def identify(message: Message, context: Context) -> Message:
        ids = client_ids(int(settings["data"].get("num_clients", 10)))
        who = ids[int(context.node_config["partition-id"])]
        return Message(RecordDict({RECORD: ConfigRecord({"client": who})}), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        setup = _client_setup(settings)
        who = client_ids(len(setup.clients))[int(context.node_config["partition-id"])]
        client = setup.clients[who]
        record = message.content[RECORD]
        plan = RoundPlan.from_dict(json.loads(record["plan"]))
        carried = context.state[RECORD]["carried"] if RECORD in context.state else b""
        client.restore_carried(plan.uplink, decode_message(carried).tensors if carried else {})
        update = client.run_round(plan, bytes(record["model"]))
        client.forget_model()  # the next round brings its own (this worker serves many clients)
        residual = client.carried()
        context.state[RECORD] = ConfigRecord({"carried": _pack(residual) if residual else b""})
        # Where it ran (the Ray node), beside the update: not part of the counted bytes.
        return Message(RecordDict({RECORD: ConfigRecord({"update": update, "ray_node": _ray_node()})}),
                       reply_to=message)

    return app


# ----------------------------------------------------------------------------- server side


def _identify(grid: "Grid", expected: int, wait_s: float = 120.0) -> Dict[str, int]:
    """{client id: node id}, asked of every node once they have all registered."""
    deadline = time.monotonic() + wait_s
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.2)  # the ServerApp starts before the SuperNodes have registered
        nodes = list(grid.get_node_ids())
    asks = [Message(RecordDict({RECORD: ConfigRecord({"ask": "client"})}), dst_node_id=node,
                    message_type="query", group_id="identify") for node in nodes]
    found = {}
    for reply in grid.send_and_receive(asks):
        if reply.has_error():
            raise FedCoreError(f"Flower node {reply.metadata.src_node_id} could not say who it is: {reply.error}")
        found[str(reply.content[RECORD]["client"])] = reply.metadata.src_node_id
    if len(found) != expected:
        raise FedCoreError(f"{len(found)} of {expected} Flower nodes answered who they are")
    return found


def _flower_round(grid: "Grid", server: RoundServer, nodes: Mapping[str, int], ray_nodes: set) -> RoundResult:
    """One round through Flower's Grid: the same steps as fedcore.rounds.simulate; `ray_nodes`
    collects the Ray nodes the clients trained on."""
    plan = server.open_round(sorted(nodes))
    content = {"plan": json.dumps(plan.to_dict()), "model": server.broadcast}
    messages = [Message(RecordDict({RECORD: ConfigRecord(dict(content))}), dst_node_id=nodes[who],
                        message_type="train", group_id=str(plan.round)) for who in plan.selected]
    client_of = {node: who for who, node in nodes.items()}
    for reply in grid.send_and_receive(messages):
        who = client_of.get(reply.metadata.src_node_id, "?")
        if reply.has_error():
            raise FedCoreError(f"Flower client {who}: {reply.error}")
        ray_nodes.add(str(reply.content[RECORD].get("ray_node", "")))
        verdict = server.submit(bytes(reply.content[RECORD]["update"]), sender=who)
        if not verdict.accepted:
            raise FedCoreError(f"simulated client {who}: update {verdict.status}: {verdict.reason}")
    return server.close_round()


def run_on_flower(setup, log: Optional[Callable[[Dict[str, Any]], None]] = None,
                  progress: bool = True) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Run a built simulation (training.fl.simulation.Setup) on Flower's simulation engine;
    return run_rounds' rows and summary (with "ray_nodes": how many Ray nodes ran clients)."""
    from flwr.simulation import run_simulation

    from .simulation import run_rounds

    if setup.run.federation.broadcast != "weights":
        raise ConfigError("engine \"flower\" sends the round's model to the selected nodes only: "
                          "federation.broadcast = \"delta\" (which every client must follow) needs another engine")
    outcome: Dict[str, Any] = {}
    ray_nodes: set = set()
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            nodes = _identify(grid, len(setup.clients))
            outcome["value"] = run_rounds(setup, log, progress,
                                          play=lambda: _flower_round(grid, setup.server, nodes, ray_nodes))
        except BaseException as error:  # noqa: B036 - carried to the caller's thread
            outcome["error"] = error

    run_simulation(server_app, make_client_app(dict(setup.run.settings)), num_supernodes=len(setup.clients),
                   backend_config=backend_config(setup.sim))
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        raise FedCoreError("Flower's simulation ended before the rounds ran (its log above says why)")
    rows, summary = outcome["value"]
    summary["ray_nodes"] = len(ray_nodes - {""})
    return rows, summary


# ----------------------------------------------------------------------------- for Flower users


def _arrays(tensors: Mapping[str, Any]) -> "ArrayRecord":
    return ArrayRecord({name: Array(value) for name, value in tensors.items()})


def fedcore_mod(message: Message, context: Context, call_next) -> Message:
    """A ClientApp mod: a train message whose arrays came as our container (FedcoreCompression
    on the server) reaches the ClientApp as a plain ArrayRecord "arrays"; the reply's "arrays"
    leave encoded with the uplink codecs the server asked for (error feedback kept in the node's
    Context). Messages without our record pass through untouched."""
    import numpy as np

    from fedcore.compression import CompressionConfig, Compressor

    if message.metadata.message_type != "train" or RECORD not in message.content:
        return call_next(message, context)
    record = message.content[RECORD]
    received = decode_message(bytes(record["model"]))
    inner = RecordDict({"arrays": _arrays(received.tensors),
                        **{k: v for k, v in message.content.items() if k != RECORD}})
    message.content = inner
    reply = call_next(message, context)
    if reply.has_error():
        return reply
    uplink = json.loads(record["uplink"])
    compressor = Compressor(CompressionConfig.from_dict(uplink))
    state = context.state[RECORD] if RECORD in context.state else None
    if compressor.feedback is not None and state is not None and state.get("carried"):
        compressor.feedback.residual = decode_message(bytes(state["carried"])).tensors
    arrays = {n: np.asarray(a.numpy(), np.float32) for n, a in reply.content["arrays"].items()}
    samples = 0
    metrics = reply.content.get("metrics")
    if metrics is not None and "num-examples" in metrics:
        samples = int(metrics["num-examples"])
    blob, _ = compressor.compress(arrays, round=int(record["round"]), sender=str(context.node_id),
                                  num_samples=samples, kind="weights")
    if compressor.feedback is not None:
        context.state[RECORD] = ConfigRecord({"carried": _pack(compressor.feedback.residual)})
    out = RecordDict({k: v for k, v in reply.content.items() if k != "arrays"})
    out[RECORD] = ConfigRecord({"update": blob})
    reply.content = out
    return reply


class FedcoreCompression(Strategy):
    """Wraps a Flower Strategy (FedAvg, ...): its train messages carry the model as our
    container encoded with `downlink` codecs, and ask the clients' `fedcore_mod` for updates
    encoded with `uplink` codecs; replies are decoded before the wrapped strategy aggregates
    them. bytes_down / bytes_up count the containers, round by round."""

    def __init__(self, strategy: Strategy, uplink: Optional[Mapping[str, Any]] = None,
                 downlink: Optional[Mapping[str, Any]] = None):
        from fedcore.compression import CompressionConfig, Compressor

        self.strategy = strategy
        self.uplink = dict(uplink or {})
        CompressionConfig.from_dict(self.uplink)  # a bad setting fails now, not in round 7
        self._downlink = Compressor(CompressionConfig.from_dict(dict(downlink or {})))
        self.bytes_up: Dict[int, int] = {}
        self.bytes_down: Dict[int, int] = {}

    def configure_train(self, server_round: int, arrays: "ArrayRecord", config: "ConfigRecord", grid: "Grid"):
        import numpy as np

        tensors = {n: np.asarray(a.numpy(), np.float32) for n, a in arrays.items()}
        blob, _ = self._downlink.compress(tensors, round=server_round, sender="server", kind="weights")
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        for message in messages:
            content = RecordDict({k: v for k, v in message.content.items() if k != "arrays"})
            content[RECORD] = ConfigRecord({"model": blob, "uplink": json.dumps(self.uplink), "round": server_round})
            message.content = content
        self.bytes_down[server_round] = len(blob) * len(messages)
        return messages

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        sent = 0
        for reply in replies:
            if reply.has_error() or RECORD not in reply.content:
                continue
            blob = bytes(reply.content[RECORD]["update"])
            sent += len(blob)
            decoded = decode_message(blob)
            content = RecordDict({k: v for k, v in reply.content.items() if k != RECORD})
            content["arrays"] = _arrays(decoded.tensors)
            reply.content = content
        self.bytes_up[server_round] = sent
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if metrics is not None:
            metrics = MetricRecord({**dict(metrics), "bytes-up": sent, "bytes-down": self.bytes_down[server_round]})
        return arrays, metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
