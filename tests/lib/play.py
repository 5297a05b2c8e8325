"""Run the collection's modules through Ansible itself, as a user would.

`run_module("kiosk.lxc.lxc_domain", {...}, check=True, diff=True)` writes a
one-task playbook, runs ansible-playbook against localhost (with this venv's
Python, which has libvirt-python) and returns what the module returned, with
`_status` ("ok", "changed", "failed", ...) added.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"


def ansible_env(record_file: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
        ANSIBLE_CALLBACKS_ENABLED="kiosk_record",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCALHOST_WARNING="False",
    )
    if record_file:
        env["KIOSK_RECORD_FILE"] = record_file
    return env


def run_playbook(
    playbook: Path | str, *args: str, inventory: str = "localhost,", extra_vars: dict | None = None
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run a playbook; returns the process and the recorded task results."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as rec:
        record = rec.name
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i", inventory,
        "-e", f"ansible_python_interpreter={sys.executable}",
        "-e", "ansible_connection=local",
        str(playbook), *args,
    ]  # fmt: skip
    if extra_vars:
        cmd[1:1] = ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(cmd, env=ansible_env(record), capture_output=True, text=True, check=False)
    try:
        lines = Path(record).read_text(encoding="utf-8").splitlines()
    finally:
        os.unlink(record)
    return proc, [json.loads(line) for line in lines if line.strip()]


def run_module(module: str, args: dict, *, check: bool = False, diff: bool = False) -> dict:
    """Run one module task; return its result with `_status` and `_stdout` added."""
    play = [
        {
            "name": "module under test",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [{"name": "under test", module: args}],
        }
    ]
    with tempfile.TemporaryDirectory() as tmp:
        pb = Path(tmp) / "play.yml"
        pb.write_text(json.dumps(play), encoding="utf-8")
        flags = (["--check"] if check else []) + (["--diff"] if diff else [])
        proc, records = run_playbook(pb, *flags)
    if not records:
        raise AssertionError(f"ansible-playbook ran no task (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = dict(records[-1]["result"])
    result["_status"] = records[-1]["status"]
    result["_stdout"] = proc.stdout
    return result


def local_kiosk(bridge: str, address: str, guests: list[dict]) -> dict:
    """An inventory of one kiosk, this machine, on its own bridge without NAT or persistence (tests, benches)."""
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "kiosk_network_bridge": bridge,
        "kiosk_network_address": address,
        "kiosk_network_nat": False,
        "kiosk_network_persistent": False,
        "kiosk_guests": guests,
    }
    return {"kiosks": {"hosts": {"localhost": host}}}
