"""python -m device doctor: on a laptop, on the fake board (the pynq fakes with a fake TCU),
against a real Mosquitto with passwords; every failing line says what to do."""

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from device import doctor
from tensil.arch import load_tarch
from tests.fake_pynq import FakeDDR, FakeTcu, install
from tests.fake_pynq.board import DESIGNS, tensil_design
from tests.mosquitto_broker import Mosquitto, free_port, require_mosquitto
from tests.tensil_models import build_conv_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
PERF = ROOT / "tensil_arch" / "pynqz1_perf.tarch"
SMALL = ROOT / "tensil_arch" / "pynqz1.tarch"
HWH = ROOT / "tests" / "fixtures" / "hwh"


def _run(argv, capsys):
    code = doctor.main(argv + ["--json"])
    report = json.loads(capsys.readouterr().out)
    return code, report["ok"], {c["name"]: c for c in report["checks"]}


def _board(monkeypatch, tmp_path, name="tensil_pynqz1", cma_free_kib=98304):
    for suffix in (".hwh", ".json"):
        if (HWH / (name + suffix)).is_file():
            shutil.copy(HWH / (name + suffix), tmp_path)
    board = install(monkeypatch, ddr=FakeDDR(size=16 << 20),
                    designs=dict(DESIGNS, **{name + ".bit": tensil_design}),
                    tcu=lambda b: FakeTcu(load_tarch(PERF), b.ddr))
    (tmp_path / (name + ".bit")).write_bytes(b"\0" * 64)   # the fake board knows it by name
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 503000 kB\nCmaTotal: 131072 kB\nCmaFree: %d kB\n" % cma_free_kib)
    monkeypatch.setattr(doctor, "MEMINFO", str(meminfo))
    return board, tmp_path / (name + ".bit")


def test_a_laptop_is_ready_for_the_cpu_backends(capsys):
    code, ok, checks = _run([], capsys)
    assert code == 0 and ok
    assert checks["python"]["status"] == "ok" and checks["python"]["required"]
    assert checks["backbone"]["status"] == "ok"
    assert checks["backbone"]["detail"].startswith("auto: onnxruntime (not tensil: pynq is not "
                                                   "installed")
    assert {checks[n]["status"] for n in ("pynq", "bitstream", "tmodel", "cma", "camera", "hdmi",
                                          "buttons", "broker")} == {"skip"}
    doctor.main([])
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "ready" and "skip  camera     pass --camera N" in out


def test_the_fake_board_passes_every_check(tmp_path, monkeypatch, capsys):
    paths = build_conv_model(tmp_path, PERF, 16, 8)
    board, bit = _board(monkeypatch, tmp_path)
    code, ok, checks = _run(["--model", str(paths["card"]), "--bitstream", str(bit),
                             "--backend", "tensil", "--camera", "synthetic", "--hdmi",
                             "--buttons"], capsys)
    assert (code, ok) == (0, True), checks
    assert all(c["status"] == "ok" for c in checks.values() if c["name"] != "broker")
    assert checks["pynq"]["detail"] == "pynq 3.0.1; the FPGA holds no bitstream"
    assert checks["bitstream"]["detail"].startswith(
        "tensil_pynqz1.bit: TCU top_custom_perf_0 (top_custom_perf) at 50 MHz "
        "(processing_system7_0/FCLK_CLK3); instructions from axi_dma_0, 64-bit; no build JSON")
    assert checks["tmodel"]["detail"].startswith("tiny_onnx_pynqz1_perf.tmodel fits top_custom_perf "
                                                 "(array 12x12 FP16BP8)")
    assert "needs 0.1" in checks["cma"]["detail"] and "Tensil's own driver would take 72 MiB" \
        in checks["cma"]["detail"] and "CmaFree is 96.00 MiB" in checks["cma"]["detail"]
    assert checks["backbone"]["detail"].startswith("tensil: one frame in")
    assert board.downloads == ["tensil_pynqz1.bit"]          # loaded once, used by every check
    assert board.ddr.used == 0                               # the backbone closed its driver


def test_a_model_for_another_bitstream_fails_naming_both_and_the_fix(tmp_path, monkeypatch, capsys):
    paths = build_conv_model(tmp_path, SMALL, 16, 8)                  # compiled for 8x8
    _, bit = _board(monkeypatch, tmp_path, "pynqz1_perf_125mhz")      # the JSON says 12x12
    code, ok, checks = _run(["--model", str(paths["card"]), "--bitstream", str(bit)], capsys)
    assert code == 1 and not ok
    tmodel = checks["tmodel"]
    assert tmodel["status"] == "fail" and tmodel["required"]
    assert "array_size: the bitstream's TCU has 12, the model 8" in tmodel["detail"]
    assert tmodel["fix"].startswith("compile the model for the bitstream's .tarch "
                                    "(pynqz1_perf.tarch)")
    assert checks["bitstream"]["status"] == "ok" and "125 MHz" in checks["bitstream"]["detail"]
    doctor.main(["--model", str(paths["card"]), "--bitstream", str(bit)])
    out = capsys.readouterr().out
    assert "FAIL  tmodel" in out and "-> compile the model" in out
    assert out.splitlines()[-1] == "not ready: tmodel"


