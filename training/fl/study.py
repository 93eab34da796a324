"""A seed study, run by name: its setup, the paper's figures next to ours, and the bytes.

    make study STUDY=flocora_table7 [SEEDS=3] [ROUNDS=5] [JOBS=4]
    python -m training.fl.study flocora_table7 --seeds 3 --jobs 4
    python -m training.fl.study list

A study file (configs/fl/studies/<name>.toml) holds the seed's exact setup as one run file
(the [base] table: the tables of any configs/fl/*.toml) and its variants, each a set of
dotted overrides of that run file with the figures the paper reports for it:

    [study]
    title = "..."; source = "..."; needs = "gpu" | "cpu"; seeds = 3; baseline = "FedAvg"
    notes = ["...", ...]            # setup differences, paper ambiguities, what we found
    [base]                          # name, [base.data], [base.model], [base.federation], ...
    [[variant]]
    label = "FLoCoRA int8"
    set = { "simulation.method" = "lora", "compression.uplink.wire.bits" = 8 }
    paper = { accuracy = 74.21, reduction = 17.7 }   # a figure the paper does not give is left out

Each (variant, seed) is one `training.fl` run, reused when the same settings ran in its folder
before; several run at once with --jobs (processes sharing the GPU). A full run keeps its small
logs (summary.json, rounds.jsonl) under docs/studies/<name>/runs/, so a study measured over
several sessions on a borrowed GPU is committed run by run and completed later; the table
(Markdown + JSON + CSV) and the plot go to docs/studies/<name>/. A run changed by --rounds or
--set is a smoke run: its logs and table go to runs/studies/<name>/smoke/. Bytes are counted from the messages the
round engine encoded; "devices' model" is the accuracy of the model a client decodes from the
last broadcast (the server's model through the downlink codec).
"""

import argparse
import csv
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fedcore.atomic import atomic_write
from fedcore.checks import check_table
from fedcore.errors import ConfigError, FedCoreError
from fedcore.experiment import read_toml

from .config import apply_overrides, load_config, parse_assignment

__all__ = ["Variant", "Study", "load_study", "study_path", "list_studies", "cached_run", "run_study",
           "summarize", "main"]

STUDIES = os.path.join("configs", "fl", "studies")
RUNS = os.path.join("runs", "studies")
DOCS = os.path.join("docs", "studies")
NEEDS = ("cpu", "gpu")


@dataclass(frozen=True)
class Variant:
    label: str
    overrides: Mapping[str, Any]
    paper: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    source: str
    needs: str
    seeds: int
    baseline: str
    notes: Tuple[str, ...]
    base: Mapping[str, Any]
    variants: Tuple[Variant, ...]
    paper_spread: float  # the paper's reported spread in points (its sd), or 1 point when it gives none

    def settings(self, variant: Variant, seed: int, rounds: Optional[int] = None) -> Dict[str, Any]:
        """The run file of one variant and seed."""
        overrides = dict(variant.overrides)
        overrides["federation.seed"] = seed
        overrides["name"] = f"{self.name}-{_slug(variant.label)}-s{seed}"
        overrides["simulation.save_model"] = False  # the logs are kept beside the table; models are not
        if rounds:
            overrides["federation.rounds"] = rounds
        return apply_overrides(self.base, overrides)


PAPER_KEYS = ("accuracy", "accuracy_sd", "reduction", "reduction_up", "reduction_down")


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def study_path(name: str) -> str:
    """A study's file from its name (or a path as it is)."""
    if name.endswith(".toml") or os.sep in name:
        return name
    path = os.path.join(STUDIES, name + ".toml")
    if not os.path.isfile(path):
        raise ConfigError(f"no study {name!r}; known: {', '.join(list_studies()) or 'none'} (in {STUDIES}/)")
    return path


def list_studies() -> List[str]:
    if not os.path.isdir(STUDIES):
        return []
    return sorted(f[:-5] for f in os.listdir(STUDIES) if f.endswith(".toml"))


