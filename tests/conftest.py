import os
import sys

from hypothesis import HealthCheck, settings

# The repository root on sys.path, so tests import the packages and scripts/ as a user would.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Bounded property tests: the whole suite must stay under 10 minutes on 2 cores.
settings.register_profile(
    "default", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
