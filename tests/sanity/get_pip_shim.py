"""Stand-in for ansible-test's get-pip bootstrap script, which is downloaded from
a host these machines cannot reach. ansible-test runs the cached script as
`python get_pip_X.py [pip options] packages` inside a new venv without pip;
this does the same job from the standard library's ensurepip and PyPI.
The Makefile copies it to ~/.ansible/test/cache/get_pip_<version>.py.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

# In a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own
# environment, which would hide the machine's pip.conf (its CA bundle) from
# the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args]))