def load_study(name: str) -> Study:
    """Read and check a study file: every variant's run file is parsed now, so a typo fails
    before the first of many runs."""
    path = study_path(name)
    table = read_toml(path)
    table = check_table(table, ["study", "base", "variant"], path)
    head = check_table(table.get("study", {}), ["title", "source", "needs", "seeds", "baseline", "notes",
                                                "paper_spread"], f"{path} [study]")
    for key in ("title", "source"):
        if not isinstance(head.get(key), str) or not head[key]:
            raise ConfigError(f"{path}: [study] {key} must be a non-empty string")
    needs = head.get("needs", "cpu")
    if needs not in NEEDS:
        raise ConfigError(f"{path}: [study] needs must be one of {list(NEEDS)}, got {needs!r}")
    notes = head.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError(f"{path}: [study] notes must be a list of strings")
    seeds = head.get("seeds", 3)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= 100:
        raise ConfigError(f"{path}: [study] seeds must be an integer in [1, 100], got {seeds!r}")
    spread = head.get("paper_spread", 1.0)
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread > 0:
        raise ConfigError(f"{path}: [study] paper_spread must be a number > 0 (points), got {spread!r}")
    base = table.get("base")
    if not isinstance(base, dict) or not base:
        raise ConfigError(f"{path}: [base] (the study's run file) is missing")
    variants = []
    for index, item in enumerate(table.get("variant", [])):
        item = check_table(item, ["label", "set", "paper"], f"{path} variant {index + 1}")
        label = item.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{path}: variant {index + 1} needs a label")
        overrides = item.get("set", {})
        paper = check_table(item.get("paper", {}), list(PAPER_KEYS), f"{path} variant {label!r} paper")
        if not isinstance(overrides, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in paper.values()):
            raise ConfigError(f"{path}: variant {label!r}: set must be a table, paper figures numbers")
        variants.append(Variant(label, dict(overrides), {k: float(v) for k, v in paper.items()}))
    labels = [v.label for v in variants]
    if not variants or len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: needs at least one [[variant]], each with its own label (got {labels})")
    baseline = head.get("baseline", labels[0])
    if baseline not in labels:
        raise ConfigError(f"{path}: [study] baseline {baseline!r} is not a variant's label ({labels})")
    study = Study(os.path.basename(path)[:-5], head["title"], head["source"], needs, seeds, baseline,
                  tuple(notes), base, tuple(variants), float(spread))
    for variant in variants:
        try:
            load_config(study.settings(variant, 0))
        except ConfigError as error:
            raise ConfigError(f"{path}: variant {variant.label!r}: {error}") from None
    return study


# ----------------------------------------------------------------------------- running


_DATA_CACHE: Dict[str, Any] = {}


# Settings that change what a run writes, not what it computes: left out of a run's key.
_NOT_RESULTS = ("save_model",)


def _settings_key(settings: Mapping[str, Any]) -> str:
    """The hash a stored run is found by: every setting that shapes its numbers."""
    simulation = {k: v for k, v in dict(settings.get("simulation", {})).items() if k not in _NOT_RESULTS}
    keyed = dict(settings, simulation=simulation) if "simulation" in settings else settings
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_run(settings: Mapping[str, Any], folder: str, progress: bool = False,
               cached_only: bool = False, plots: bool = True) -> Optional[Dict[str, Any]]:
    """One simulation into `folder`, or its stored summary when the same settings already ran
    there (with cached_only, None instead of running). Data is loaded once per process."""
    from .simulation import load_data, run

    settings = apply_overrides(settings, {"simulation.out": folder})
    key = _settings_key(settings)
    stored = _stored(folder, key)
    if stored is not None or cached_only:
        return stored
    run_config, sim = load_config(settings)
    data_key = json.dumps([run_config.data.dataset, run_config.data.path, run_config.data.train_limit,
                           run_config.data.test_limit])
    if data_key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[data_key] = load_data(run_config, sim)
    summary = run(settings, progress=progress, plots=plots, data=_DATA_CACHE[data_key])
    atomic_write(os.path.join(folder, "key"), key)
    return summary


