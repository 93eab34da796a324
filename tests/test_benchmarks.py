"""The benchmarks' last line and exit status say the same thing (issue 13).

A fresh clone has no trained backbone and may lack the data: such a benchmark
says NOT RUN, what it needs and how to get it, and exits 2; a missed target
says FAIL and exits 1; otherwise PASS (or DONE without a target) and 0.
"""

import json
import os

import pytest

from benchmarks.verdict import Verdict


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_verdict_statuses_and_last_line(capsys):
    met = Verdict("b")
    met.target("x 2 >= 1", True)
    assert met.finish() == 0 and _last_line(capsys) == "b: PASS: 1 target(s) met (exit status 0)"

    missed = Verdict("b")
    missed.target("x 2 >= 1", True)
    missed.target("y 0 >= 1", False)
    missed.not_run("z", "data", "get it")
    assert missed.finish() == 1
    assert _last_line(capsys).startswith("b: FAIL: 1 of 2 target(s) missed: y 0 >= 1, not run: z")

    skipped = Verdict("b")
    skipped.not_run("z", "a file f", "make f")
    assert skipped.finish() == 2
    out = capsys.readouterr().out
    assert "b: z NOT RUN: it needs a file f (make f)" in out
    assert out.strip().splitlines()[-1].startswith("b: NOT RUN: no target checked, not run: z")

    assert Verdict("b").finish() == 0 and _last_line(capsys) == "b: DONE: no target checked (exit status 0)"


def test_fewshot_without_backbones_says_not_run_and_exits_2(tmp_path, capsys, monkeypatch):
    """Before: "0 target(s) missed", then exit status 1."""
    pytest.importorskip("torch")
    from benchmarks import fewshot

    monkeypatch.setattr(fewshot, "OUT", str(tmp_path / "bench"))
    # neither checkpoints nor shipped backbones (the shipped ones are measured in test_fewshot_export)
    monkeypatch.setattr(fewshot, "SHIPPED", {"omniglot": str(tmp_path / "none.onnx"),
                                             "cifar10": str(tmp_path / "none.onnx")})
    status = fewshot.main(["--omniglot", str(tmp_path / "omni"), "--cifar10", str(tmp_path / "cifar")])

    out = capsys.readouterr().out
    assert status == 2
    assert "omniglot (4 settings) NOT RUN: it needs the trained backbone" in out
    assert "python -m training.fewshot train --data omniglot --epochs 60" in out
    assert out.strip().splitlines()[-1].startswith("bench-fewshot: NOT RUN: no target checked")


def _fake_run_once(gap_points):
    """run_once that writes a rounds log and returns a summary, the headline `gap_points` below FedAvg."""

    def fake(config, overrides, folder, progress, cached_only=False):
        os.makedirs(folder, exist_ok=True)
        headline = config == "fmnist_headline.toml"
        rounds = overrides["federation.rounds"]
        accuracy = 0.88 - (gap_points / 100 if headline else 0.0)
        total = 17.5e6 if headline else 407.45e6
        with open(os.path.join(folder, "rounds.jsonl"), "w") as handle:
            for number in range(1, rounds + 1):
                handle.write(json.dumps({"round": number, "accuracy": accuracy, "cum_bytes": total * number / rounds})
                             + "\n")
        return {"seed": overrides["federation.seed"], "rounds": rounds, "final_accuracy": accuracy,
                "final_accuracy_received": accuracy, "total_bytes": total, "wall_s": 1.0}

    return fake


