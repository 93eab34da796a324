"""The federated round engine, shared by the in-process simulation and the MQTT
coordinator: whatever the transport, a round is

    server.open_round(available)  -> RoundPlan (who trains, how, with which codecs)
    server.broadcast              -> the encoded global model (downlink bytes)
    client.run_round(plan, blob)  -> the encoded update (uplink bytes)
    server.submit(blob, sender)   -> Verdict (accepted, or why not)
    server.close_round()          -> RoundResult (the new model, or "no new model")

The server keeps the global model in full precision; clients see the decoded
broadcast and, for ``update_kind = "delta"``, send their change relative to
it. With ``broadcast = "delta"`` the server sends, after the first round, only
the change between its model and what the clients hold (so the downlink can be
sparsified too, its error carried to the next round); every client, selected
or not, follows each broadcast, and one that missed some asks for the full
model (``RoundServer.full_model``). Failures are data: a rejected, late or
duplicate update is a Verdict, and a round without enough updates closes with
the previous model kept. Who is selected and how updates combine is the
server's strategy (FedAvg by default; see ``strategy``).

Modules: ``config`` (the run file's [federation] table), ``records`` (plan,
verdict, round result), ``strategy``, ``server``, ``client``.
"""

from .client import OutOfSync, RoundClient, Trainer, TrainResult, client_seed
from .config import UPDATE_KINDS, FederationConfig, TrainConfig
from .records import RoundPlan, RoundResult, Verdict
from .server import RoundServer, RoundTrainer, simulate
from .strategy import (
    STRATEGIES,
    FedAvg,
    FedAvgM,
    Median,
    Strategy,
    TrimmedMean,
    make_strategy,
    register_strategy,
    select_clients,
)

__all__ = [
    "UPDATE_KINDS",
    "TrainConfig",
    "FederationConfig",
    "RoundPlan",
    "Verdict",
    "RoundResult",
    "RoundServer",
    "RoundClient",
    "OutOfSync",
    "Trainer",
    "TrainResult",
    "RoundTrainer",
    "Strategy",
    "FedAvg",
    "FedAvgM",
    "Median",
    "TrimmedMean",
    "STRATEGIES",
    "make_strategy",
    "register_strategy",
    "select_clients",
    "client_seed",
    "simulate",
]