def _stored(folder: str, key: str) -> Optional[Dict[str, Any]]:
    summary_path, key_path = os.path.join(folder, "summary.json"), os.path.join(folder, "key")
    if os.path.isfile(summary_path) and os.path.isfile(key_path):
        with open(key_path) as handle:
            if handle.read() == key:
                with open(summary_path) as handle:
                    return json.load(handle)
    return None


def _subprocess_run(settings: Mapping[str, Any], folder: str) -> subprocess.Popen:
    """A run in its own process (--jobs): its run file, log and summary in `folder`."""
    settings = apply_overrides(settings, {"simulation.out": folder})
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "run.json")
    atomic_write(config, json.dumps(settings, indent=1))
    log = open(os.path.join(folder, "log.txt"), "w")
    return subprocess.Popen([sys.executable, "-m", "training.fl", "--config", config, "--quiet", "--no-plots"],
                            stdout=log, stderr=subprocess.STDOUT)


def runs_folder(study: Study, smoke: bool) -> str:
    """Where a study's runs keep their logs: committed beside its table, or under runs/ for a smoke run."""
    return os.path.join(RUNS, study.name, "smoke", "runs") if smoke else os.path.join(DOCS, study.name, "runs")


def run_study(study: Study, seeds: Sequence[int], rounds: Optional[int] = None, jobs: int = 1,
              overrides: Optional[Mapping[str, Any]] = None, only: Sequence[str] = (),
              progress: bool = True, smoke: bool = False) -> Tuple[Dict[str, List[Dict[str, Any]]], List[str]]:
    """Every (variant, seed) run; returns {variant label: [summary of each seed]} and what failed
    (a failed run does not stop the others: an unattended GPU call keeps what it finished)."""
    variants = [v for v in study.variants if not only or v.label in only or _slug(v.label) in only]
    unknown = [o for o in only if not any(o in (v.label, _slug(v.label)) for v in study.variants)]
    if unknown:
        raise ConfigError(f"--only {unknown}: no such variant; known: {[v.label for v in study.variants]}")
    todo = []
    for variant in variants:
        for seed in seeds:
            settings = apply_overrides(study.settings(variant, seed, rounds), overrides or {})
            folder = os.path.join(runs_folder(study, smoke), _slug(variant.label), f"seed{seed}")
            todo.append((variant.label, seed, settings, folder))
    results: Dict[str, List[Dict[str, Any]]] = {v.label: [] for v in variants}
    pending = []
    for label, seed, settings, folder in todo:
        summary = cached_run(settings, folder, cached_only=True)
        if summary is not None:
            print(f"  {label} seed {seed}: stored ({100 * summary['final_accuracy']:.2f}%)", flush=True)
            results[label].append(_with_rows(summary, folder))
        else:
            pending.append((label, seed, settings, folder))
    failures: List[str] = []
    if jobs <= 1:
        for label, seed, settings, folder in pending:
            began = time.perf_counter()
            try:
                summary = cached_run(settings, folder, progress=progress, plots=False)
            except (ConfigError, FedCoreError, RuntimeError, ValueError, MemoryError) as error:
                failures.append(f"{label} seed {seed}: {type(error).__name__}: {error}")
                print(f"  {failures[-1]}", flush=True)
                continue
            print(f"  {label} seed {seed}: {100 * summary['final_accuracy']:.2f}% after {summary['rounds']} rounds, "
                  f"{summary['total_bytes'] / 1e6:.2f} MB, {time.perf_counter() - began:.0f} s", flush=True)
            results[label].append(_with_rows(summary, folder))
    else:
        _run_parallel(pending, jobs, results, failures)
    for label in results:
        results[label].sort(key=lambda s: s["seed"])
    return results, failures


def stored_results(study: Study, seeds: Sequence[int], rounds: Optional[int] = None,
                   overrides: Optional[Mapping[str, Any]] = None, smoke: bool = False
                   ) -> Dict[str, List[Dict[str, Any]]]:
    """The runs of the study already stored with exactly these settings (nothing is run)."""
    results: Dict[str, List[Dict[str, Any]]] = {}
    for variant in study.variants:
        for seed in seeds:
            settings = apply_overrides(study.settings(variant, seed, rounds), overrides or {})
            folder = os.path.join(runs_folder(study, smoke), _slug(variant.label), f"seed{seed}")
            summary = cached_run(settings, folder, cached_only=True)
            if summary is not None:
                results.setdefault(variant.label, []).append(_with_rows(summary, folder))
    return results


