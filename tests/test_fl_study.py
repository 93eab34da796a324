"""`make study`: a seed's setup run by name, the paper's figures next to ours, every byte counted."""

import json

import pytest

pytest.importorskip("torch")

from tests.fl_testkit import write_dataset  # noqa: E402
from training.fl.study import load_study, main  # noqa: E402

STUDY = """
[study]
title = "A tiny study"
source = "these tests"
needs = "{needs}"
seeds = 2
baseline = "FedAvg"
notes = ["a note the table carries"]

[base]
name = "tiny"
[base.data]
dataset = "mnist"
path = "{data}"
num_clients = 3
alpha = "iid"
[base.model]
name = "mlp"
hidden = [16]
[base.federation]
rounds = 2
min_clients = 3
update_kind = "weights"
[base.federation.train]
lr = 0.05

[[variant]]
label = "FedAvg"
set = {{}}

[[variant]]
label = "PTQ 8-bit"
set = {{ "compression.uplink" = {{ wire = {{ bits = 8 }} }}, "compression.downlink" = {{ wire = {{ bits = 8 }} }} }}
paper = {{ accuracy = 50.0, reduction = 4.0 }}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder laid out as the repository (configs/fl/studies, docs, runs) with a tiny study."""
    data = write_dataset(str(tmp_path / "data"))
    studies = tmp_path / "configs" / "fl" / "studies"
    studies.mkdir(parents=True)
    (studies / "tiny.toml").write_text(STUDY.format(needs="cpu", data=data))
    (studies / "tiny_gpu.toml").write_text(STUDY.format(needs="gpu", data=data))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_study_runs_by_name_and_puts_the_papers_figures_next_to_ours(project, capsys):
    # Execute: two seeds, the runs in two processes at once
    assert main(["tiny", "--jobs", "2", "--quiet"]) == 0
    # Assert
    out = project / "docs" / "studies" / "tiny"
    table = (out / "table.md").read_text()
    assert "| PTQ 8-bit | 50.00 |" in table and "(n=2)" in table and "a note the table carries" in table
    rows = json.loads((out / "results.json").read_text())["rows"]
    ptq = next(r for r in rows if r["variant"] == "PTQ 8-bit")
    assert ptq["seeds"] == [0, 1] and ptq["paper_reduction"] == 4.0
    assert 3.0 < ptq["reduction"] < 4.1  # 8-bit weights, biases float32, headers
    assert ptq["difference"] == pytest.approx(ptq["accuracy_mean"] - 50.0)
    assert (out / "curves.png").stat().st_size > 1000 and (out / "results.csv").read_text().startswith("variant,")
    assert (out / "runs" / "ptq-8-bit" / "seed1" / "summary.json").is_file()
    # A second call reuses what is stored and runs nothing.
    capsys.readouterr()
    assert main(["tiny", "--quiet"]) == 0
    assert capsys.readouterr().out.count(": stored (") == 4


def test_a_shortened_or_changed_study_is_a_smoke_run_kept_out_of_docs(project):
    assert main(["tiny", "--seeds", "1", "--rounds", "1", "--only", "FedAvg", "--quiet"]) == 0
    assert (project / "runs" / "studies" / "tiny" / "smoke" / "table.md").is_file()
    assert not (project / "docs" / "studies" / "tiny").exists()
    assert main(["tiny", "--seeds", "1", "--table-only", "--set", "federation.train.lr=0.1"]) == 2


def test_a_gpu_study_on_a_cpu_says_what_it_needs(project, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["tiny_gpu", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "needs a GPU" in err and "2 variants x 2 seeds" in err and "ROUNDS=N" in err


def test_bad_study_files_and_arguments_are_named(project, capsys):
    studies = project / "configs" / "fl" / "studies"
    (studies / "typo.toml").write_text(STUDY.format(needs="cpu", data=project).replace(
        '"compression.downlink"', '"compression.downlnk"'))
    assert main(["typo"]) == 2
    assert "variant 'PTQ 8-bit'" in capsys.readouterr().err
    assert main(["nothere"]) == 2
    assert "known: tiny" in capsys.readouterr().err
    assert main(["tiny", "--only", "FedAvgg"]) == 2
    assert "no such variant" in capsys.readouterr().err
    assert main(["list"]) == 2  # every study listed, the broken one with its error
    listed = capsys.readouterr().out
    assert "tiny_gpu" in listed and "typo" in listed and "downlnk" in listed


def test_the_shipped_studies_parse():
    for name in ("flocora_table7", "flocora_table9", "flocora_ablation", "icecs2023", "newcastle_simplecnn",
                 "newcastle_resnet12", "unifesp_iid", "unifesp_noniid", "beyond_table7"):
        study = load_study(name)
        assert study.variants and study.baseline in [v.label for v in study.variants]
    table7 = load_study("flocora_table7")
    assert [v.paper.get("accuracy") for v in table7.variants] == [None, 75.51, 74.21, 73.15, 55.03]


def test_a_failed_run_does_not_stop_the_others(project, capsys):
    studies = project / "configs" / "fl" / "studies"
    text = (studies / "tiny.toml").read_text() + '''
[[variant]]
label = "broken"
set = { "model.norm" = "gn" }
'''
    (studies / "broken.toml").write_text(text)
    for jobs in ("1", "2"):
        assert main(["broken", "--seeds", "1", "--jobs", jobs, "--quiet", "--out", str(project / f"out{jobs}")]) == 1
        err = capsys.readouterr().err
        assert "1 run(s) failed" in err and "broken seed 0" in err
        table = (project / f"out{jobs}" / "table.md").read_text()
        assert "| FedAvg |" in table and "| PTQ 8-bit |" in table and "| broken |" not in table
