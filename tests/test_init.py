"""roofseg/__init__.py: OpenMP threads wait passively unless the user chose a policy."""
import os
import subprocess
import sys

import pytest

CODE = "import roofseg, os; print(os.environ.get('OMP_WAIT_POLICY'))"


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_wait_policy_default_and_override(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
