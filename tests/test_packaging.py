"""pyproject.toml builds without our own warnings, with a setuptools that still runs on Python 3.8."""

import os
import subprocess
import sys

import pytest

from tests.fl_testkit import ROOT

APPLY = """
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution
apply_configuration(Distribution(), "pyproject.toml")
"""


def test_project_metadata_applies_without_a_deprecation_warning():
    """Before: `project.license` as a TOML table is deprecated (SetuptoolsDeprecationWarning)."""
    done = subprocess.run([sys.executable, "-W", "error", "-c", APPLY], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr[-2000:]


def test_the_build_backend_still_installs_on_python_3_8():
    """setuptools 75.3 is the last release for Python 3.8, the boards' Python (PYNQ 2.7)."""
    from packaging.requirements import Requirement

    from fedcore.experiment import read_toml

    requires = read_toml(f"{ROOT}/pyproject.toml")["build-system"]["requires"]

    setuptools = next(Requirement(r) for r in requires if Requirement(r).name == "setuptools")
    assert setuptools.specifier.contains("75.3.0")


def test_system_deps_waits_for_the_dpkg_lock_and_says_when_apt_fails(tmp_path):
    """Issue 25: parallel make runs collided on dpkg's lock and showed apt's raw error."""
    if os.geteuid() != 0:
        pytest.skip("system-deps.sh calls apt-get only as root")
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "apt.log"
    (fake / "apt-get").write_text('#!/bin/sh\necho "$@" >> %s\ncase "$*" in *install*) exit 100;; esac\n' % log)
    (fake / "apt-get").chmod(0o755)
    script = os.path.join(ROOT, "scripts", "system-deps.sh")
    result = subprocess.run(["bash", script, "no-such-package-fedcore"], capture_output=True, text=True,
                            env=dict(os.environ, PATH="%s:%s" % (fake, os.environ["PATH"])), timeout=60)
    calls = log.read_text().splitlines()
    assert all("DPkg::Lock::Timeout=600" in call for call in calls) and len(calls) == 2, calls
    assert result.returncode == 1 and "apt-get could not install no-such-package-fedcore" in result.stderr


def test_every_console_script_is_the_python_m_program():
    """Issue 25: the workstation tools had no entry points; each one's --help works."""
    import importlib

    from fedcore.experiment import read_toml

    scripts = read_toml(os.path.join(ROOT, "pyproject.toml"))["project"]["scripts"]
    assert set(scripts) == {"fl-sim", "fl-study", "fl-coordinator", "fl-testbed", "fewshot", "tensil", "hwflow"}
    for name, target in scripts.items():
        module, function = target.split(":")
        main = getattr(importlib.import_module(module), function)
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0, name


def test_torch_index_adds_the_cpu_wheels_only_when_they_answer(tmp_path):
    """Issue 25: the install took whatever torch build the index served (PyPI's is CUDA's)."""
    import http.server
    import threading

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu.whl'>torch</a>")
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = os.path.join(ROOT, "scripts", "torch-index.sh")
    env = dict(os.environ, PIP_EXTRA_INDEX_URL="file:///mirror/simple")
    try:
        url = "http://127.0.0.1:%d/" % server.server_address[1]
        up = subprocess.run(["sh", script, url, sys.executable], capture_output=True, text=True, env=env, timeout=60)
    finally:
        server.shutdown()
    down = subprocess.run(["sh", script, url, sys.executable], capture_output=True, text=True, env=env, timeout=60)

    options = up.stdout.split()
    assert up.returncode == 0 and options[-2:] == ["--extra-index-url", url], up.stdout + up.stderr
    assert "file:///mirror/simple" in options  # a command-line option replaces the configured extra indexes
    assert down.returncode == 0 and down.stdout == "" and "does not answer" in down.stderr