def test_too_little_cma_fails_with_the_figures(tmp_path, monkeypatch, capsys):
    paths = build_conv_model(tmp_path, PERF, 16, 8)
    _, bit = _board(monkeypatch, tmp_path, cma_free_kib=64)
    code, _, checks = _run(["--model", str(paths["card"]), "--bitstream", str(bit),
                            "--backend", "tensil-emu"], capsys)
    assert code == 1 and checks["cma"]["status"] == "fail"
    assert "CmaFree is 0.06 MiB" in checks["cma"]["detail"]
    assert "cma= on the kernel command line" in checks["cma"]["fix"]


def test_a_missing_camera_and_a_wrong_resolution_fail_with_what_to_do(capsys):
    code, _, checks = _run(["--camera", "/nonexistent/video9"], capsys)
    assert code == 1 and checks["camera"]["status"] == "fail"
    assert "ls /dev/video*" in checks["camera"]["fix"]


def test_the_hdmi_and_buttons_need_an_overlay(tmp_path, monkeypatch, capsys):
    install(monkeypatch)
    code, _, checks = _run(["--hdmi", "--buttons"], capsys)
    assert code == 1
    assert checks["hdmi"]["detail"] == "no overlay: none is loaded and no --bitstream given"
    code, _, checks = _run(["--buttons", "--bitstream", "base.bit", "--backend", "onnxruntime"],
                           capsys)
    assert checks["buttons"]["status"] == "ok" and "switches_gpio too" in checks["buttons"]["detail"]


@pytest.fixture
def broker(tmp_path):
    require_mosquitto()
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "client-003", "s3cret"],
                   check=True, capture_output=True)
    port = free_port()
    lines = ["listener %d 127.0.0.1" % port, "allow_anonymous false",
             "password_file %s" % passwd, "persistence false", "log_dest stderr"]
    if os.geteuid() == 0:
        lines.append("user root")       # mosquitto drops to "mosquitto", who cannot read tmp_path
    with Mosquitto(str(tmp_path), port=port, lines=lines) as running:
        yield running


def test_the_broker_check_logs_in_with_the_configured_credentials(broker, tmp_path, capsys):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    url = "mqtt://client-003@127.0.0.1:%d" % broker.port
    code, _, checks = _run(["--backend", "onnxruntime", "--broker", url, "--password-file",
                            str(secret)], capsys)
    assert code == 0 and checks["broker"]["detail"] == "connected to 127.0.0.1:%d as client-003" \
        % broker.port
    secret.write_text("wrong\n")
    code, _, checks = _run(["--backend", "onnxruntime", "--broker", url, "--password-file",
                            str(secret), "--timeout", "2"], capsys)
    assert code == 1 and checks["broker"]["status"] == "fail"
    assert "broker refused the connection: Not authorized" in checks["broker"]["detail"]
    assert "--password-file" in checks["broker"]["fix"]


def test_an_unreachable_broker_is_named(capsys):
    url = "mqtt://127.0.0.1:%d" % free_port()
    code, _, checks = _run(["--backend", "onnxruntime", "--broker", url, "--timeout", "1"], capsys)
    assert code == 1 and "not reachable yet" in checks["broker"]["detail"]
    code, _, checks = _run(["--backend", "onnxruntime", "--broker", "http://x"], capsys)
    assert "--broker must look like mqtt://host:port" in checks["broker"]["detail"]


def test_without_opencv_the_doctor_reports_it_and_help_still_works():
    """Issue 25: without cv2, the doctor and `demo_app --help` died with a ModuleNotFoundError."""
    import subprocess
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[1])
    def run(module, *argv):
        code = ("import sys, runpy; sys.modules['cv2'] = None; sys.argv = %r; "
                "runpy.run_module(%r, run_name='__main__')" % ([module] + list(argv), module))
        return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)

    doctor = run("device", "doctor", "--backend", "onnxruntime")
    assert "Traceback" not in doctor.stderr, doctor.stderr
    assert doctor.returncode == 1 and "FAIL  opencv     OpenCV (cv2) is not installed" in doctor.stdout
    assert "pip install opencv-python-headless" in doctor.stdout
    for module in ("demo_app", "device"):
        helped = run(module, "--help")
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr
