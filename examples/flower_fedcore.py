"""A Flower app of your own, with this project's compression on its messages.

Your ClientApp takes `fedcore_mod`; your server Strategy goes inside `FedcoreCompression`.
The model then travels as our container: 8-bit affine quantized downlink, top-25 % sparse
8-bit updates with error feedback uplink (any [compression.*] setting of a run file works),
while your own code keeps seeing plain ArrayRecords. Run it (a local Ray, a few seconds):

    python examples/flower_fedcore.py

The model here is fedcore's numpy MLP on a small synthetic task, to stay short; a ClientApp
training a torch model is the same: read message.content["arrays"], reply with "arrays" and
a MetricRecord with "num-examples".
"""

from typing import Any, Dict

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from fedcore.models import MLP
from training.fl.flower import FedcoreCompression, fedcore_mod

FEATURES, CLASSES, NODES, ROUNDS = 64, 4, 4, 3
UPLINK = {"sparsify": {"keep": 0.25}, "error_feedback": True, "wire": {"bits": 8}}
DOWNLINK = {"wire": {"bits": 8}}
OUTCOME: Dict[str, Any] = {}  # what the ServerApp found, for whoever runs this file


def local_data(partition: int, n: int = 200):
    """A stand-in for your data: noisy copies of one pattern per class."""
    patterns = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)).astype(np.float32)
    rng = np.random.default_rng(100 + partition)
    y = rng.integers(0, CLASSES, n)
    return (patterns[y] + 0.8 * rng.normal(size=(n, FEATURES))).astype(np.float32), y.astype(np.int64)


def new_model() -> MLP:
    return MLP([FEATURES, 64, CLASSES], seed=0)


client_app = ClientApp(mods=[fedcore_mod])


@client_app.train()
def train(message: Message, context: Context) -> Message:
    model = new_model()
    model.load_state_dict({n: a.numpy() for n, a in message.content["arrays"].items()})
    x, y = local_data(int(context.node_config["partition-id"]))
    model.train_epochs(x, y, epochs=1, batch_size=16, lr=0.1, seed=int(context.node_id) % 1000)
    reply = RecordDict({"arrays": arrays(model.state_dict()), "metrics": MetricRecord({"num-examples": len(y)})})
    return Message(reply, reply_to=message)


def arrays(state) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(value, np.float32)) for name, value in state.items()})


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedcoreCompression(FedAvg(fraction_evaluate=0.0, min_train_nodes=NODES, min_available_nodes=NODES),
                                  uplink=UPLINK, downlink=DOWNLINK)
    initial = arrays(new_model().state_dict())
    result = strategy.start(grid, initial, num_rounds=ROUNDS)
    model = new_model()
    model.load_state_dict({n: a.numpy() for n, a in result.arrays.items()})
    x, y = local_data(partition=99)
    OUTCOME.update(accuracy=float(np.mean(model.predict(x) == y)), bytes_up=dict(strategy.bytes_up),
                   bytes_down=dict(strategy.bytes_down),
                   float32_bytes=4 * sum(v.size for v in model.state_dict().values()))


if __name__ == "__main__":
    run_simulation(server_app, client_app, num_supernodes=NODES,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    print(f"accuracy {OUTCOME['accuracy']:.3f}; bytes up a round {OUTCOME['bytes_up']}, down {OUTCOME['bytes_down']} "
          f"(float32 model: {OUTCOME['float32_bytes']:,d} bytes a message)")
