"""Benchmark the hotplug agent: from a card's uevent to the guest's open() seeing the card.

Not a test: it prints latencies. One busybox guest, configured by
sound_passthrough with `missing: ignore` and the USB card's selector,
probes from its init (in its cgroup) every 10 ms: /witness/controlC1 (a
node the bench made, so only the device cgroup decides) and
/dev/snd/controlC1 (the node the agent makes). The agent runs for real in
the umockdev lab of tests/lib/hotplug_lab.py (the cards are
umockdev devices with mknod-made nodes, no kernel driver). For each of N
plug/unplug cycles (default 20) it measures, from the moment before the
uevents are sent:
- agent: the agent has handled every event of the plug (its actions done);
- cgroup: the probe of the witness node first wrote ENXIO;
- node: the probe of /dev/snd/controlC1 first wrote ENXIO;
- unplug: the witness probe first wrote EPERM again after the removal.
A probe's time is its result file's mtime, so the 10 ms probe interval is
part of the figure. The guest is removed at the end, also after a failure.

    .venv/bin/python bench/hotplug.py [N]
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "lib"), str(REPO / "build" / "collections")]

import guest as guestlib
import hotplug_lab as lab
import libvirt

PROBES = ["/witness/controlC1", "/dev/snd/controlC1"]


def first_write(path: Path, text: str, since: float, timeout: float = 10.0) -> float:
    """Seconds from `since` (monotonic) until the probe file first held text (by its mtime)."""
    offset = time.time() - time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = path.stat()
            if text in path.read_text(encoding="utf-8", errors="replace"):
                return st.st_mtime - offset - since
        except OSError:
            pass
        time.sleep(0.001)
    raise SystemExit(f"{path} never said {text!r} within {timeout} s")


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{name:8s} median {statistics.median(ms):7.1f} ms   max {max(ms):7.1f} ms   min {min(ms):7.1f} ms"


def main(cycles: int) -> None:
    conn = libvirt.open("lxc:///system")
    name = f"kbench-hotplug-{secrets.token_hex(2)}"
    enxio, eperm = guestlib.ERRNO_TEXT["ENXIO"], guestlib.ERRNO_TEXT["EPERM"]
    with tempfile.TemporaryDirectory(prefix="kiosk-hotplug-bench-") as tmpdir:
        tmp = Path(tmpdir)
        host = lab.make_fake_host(tmp)
        root = guestlib.make_rootfs(tmp / "rootfs", guestlib.probe_loop(PROBES, interval=0.01))
        agent = None
        try:
            dom = lab.start_guests(conn, host, {name: (root, {"usb": "0c76:161f"})})[name]
            lab.witness(dom, {"controlC1": 10})
            agent = lab.Lab(host["dev"], tmp / "hotplug.log", only=[name])
            figures = {"agent": [], "cgroup": [], "node": [], "unplug": []}
            for _cycle in range(cycles):
                lab.plug_nodes(host, True)
                answer = agent.plug()
                figures["agent"].append(answer["done"] - answer["event"])
                figures["cgroup"].append(first_write(root / "out" / "probe.0", enxio, answer["event"]))
                figures["node"].append(first_write(root / "out" / "probe.1", enxio, answer["event"]))
                answer = agent.unplug()
                lab.plug_nodes(host, False)
                figures["unplug"].append(first_write(root / "out" / "probe.0", eperm, answer["event"]))
        finally:
            if agent is not None:
                agent.close()
            try:
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
            conn.close()
    version = "v1" if os.path.isdir("/sys/fs/cgroup/devices") else "v2"
    print(f"hotplug agent, {cycles} plug/unplug cycles, cgroup {version}")
    for key, values in figures.items():
        print(summary(key, values))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
