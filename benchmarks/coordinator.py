"""Coordinator benchmark: `make bench-coordinator`.

1. Server cost per round against the number of clients (10, 100, 500, 1,000
   lightweight simulated clients; the seed study's MLP-128, 101,770
   parameters): decode + validate every update (RoundServer.submit), FedAvg
   (close_round), and encode the next broadcast (a compressed delta,
   open_round), on one core, with the round's peak memory (RSS, sampled).
   Updates are real compressed messages (top-15% + error feedback + 4-bit +
   Deflate), made before the clock starts. Beside the 1,000-update round, the
   same round as the server did it before its memory stopped growing with the
   clients: every decoded update held until the close.
2. End-to-end round overhead on loopback: a real broker, the coordinator and
   10 device processes on Fashion-MNIST (coordinator.testbed); overhead =
   round time minus the slowest client's training time, as the coordinator
   logs it.
3. What chunks cost (fedlink.chunks): a 5 MB model from one link to another
   through the same broker, retained as the coordinator sends it, in 128 KiB
   chunks (the default, what a capped broker needs) and as one message (the
   baseline), interleaved, 5 times each: median time and the bytes on the wire.

Figures are printed next to their targets; JSON goes to runs/bench/coordinator.json.

What it needs: nothing for the server cost; for the end-to-end part
Fashion-MNIST (`apt-get install dataset-fashion-mnist`, which `make
bench-coordinator` does as root) and a broker (Mosquitto, else the embedded one).
Exit status: 0 every target met, 1 one missed, 2 nothing missed but the
end-to-end part could not run (the last line says why).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the server-cost target is for one core

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.memory import PeakMemory  # noqa: E402
from benchmarks.verdict import Verdict, fashion_mnist_missing  # noqa: E402
from coordinator.testbed import Testbed  # noqa: E402
from fedcore.aggregate import aggregate  # noqa: E402
from fedcore.compression import CompressionConfig, Compressor  # noqa: E402
from fedcore.experiment import client_ids, read_toml  # noqa: E402
from fedcore.models import MLP  # noqa: E402
from fedcore.rounds import FederationConfig, RoundServer, Strategy  # noqa: E402
from fedcore.rounds.gather import KeepAll  # noqa: E402
from fedlink.link import DEFAULT_MAX_PAYLOAD, MqttLink  # noqa: E402
from fedlink.protocol import blob_id  # noqa: E402
from fedlink.settings import parse_broker  # noqa: E402

OUT = os.path.join("runs", "bench")
CONFIG = os.path.join("configs", "testbed", "fmnist_mlp128.toml")
UPLINK = {"sparsify": {"keep": 0.15}, "error_feedback": True, "wire": {"bits": 4, "entropy": "deflate"}}
DOWNLINK = {"sparsify": {"keep": 0.15}, "wire": {"bits": 4, "entropy": "deflate"}}
SERVER_TARGET_S = 2.0      # decode + validate + aggregate + encode of 100 updates
THOUSAND_TARGET_S = 1.0    # the same for 1,000 updates
THOUSAND_TARGET_MB = 150   # peak RSS of the process during that round
OVERHEAD_TARGET_S = 1.0    # round time minus the slowest client's training, 10 clients
CHUNK_BYTES_TARGET = 0.001  # chunk headers and re-sends: at most 0.1 % more bytes than the model
CHUNK_TIME_TARGET = 1.5     # 5 MB in chunks: at most 1.5x the time of one message


def make_updates(model: Dict[str, np.ndarray], count: int, seed: int = 0) -> List[bytes]:
    """`count` compressed round-1 updates from distinct clients (untimed)."""
    rng = np.random.default_rng(seed)
    updates = []
    for cid in client_ids(count):
        delta = {n: (rng.standard_normal(v.shape) * 1e-3).astype(np.float32) for n, v in model.items()}
        blob, _ = Compressor(CompressionConfig.from_dict(UPLINK)).compress(
            delta, round=1, sender=cid, num_samples=int(rng.integers(50, 600)), kind="delta")
        updates.append(blob)
    return updates


class KeepEveryUpdate(Strategy):
    """FedAvg as the server did it before: every decoded update held until the close."""

    name = "fedavg, every update held"

    def gather(self, plan, model, spill_dir=None):
        return KeepAll(memory_bytes=1 << 62)

    def aggregate(self, plan, model, updates, failures):
        return aggregate([(m.tensors, m.num_samples) for _, m in updates], plan.update_kind, model)


def server_cost(counts: List[int], baseline_at: int = 1000) -> List[Dict[str, Any]]:
    model = MLP([784, 128, 10], seed=0).state_dict()
    parameters = sum(v.size for v in model.values())
    print(f"server cost: MLP [784, 128, 10], {parameters} parameters; making {max(counts)} updates ...", flush=True)
    updates = make_updates(model, max(counts))
    rows = []
    runs = [(count, None) for count in counts] + ([(baseline_at, KeepEveryUpdate())] if baseline_at in counts else [])
    for count, strategy in runs:
        config = FederationConfig.from_dict(
            {"rounds": 2, "min_clients": 1, "min_updates": 1, "broadcast": "delta", "seed": 0},
            {"uplink": UPLINK, "downlink": DOWNLINK})
        server = RoundServer(model, config, strategy=strategy)
        ids = client_ids(count)
        server.open_round(ids)
        with PeakMemory(every_s=0.01) as memory:
            began = time.perf_counter()
            verdicts = [server.submit(blob, sender) for blob, sender in zip(updates[:count], ids)]
            decoded = time.perf_counter()
            result = server.close_round()
            aggregated = time.perf_counter()
            server.open_round(ids)  # encodes the next broadcast: the compressed change of the model
            encoded = time.perf_counter()
        assert all(v.accepted for v in verdicts) and result.aggregated, "every benchmark update must count"
        rows.append({
            "clients": count, "strategy": server.strategy.name, "peak_rss_mb": memory.peak / 1e6,
            "update_bytes_mean": int(np.mean([len(u) for u in updates[:count]])),
            "decode_validate_s": decoded - began, "aggregate_s": aggregated - decoded,
            "encode_s": encoded - aggregated, "total_s": encoded - began,
            "per_update_ms": 1000 * (decoded - began) / count, "broadcast_bytes": len(server.broadcast),
        })
    return rows


def round_overhead(rounds: int, broker: str, train_limit: int) -> Dict[str, Any]:
    """The testbed config, shortened, through coordinator.testbed; overheads from rounds.jsonl."""
    settings = read_toml(CONFIG)
    settings["name"] = "bench-coordinator"
    settings["federation"]["rounds"] = rounds
    settings["data"]["train_limit"] = train_limit
    settings["data"]["test_limit"] = 2000
    run_dir = os.path.join(OUT, "coordinator-e2e")
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    config = os.path.join(run_dir, "run.json")
    with open(config, "w") as handle:
        json.dump(settings, handle)
    summary = Testbed(config, run_dir, 10, broker, nice=0).run()
    if summary["coordinator_status"] != 0:
        raise RuntimeError(f"the coordinator failed; see {run_dir}/logs")
    with open(os.path.join(run_dir, "rounds.jsonl")) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    overheads = [r["overhead_s"] for r in records if r.get("overhead_s") is not None]
    slowest = [max(c["train_s"] for c in r["clients"].values() if c.get("train_s") is not None) for r in records]
    return {"broker": broker, "rounds": len(records), "overhead_s": overheads,
            "overhead_median_s": statistics.median(overheads) if overheads else None,
            "overhead_max_s": max(overheads) if overheads else None,
            "round_time_s": [r["round_time_s"] for r in records], "slowest_train_s": slowest,
            "final_accuracy": records[-1].get("accuracy") if records else None}


def chunk_cost(broker: str, size: int = 5_000_000, repeats: int = 5) -> Dict[str, Any]:
    """A `size`-byte model between two links through the broker, as chunks and as one message."""
    run_dir = os.path.join(OUT, "coordinator-chunks")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(os.path.join(run_dir, "logs"))
    bed = Testbed(os.devnull, run_dir, 0, broker)
    address = parse_broker(bed.start_broker())
    blob = np.random.default_rng(0).standard_normal(size // 4).astype(np.float32).tobytes()
    modes = {"128 KiB chunks": DEFAULT_MAX_PAYLOAD, "one message": 0}
    times: Dict[str, List[float]] = {name: [] for name in modes}
    wire: Dict[str, int] = {}
    try:
        for repeat in range(repeats):
            for name, cap in modes.items():
                sender = MqttLink(address, f"bench-sender-{repeat}-{cap}", [], max_payload=cap).start()
                receiver = MqttLink(address, f"bench-receiver-{repeat}-{cap}", [], max_blob_bytes=2 * size).start()
                try:
                    if not (sender.wait_connected(10) and receiver.wait_connected(10)):
                        raise RuntimeError(f"no connection to the {broker} broker")
                    topic = f"bench/chunks/{repeat}/{cap}"
                    receiver.fetch(topic, blob_id(blob))
                    time.sleep(0.3)  # the subscription is in place
                    began = time.perf_counter()
                    sender.send_blob(topic, blob, retain=True)
                    incoming = receiver.get(60)
                    if incoming is None or incoming.payload != blob:
                        raise RuntimeError(f"{name}: the model did not come through whole within 60 s")
                    times[name].append(time.perf_counter() - began)
                    wire[name] = incoming.wire_bytes
                finally:
                    sender.stop()
                    receiver.stop()
    finally:
        bed.stop()
    rows = {name: {"median_s": statistics.median(times[name]), "times_s": times[name], "wire_bytes": wire[name],
                   "extra_bytes": wire[name] - size} for name in modes}
    chunked, whole = rows["128 KiB chunks"], rows["one message"]
    return {"broker": broker, "model_bytes": size, "modes": rows,
            "time_ratio": chunked["median_s"] / whole["median_s"],
            "byte_overhead": chunked["extra_bytes"] / size}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 500, 1000], help="numbers of clients a round to measure (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=4, help="end-to-end rounds")
    parser.add_argument("--train-limit", type=int, default=20000, help="training images shared by the 10 devices")
    parser.add_argument("--broker", default="mosquitto" if shutil.which("mosquitto") or os.path.exists(
        "/usr/sbin/mosquitto") else "embedded", help="mosquitto, embedded, or an mqtt:// URL")
    parser.add_argument("--skip-e2e", action="store_true", help="server cost only (no broker)")
    args = parser.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    rows = server_cost(sorted(set(args.clients)))
    print(f"\n{'clients':>7} {'strategy':>26} {'decode+validate s':>17} {'aggregate s':>11} {'encode s':>8} "
          f"{'total s':>8} {'ms/update':>9} {'update B':>9} {'peak RSS MB':>11}")
    for row in rows:
        print(f"{row['clients']:>7} {row['strategy']:>26} {row['decode_validate_s']:>17.3f} {row['aggregate_s']:>11.3f} "
              f"{row['encode_s']:>8.3f} {row['total_s']:>8.3f} {row['per_update_ms']:>9.2f} "
              f"{row['update_bytes_mean']:>9} {row['peak_rss_mb']:>11.0f}")
    checks = []
    hundred = [r for r in rows if r["clients"] == 100]
    if hundred:
        checks.append(("server: decode+validate+aggregate+encode, 100 updates, 1 core", hundred[0]["total_s"],
                       SERVER_TARGET_S))
    thousand = [r for r in rows if r["clients"] == 1000 and r["strategy"] == "fedavg"]
    if thousand:
        checks.append(("server: the same, 1,000 updates, 1 core", thousand[0]["total_s"], THOUSAND_TARGET_S))
        memory_checks = [("server: peak RSS of that round (MB)", thousand[0]["peak_rss_mb"], THOUSAND_TARGET_MB)]
    else:
        memory_checks = []
    e2e = None
    verdict = Verdict("bench-coordinator")
    fmnist = None if args.skip_e2e else fashion_mnist_missing()
    if fmnist:
        verdict.not_run("the end-to-end round overhead", "Fashion-MNIST", fmnist)
    elif not args.skip_e2e:
        print(f"\nend to end: 10 device processes, {args.rounds} rounds, broker {args.broker} ...", flush=True)
        try:
            e2e = round_overhead(args.rounds, args.broker, args.train_limit)
        except RuntimeError as error:  # the testbed's coordinator failed: the target cannot be met
            print(f"end to end: {error}")
            verdict.target(f"end-to-end run ({error})", False)
        else:
            print(f"round overhead (round time - slowest training): median {e2e['overhead_median_s']:.3f} s, "
                  f"max {e2e['overhead_max_s']:.3f} s over {len(e2e['overhead_s'])} rounds")
            checks.append(("end-to-end round overhead, 10 clients, loopback (max)", e2e["overhead_max_s"],
                           OVERHEAD_TARGET_S))
    chunks = None
    if not args.skip_e2e and not args.broker.startswith(("mqtt://", "mqtts://")):
        print(f"\nchunks: a 5 MB model between two links through {args.broker}, 5 times each way of sending ...",
              flush=True)
        try:
            chunks = chunk_cost(args.broker)
        except RuntimeError as error:
            print(f"chunks: {error}")
            verdict.target(f"chunk transfer ({error})", False)
        else:
            for name, row in chunks["modes"].items():
                print(f"  {name:<15} median {row['median_s']:.3f} s ({chunks['model_bytes'] / row['median_s'] / 1e6:.0f}"
                      f" MB/s), {row['wire_bytes']} bytes on the wire ({row['extra_bytes']} beyond the model)")
    print("\ntarget                                                             measured   target")
    for what, value, target in checks:
        ok = verdict.target(f"{what}: {value:.3f} s < {target:.1f} s", value is not None and value < target)
        print(f"{what:<64} {value:>8.3f} s < {target:.1f} s  {'ok' if ok else 'MISSED'}")
    for what, value, target in memory_checks:
        ok = verdict.target(f"{what}: {value:.0f} <= {target}", value <= target)
        print(f"{what:<64} {value:>8.0f}   <= {target}  {'ok' if ok else 'MISSED'}")
    if chunks is not None:
        ratio, extra = chunks["time_ratio"], chunks["byte_overhead"]
        ok = verdict.target(f"5 MB in chunks / one message, time: {ratio:.2f}x <= {CHUNK_TIME_TARGET}x",
                            ratio <= CHUNK_TIME_TARGET)
        print(f"{'5 MB in 128 KiB chunks / one message: time (medians)':<64} {ratio:>8.2f} x <= "
              f"{CHUNK_TIME_TARGET}x  {'ok' if ok else 'MISSED'}")
        ok = verdict.target(f"chunk bytes beyond the model: {100 * extra:.3f} % <= {100 * CHUNK_BYTES_TARGET:.1f} %",
                            extra <= CHUNK_BYTES_TARGET)
        print(f"{'5 MB in 128 KiB chunks: bytes beyond the model (%)':<64} {100 * extra:>8.3f}   <= "
              f"{100 * CHUNK_BYTES_TARGET:.1f}  {'ok' if ok else 'MISSED'}")
    result = {"server_cost": rows, "end_to_end": e2e, "chunks": chunks, "targets": [
        {"what": w, "measured_s": v, "target_s": t} for w, v, t in checks]}
    with open(os.path.join(OUT, "coordinator.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\nwritten {os.path.join(OUT, 'coordinator.json')}")
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