def _run_parallel(pending, jobs: int, results: Dict[str, List[Dict[str, Any]]], failures: List[str]) -> None:
    waiting, running = list(pending), []
    try:
        _drain(waiting, running, jobs, results, failures)
    finally:  # stopped (a time budget's SIGTERM, ^C) or failed: no run goes on orphaned
        for item in running:
            item[4].terminate()
        for item in running:
            item[4].wait()


def _drain(waiting, running, jobs: int, results: Dict[str, List[Dict[str, Any]]], failures: List[str]) -> None:
    while waiting or running:
        while waiting and len(running) < jobs:
            label, seed, settings, folder = waiting.pop(0)
            running.append((label, seed, settings, folder, _subprocess_run(settings, folder), time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            label, seed, settings, folder, process, began = item
            if process.poll() is None:
                continue
            running.remove(item)
            if process.returncode != 0:
                with open(os.path.join(folder, "log.txt")) as handle:
                    tail = handle.read()[-1500:]
                failures.append(f"{label} seed {seed}: exit {process.returncode}; {folder}/log.txt ends:\n{tail}")
                print(f"  {label} seed {seed} failed (exit {process.returncode}): {folder}/log.txt", flush=True)
                continue
            with open(os.path.join(folder, "summary.json")) as handle:
                summary = json.load(handle)
            atomic_write(os.path.join(folder, "key"), _settings_key(apply_overrides(settings,
                                                                                    {"simulation.out": folder})))
            print(f"  {label} seed {seed}: {100 * summary['final_accuracy']:.2f}% after {summary['rounds']} rounds, "
                  f"{time.perf_counter() - began:.0f} s", flush=True)
            results[label].append(_with_rows(summary, folder))


def _with_rows(summary: Dict[str, Any], folder: str) -> Dict[str, Any]:
    with open(os.path.join(folder, "rounds.jsonl")) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {**summary, "folder": folder, "rows": rows}


# ----------------------------------------------------------------------------- reporting


def _mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(study: Study, results: Mapping[str, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One row a variant: the paper's figures, ours over the seeds, the difference, the bytes."""
    base = results.get(study.baseline) or []
    base_total = statistics.mean(s["total_bytes"] for s in base) if base else math.nan
    base_up = statistics.mean(s["bytes_up"] for s in base) if base else math.nan
    base_down = statistics.mean(s["bytes_down"] for s in base) if base else math.nan
    rows = []
    for variant in study.variants:
        runs = results.get(variant.label)
        if not runs:
            continue
        accuracy, sd = _mean_sd([100 * s["final_accuracy"] for s in runs])
        received, _ = _mean_sd([100 * s["final_accuracy_received"] for s in runs])
        up = statistics.mean(s["bytes_up"] for s in runs)
        down = statistics.mean(s["bytes_down"] for s in runs)
        paper = variant.paper.get("accuracy")
        spread = variant.paper.get("accuracy_sd", study.paper_spread)
        row = {
            "variant": variant.label, "seeds": [s["seed"] for s in runs], "rounds": runs[0]["rounds"],
            "paper_accuracy": paper, "accuracy_mean": accuracy, "accuracy_sd": sd,
            "difference": None if paper is None else accuracy - paper,
            "outside_spread": None if paper is None else abs(accuracy - paper) > spread,
            "received_accuracy_mean": received, "bytes_up": up, "bytes_down": down, "total_bytes": up + down,
            "reduction": base_total / (up + down), "reduction_up": base_up / up if up else math.inf,
            "reduction_down": base_down / down if down else math.inf,
            "paper_reduction": variant.paper.get("reduction"),
            "best_accuracy_mean": statistics.mean(100 * s["best_accuracy"] for s in runs),
            "engine": runs[0].get("engine"), "device": runs[0].get("device"), "precision": runs[0].get("precision"),
            "wall_s": [s["wall_s"] for s in runs],
        }
        rows.append(row)
    return rows


def _figure(value: Optional[float], form: str = "{:.2f}") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else form.format(value)


def markdown_table(study: Study, rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["variant", "paper %", "ours % (mean ± sd)", "Δ points", "devices' model %", "MB up", "MB down",
              "fewer bytes (ours)", "fewer bytes (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        difference = _figure(row["difference"], "{:+.2f}") + (" ⚠" if row["outside_spread"] else "")
        lines.append("| " + " | ".join([
            row["variant"], _figure(row["paper_accuracy"]),
            f"{row['accuracy_mean']:.2f} ± {row['accuracy_sd']:.2f} (n={len(row['seeds'])})", difference,
            f"{row['received_accuracy_mean']:.2f}", f"{row['bytes_up'] / 1e6:.2f}", f"{row['bytes_down'] / 1e6:.2f}",
            _figure(row["reduction"], "{:.1f}×"), _figure(row["paper_reduction"], "{:.1f}×")]) + " |")
    return "\n".join(lines)


def _mean_curve(runs: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Accuracy and cumulative bytes of each evaluated round, averaged over the seeds."""
    rounds: Dict[int, List[Mapping[str, Any]]] = {}
    for run in runs:
        for row in run["rows"]:
            if "accuracy" in row:
                rounds.setdefault(row["round"], []).append(row)
    return [{"round": r, "accuracy": statistics.mean(x["accuracy"] for x in rows),
             "cum_bytes": statistics.mean(x["cum_bytes"] for x in rows)}
            for r, rows in sorted(rounds.items()) if len(rows) == len(runs)]


def write_outputs(study: Study, results: Mapping[str, List[Dict[str, Any]]], out: str, command: str,
                  wall_s: float) -> str:
    """table.md, results.json, results.csv and curves.png under `out`; returns the Markdown."""
    from .report import plot_rounds

    os.makedirs(out, exist_ok=True)
    rows = summarize(study, results)
    every = [r for runs in results.values() for r in runs]
    some = every[0]
    machine = ", ".join(sorted({r.get("machine") or "unrecorded" for r in every}))
    training_min = sum(r["wall_s"] for r in every) / 60
    lines = [f"# {study.title}", "", f"Source: {study.source}", "",
             f"Measured: {len(every)} runs on {machine}; engine {some.get('engine')}, precision "
             f"{some.get('precision')}, {some['rounds']} rounds; {training_min:.0f} min of runs in all; accuracy "
             f"after the last round on the whole test set. This table: `{command}` ({wall_s / 60:.1f} min; "
             "stored runs reused).", "",
             markdown_table(study, rows), "",
             f"Δ: ours minus the paper's; ⚠ where it exceeds the paper's spread ({study.paper_spread:g} point(s) "
             "where it reports none). Bytes: both directions, counted from the encoded messages, mean over seeds; "
             f"fewer bytes: against {study.baseline}. Devices' model: the server's model as a client decodes it.", ""]
    if study.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in study.notes] + [""]
    text = "\n".join(lines)
    atomic_write(os.path.join(out, "table.md"), text)
    atomic_write(os.path.join(out, "results.json"), json.dumps({
        "study": study.name, "title": study.title, "command": command, "machines": machine, "rows": rows,
        "runs": {label: [{k: v for k, v in run.items() if k not in ("rows", "folder")} for run in runs]
                 for label, runs in results.items()}}, indent=1, default=str))
    with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[k for k in rows[0] if k not in ("seeds", "wall_s")],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    seeds = sorted({s for r in rows for s in r["seeds"]})
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"
    plot_rounds({label: _mean_curve(runs) for label, runs in results.items() if runs},
                os.path.join(out, "curves.png"), f"{study.title}: {which}")
    return text


# ----------------------------------------------------------------------------- command line


def _gpu_refusal(study: Study, seeds: Sequence[int], rounds: Optional[int]) -> str:
    run, _ = load_config(study.settings(study.variants[0], 0, rounds))
    fed = run.federation
    clients = max(fed.min_clients, round(fed.fraction * run.data.num_clients))
    return (f"study {study.name} needs a GPU (its [study] needs = \"gpu\"): {len(study.variants)} variants x "
            f"{len(seeds)} seeds, each {fed.rounds} rounds of {clients} clients x {fed.train.epochs} local epochs; "
            "this machine's torch sees no CUDA device. Run it where there is one (make study STUDY=... on a GPU "
            "machine), shorten it with ROUNDS=N for a smoke run here, or pass --allow-cpu to run it on the CPU anyway.")


def _stop(signum, frame):
    raise SystemExit(f"stopped by signal {signum}: runs in flight were stopped, finished ones are kept")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fl.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="a study's name (configs/fl/studies/NAME.toml), a path, or 'list'")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the study's)")
    parser.add_argument("--rounds", type=int, help="shorten every run to N rounds: a smoke run, written under runs/")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each its own process (share a GPU)")
    parser.add_argument("--device", help="torch device of every run (default: the study's, auto = GPU if any)")
    parser.add_argument("--engine", help="sequential, batched, vmap or auto")
    parser.add_argument("--only", action="append", default=[], help="run only this variant (label or slug)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run-file key in every run (a smoke run), e.g. federation.train.epochs=1")
    parser.add_argument("--table-only", action="store_true",
                        help="write the table from the runs stored so far; run nothing")
    parser.add_argument("--runs-only", action="store_true",
                        help="run what is not stored yet and write no table (a GPU machine without matplotlib)")
    parser.add_argument("--out", help="where the table and plot go (default docs/studies/NAME, "
                        "runs/studies/NAME/smoke for a shortened run)")
    parser.add_argument("--allow-cpu", action="store_true", help="run a GPU study on the CPU")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        if args.study == "list":
            broken = 0
            for name in list_studies():
                try:
                    study = load_study(name)
                except ConfigError as error:
                    broken += 1
                    print(f"{name:24s} ---  cannot be read: {error}")
                    continue
                print(f"{name:24s} {study.needs:3s}  {study.title}")
            return 2 if broken else 0
        study = load_study(args.study)
        if args.rounds is not None and args.rounds < 1:
            raise ConfigError("--rounds must be >= 1")
        if args.jobs < 1:
            raise ConfigError("--jobs must be >= 1")
        seeds = list(range(args.seeds or study.seeds))
        overrides: Dict[str, Any] = {}
        for text in args.set:
            overrides.update(parse_assignment(text))
        smoke = bool(args.rounds or overrides)
        if args.device:
            overrides["simulation.device"] = args.device
        if args.engine:
            overrides["simulation.engine"] = args.engine
        import torch

        device = args.device or study.base.get("simulation", {}).get("device", "cpu")
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if study.needs == "gpu" and not on_gpu and not smoke and not args.allow_cpu and not args.table_only:
            print(_gpu_refusal(study, seeds, args.rounds), file=sys.stderr)
            return 2
        began = time.perf_counter()
        failures: List[str] = []
        if args.table_only:
            results = stored_results(study, seeds, args.rounds, overrides, smoke)
        else:
            results, failures = run_study(study, seeds, args.rounds, args.jobs, overrides, args.only,
                                          progress=not args.quiet, smoke=smoke)
        if failures:
            print(f"error: {len(failures)} run(s) failed (the others are kept):\n" + "\n".join(failures),
                  file=sys.stderr)
        if args.runs_only:
            return 1 if failures else 0
        if not any(results.values()):
            raise ConfigError(f"no run of {study.name} is stored yet: run it first")
        out = args.out or (os.path.join(RUNS, study.name, "smoke") if smoke else os.path.join(DOCS, study.name))
        command = "python -m training.fl.study " + " ".join(argv if argv is not None else sys.argv[1:])
        print(write_outputs(study, results, out, command, time.perf_counter() - began))
        print(f"\nwritten: {out}/table.md, results.json, results.csv, curves.png")
        if failures:
            return 1
    except (ConfigError, FedCoreError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
