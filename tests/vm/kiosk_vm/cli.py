"""kiosk-vm: build the kiosk VM image, boot VMs, hand Ansible an inventory, tear down.

    tests/vm/kiosk-vm build                     build (or find) the cached image
    tests/vm/kiosk-vm up --state-dir D -n 2     boot 2 VMs, write D/inventory.yml, leave them running
    tests/vm/kiosk-vm ssh --state-dir D [--vm NAME] -- CMD
    tests/vm/kiosk-vm status --state-dir D
    tests/vm/kiosk-vm destroy --state-dir D     stop them (from any process) and remove D
    tests/vm/kiosk-vm binfmt --state-dir D --arch arm64   run arm64 programs here until destroy
    tests/vm/kiosk-vm foreign --arch arm64 -- CMD ...     CMD runs arm64 programs, with a binfmt_misc of its own
    (--arch arm64 or KIOSK_VM_ARCH=arm64 for an arm64 image and VMs under qemu-system-aarch64)
    tests/vm/kiosk-vm run -n 1 -- CMD ...       boot, run CMD with KIOSK_VM_INVENTORY set, destroy
    tests/vm/kiosk-vm smoke                     boot one VM and check systemd, cgroup2, ALSA cards

(or `python3 -m kiosk_vm ...` with tests/vm on PYTHONPATH). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import binfmt
from .image import DEFAULT_CACHE_DIR, ImageSpec, ensure_image, find_mirrors, host_packages, packages_for, sound_setup
from .inventory import Host, instance_config_yaml
from .vm import MACHINES, BootError, Fleet, destroy, enable_foreign, ssh_command


def _spec(args) -> ImageSpec:
    mirror, security = find_mirrors(args.release)
    return ImageSpec(
        release=args.release,
        arch=args.arch,
        mirror=(args.mirror or mirror).rstrip("/"),
        security_mirror=security if not args.mirror else None,
        packages=packages_for(args.arch) + tuple(args.package),
        apt_packages=host_packages() if args.host_packages else (),
        disk_size=args.disk_size,
    )


def _image(args):
    return ensure_image(_spec(args), args.cache_dir)


def _fleet(args, image) -> Fleet:
    return Fleet(
        args.state_dir, image, count=args.count, prefix=args.prefix, memory_mb=args.memory,
        cpus=args.cpus, ssh_timeout=args.timeout, group=args.group, names=args.name,
        kernel_args=tuple(args.kernel_arg),
    )  # fmt: skip


def cmd_build(args) -> int:
    image = _image(args)
    print(json.dumps({"image": str(image.path), **image.manifest}, indent=2))
    return 0


def cmd_up(args) -> int:
    image = _image(args)
    fleet = _fleet(args, image)
    fleet.up()
    fleet.keep()
    if args.instance_config:
        Path(args.instance_config).write_text(instance_config_yaml(fleet.hosts()))
    print(json.dumps(_status(fleet), indent=2))
    return 0


def _status(fleet: Fleet) -> dict:
    return {
        "inventory": str(fleet.inventory_path),
        "key": str(fleet.image.ssh_key),
        "vms": [
            {
                "name": vm.name,
                "port": vm.port,
                "pid": vm.pid(),
                "running": vm.running(),
                "boot_seconds": fleet.timings.get(vm.name),
                "system_state": fleet.boot_state.get(vm.name),
            }
            for vm in fleet.vms
        ],
    }


def cmd_status(args) -> int:
    print(json.dumps(_status(Fleet.load(args.state_dir)), indent=2))
    return 0


def cmd_ssh(args) -> int:
    fleet = Fleet.load(args.state_dir)
    vm = fleet._vm(args.vm) if args.vm else fleet.vms[0]
    cmd = ssh_command(Host(vm.name, vm.port, str(fleet.image.ssh_key)), *args.command)
    return subprocess.call(cmd)


def cmd_binfmt(args) -> int:
    print(json.dumps(enable_foreign(args.state_dir, args.arch)))
    return 0


def cmd_foreign(args) -> int:
    """Run a command that may run ARCH programs: in namespaces with a binfmt_misc of their own where the kernel
    has that (then nothing of the machine's binfmt_misc changes), else with the machine's, undone after."""
    if binfmt.private_supported(args.arch):
        return subprocess.call(binfmt.private_command(args.arch, args.command))
    with binfmt.foreign(args.arch):
        return subprocess.call(args.command)


def cmd_destroy(args) -> int:
    stopped = destroy(args.state_dir)
    print(json.dumps({"stopped": stopped}))
    return 0


def cmd_run(args) -> int:
    image = _image(args)
    with tempfile.TemporaryDirectory(prefix="kiosk-vm-") as tmp:
        args.state_dir = args.state_dir or os.path.join(tmp, "fleet")
        with _fleet(args, image) as fleet:
            env = dict(os.environ, KIOSK_VM_INVENTORY=str(fleet.inventory_path),
                       KIOSK_VM_STATE_DIR=str(fleet.state_dir))  # fmt: skip
            return subprocess.call(args.command, env=env)


# The CPU calibration: a fixed pure-Python loop, timed in the VM and on this machine, so a figure
# measured in a TCG VM can be scaled (docs/vm-harness.md).
CPU_LOOP = (
    "import time\nt = time.perf_counter()\ns = 0\nfor i in range(3_000_000):\n    s += i * i % 7\n"
    "print(round(time.perf_counter() - t, 3))"
)


def cpu_loop_here() -> float:
    r = subprocess.run([sys.executable, "-c", CPU_LOOP], capture_output=True, text=True, check=True)
    return float(r.stdout)


SMOKE_CHECKS = {
    "cpu_loop_s": f"python3 -c {shlex.quote(CPU_LOOP)}",
    "system_state": "systemctl is-system-running",
    "failed_units": "systemctl list-units --failed --plain --no-legend | cut -d' ' -f1 | xargs",
    "cgroup_fs": "stat -fc %T /sys/fs/cgroup",
    "asound_cards": "cat /proc/asound/cards",
    "kernel": "uname -r",
}


def cmd_smoke(args) -> int:
    t = time.monotonic()
    image = _image(args)
    result: dict = {"image": str(image.path), "image_ready_s": round(time.monotonic() - t, 1)}
    result["image_build_timings"] = image.manifest["timings"]
    with tempfile.TemporaryDirectory(prefix="kiosk-vm-") as tmp:
        args.state_dir = args.state_dir or os.path.join(tmp, "fleet")
        args.count = 1
        with _fleet(args, image) as fleet:
            result["boot_to_ssh_s"] = fleet.timings[fleet.vms[0].name]
            result["system_state_after_wait"] = fleet.boot_state[fleet.vms[0].name]
            for name, command in SMOKE_CHECKS.items():
                result[name] = fleet.ssh(0, command).stdout.strip()
    result["cpu_loop_here_s"] = cpu_loop_here()
    cards = {
        line.split("[", 1)[1].split("]", 1)[0].strip() for line in result["asound_cards"].splitlines() if "[" in line
    }
    ok = (
        result["system_state"] in ("running", "degraded")
        and result["cgroup_fs"] == "cgroup2fs"
        and set(sound_setup(image.arch).cards) <= cards
    )
    result["ok"] = ok
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiosk-vm", description=__doc__.split("\n", maxsplit=1)[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def image_opts(sp):
        sp.add_argument("--cache-dir", default=os.environ.get("KIOSK_VM_CACHE", DEFAULT_CACHE_DIR))
        sp.add_argument("--release", default="bookworm")
        sp.add_argument("--arch", default=os.environ.get("KIOSK_VM_ARCH", binfmt.host_arch()), choices=sorted(MACHINES),
                        help="Debian architecture of the image and VMs (or KIOSK_VM_ARCH)")  # fmt: skip
        sp.add_argument("--mirror", default=os.environ.get("KIOSK_VM_MIRROR"),
                        help="Debian mirror (default: the one this machine's apt uses)")  # fmt: skip
        sp.add_argument("--disk-size", default="3G")
        sp.add_argument("--package", action="append", default=[],
                        help="extra Debian package in the image (changes the cache key)")  # fmt: skip
        sp.add_argument("--host-packages", action="store_true",
                        default=os.environ.get("KIOSK_VM_HOST_PACKAGES", "") not in ("", "0", "false"),
                        help="preinstall the packages the host role installs (bindep.txt, profile host)")  # fmt: skip

    def fleet_opts(sp, state_required=True):
        sp.add_argument("--state-dir", required=state_required)
        sp.add_argument("-n", "--count", type=int, default=1)
        sp.add_argument("--prefix", default="kiosk-vm", help="VM names are PREFIX-0, PREFIX-1, ...")
        sp.add_argument("--name", action="append", default=[],
                        help="VM name (repeat; overrides --count/--prefix)")  # fmt: skip
        sp.add_argument("--memory", type=int, default=1536, help="MiB per VM")
        sp.add_argument("--cpus", type=int, default=2)
        sp.add_argument("--timeout", type=float, default=900, help="seconds to wait for SSH")
        sp.add_argument("--group", default="kiosk_vms", help="inventory group of the VMs")
        sp.add_argument("--kernel-arg", action="append", default=[],
                        help="one more word on the VMs' kernel command line (repeat)")  # fmt: skip

    sp = sub.add_parser("build", help="build or find the cached image")
    image_opts(sp)
    sp.set_defaults(func=cmd_build)

    sp = sub.add_parser("up", help="boot VMs and leave them running")
    image_opts(sp)
    fleet_opts(sp)
    sp.add_argument("--instance-config", help="also write molecule's instance_config here")
    sp.set_defaults(func=cmd_up)

    sp = sub.add_parser("destroy", help="stop the VMs of a state dir and remove it")
    sp.add_argument("--state-dir", required=True)
    sp.set_defaults(func=cmd_destroy)

    sp = sub.add_parser("binfmt", help="let this machine run ARCH programs until destroy of the state dir")
    sp.add_argument("--state-dir", required=True)
    sp.add_argument("--arch", required=True, choices=sorted(binfmt.QEMU_USER))
    sp.set_defaults(func=cmd_binfmt)

    sp = sub.add_parser("foreign", help="run a command that runs ARCH programs (its own binfmt_misc where it can)")
    sp.add_argument("--arch", required=True, choices=sorted(binfmt.QEMU_USER))
    sp.add_argument("command", nargs="+")
    sp.set_defaults(func=cmd_foreign)

    sp = sub.add_parser("status", help="the VMs of a state dir")
    sp.add_argument("--state-dir", required=True)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("ssh", help="run a command in a VM")
    sp.add_argument("--state-dir", required=True)
    sp.add_argument("--vm", help="VM name (default: the first)")
    sp.add_argument("command", nargs="+")
    sp.set_defaults(func=cmd_ssh)

    sp = sub.add_parser("run", help="boot VMs, run a command, destroy them")
    image_opts(sp)
    fleet_opts(sp, state_required=False)
    sp.add_argument("command", nargs="+")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("smoke", help="boot one VM and check systemd, cgroup2, ALSA cards")
    image_opts(sp)
    fleet_opts(sp, state_required=False)
    sp.set_defaults(func=cmd_smoke)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (BootError, RuntimeError, ValueError) as e:
        print(f"kiosk-vm: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
