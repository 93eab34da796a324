"""pyproject.toml builds without our own warnings, with a setuptools that still runs on Python 3.8."""

import subprocess
import sys

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