@pytest.mark.parametrize("mode, gap, status, verdict_text", [
    ("--full", 1.28, 1, "FAIL"),
    ("--full", 0.38, 0, "PASS"),
    ("--quick", 1.28, 0, "not checked, the target is set for 50 rounds over 3 seeds"),
])
def test_fl_headline_exit_status_matches_what_it_prints(tmp_path, capsys, monkeypatch, mode, gap, status,
                                                        verdict_text):
    """Before: "accuracy +1.28 points below it ...: FAIL", then exit status 0."""
    torch = pytest.importorskip("torch")
    from benchmarks import fl

    monkeypatch.setattr(fl, "OUT", str(tmp_path))
    monkeypatch.setattr(fl, "run_once", _fake_run_once(gap))
    monkeypatch.setattr(fl, "fashion_mnist_missing", lambda: None)
    titles = []
    real_pareto = fl.plot_pareto
    monkeypatch.setattr(fl, "plot_pareto", lambda points, path, title: (titles.append(title),
                                                                         real_pareto(points, path, title)))

    result = fl.main([mode, "--only", "1", "--alphas", "0.5", "--methods", "standard,headline",
                      "--threads", str(torch.get_num_threads())])

    out = capsys.readouterr().out
    headline = next(line for line in out.splitlines() if line.startswith("headline (alpha"))
    assert f"accuracy {gap:+.2f} points below it" in headline and verdict_text in headline
    assert result == status
    assert out.strip().splitlines()[-1].startswith("bench-fl: " + ("FAIL" if status else
                                                                     "PASS" if mode == "--full" else "DONE"))
    assert os.path.isfile(tmp_path / "study1_alpha0.5_curves.png")
    # quick mode runs one seed: the title must not say "mean over seeds"
    assert titles == [("Fashion-MNIST MLP-128, alpha 0.5, 5 rounds, seed 0" if mode == "--quick" else
                       "Fashion-MNIST MLP-128, alpha 0.5, 50 rounds, mean over seeds 0, 1, 2")]
    # Issue 25: quick mode's figures misled (study 3 at chance, study 2 reversed) with no warning
    smoke = "QUICK MODE: a smoke run"
    assert (smoke in out) == (mode == "--quick")
    assert (smoke in (tmp_path / "study1.txt").read_text()) == (mode == "--quick")
    assert (json.loads((tmp_path / "study1.json").read_text()).get("mode") == "quick") == (mode == "--quick")


def test_codecs_plot_names_points_in_a_legend_not_in_overlapping_labels(tmp_path):
    """Issue 13: the point labels of codecs.png overprinted each other."""
    from benchmarks import codecs

    rows = [{"pipeline": "8-bit per-channel", "ratio": 3.94, "accuracy": 0.8732},
            {"pipeline": "8-bit per-channel + deflate", "ratio": 4.18, "accuracy": 0.8732},
            {"pipeline": "baseline: raw float32", "ratio": 1.0, "bytes": 407080}]

    fig = codecs.plot(rows, 0.8724, str(tmp_path / "codecs.png"))

    axis = fig.axes[0]
    assert len(axis.texts) == 0  # no annotation can overprint another
    labels = [t.get_text() for t in axis.get_legend().get_texts()]
    assert labels == ["8-bit per-channel: 3.9x, 87.32%", "8-bit per-channel + deflate: 4.2x, 87.32%",
                      "float32 model: 87.24%"]
    markers = {tuple(c.get_paths()[0].vertices.round(3).ravel()) for c in axis.collections}
    assert len(markers) == 2  # told apart by marker, not only by colour


def test_fl_without_data_says_not_run(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from benchmarks import fl

    monkeypatch.setattr(fl, "OUT", str(tmp_path))
    monkeypatch.setattr(fl, "fashion_mnist_missing", lambda: "no Fashion-MNIST here (apt-get install ...)")

    assert fl.main(["--quick", "--only", "1,3", "--cifar", str(tmp_path / "none.tar.gz")]) == 2
    out = capsys.readouterr().out
    assert "study 1 NOT RUN: it needs Fashion-MNIST (no Fashion-MNIST here" in out
    assert "study 3 NOT RUN: it needs CIFAR-10 at" in out


def test_codecs_and_demo_and_dse_without_data_say_not_run(tmp_path, capsys, monkeypatch):
    from benchmarks import codecs

    monkeypatch.setattr(codecs, "fashion_mnist_missing", lambda: "no Fashion-MNIST here")
    assert codecs.main([]) == 2
    assert _last_line(capsys).startswith("bench-codecs: NOT RUN")

    pytest.importorskip("torch")
    from benchmarks import demo, dse

    monkeypatch.setattr(demo, "ARCHIVE", tmp_path / "none.tar.gz")
    assert demo.main(["--out", str(tmp_path / "demo.json")]) == 2
    assert "the demonstrator benchmark NOT RUN: it needs the CIFAR-10 archive" in capsys.readouterr().out
    assert dse.main(["--data", "omniglot:" + str(tmp_path / "none"), "--quick"]) == 2
    assert _last_line(capsys).startswith("dse: NOT RUN")
