# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_bridge: systemd units that rebuild the bridge at boot (persistent: true).

Two units per bridge, independent of the host's network manager:
- kiosk-lxc-bridge-<br>.service, a oneshot that adds the bridge when missing
  (never deletes it), sets its address, enables forwarding and loads the NAT
  rules from the file the module keeps beside the dnsmasq config;
- kiosk-lxc-dnsmasq-<br>.service, dnsmasq with the module's config file.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.firewall import nft_script

UNIT_DIR = "/etc/systemd/system"
HEADER = "# Managed by kiosk.lxc.lxc_bridge: edits are overwritten.\n"


def bridge_unit(bridge: str) -> str:
    return f"kiosk-lxc-bridge-{bridge}.service"


def dnsmasq_unit(bridge: str) -> str:
    return f"kiosk-lxc-dnsmasq-{bridge}.service"


def nat_file(spec) -> str:
    return os.path.join(spec.config_dir, f"nat-{spec.name}.nft")


def managed_paths(spec, unit_dir: str = UNIT_DIR) -> list[str]:
    """Every file render() may write for this bridge, to find and remove stale ones."""
    return [
        nat_file(spec),
        os.path.join(unit_dir, bridge_unit(spec.name)),
        os.path.join(unit_dir, dnsmasq_unit(spec.name)),
    ]


def render(spec, backend: str | None, tools: dict, unit_dir: str = UNIT_DIR) -> dict[str, str]:
    """{path: content} of every persistent file for the spec (units and the NAT rules file)."""
    ip, sysctl = tools.get("ip", "/usr/sbin/ip"), tools.get("sysctl", "/usr/sbin/sysctl")
    br, addr = spec.name, spec.interface.with_prefixlen
    brd = spec.interface.network.broadcast_address
    files: dict[str, str] = {}
    exec_lines = [
        f"ExecStart=/bin/sh -c '{ip} link show dev {br} >/dev/null 2>&1 || {ip} link add name {br} type bridge'",
        f"ExecStart={ip} address replace {addr} broadcast {brd} dev {br}",
        f"ExecStart={ip} link set dev {br} up",
    ]
    if spec.nat and backend:
        exec_lines.append(f"ExecStart={sysctl} -q -w net.ipv4.ip_forward=1")
        if backend == "nftables":
            path = nat_file(spec)
            files[path] = nft_script(spec)
            exec_lines.append(f"ExecStart={tools.get('nft', '/usr/sbin/nft')} -f {path}")
        else:
            ipt = tools.get("iptables", "/usr/sbin/iptables")
            chain, net = f"KIOSK-LXC-{br}", spec.network.with_prefixlen
            exec_lines += [
                f"ExecStart=-{ipt} -w -t nat -N {chain}",
                f"ExecStart={ipt} -w -t nat -F {chain}",
                f"ExecStart={ipt} -w -t nat -A {chain} -s {net} ! -d {net} -j MASQUERADE",
                f"ExecStart=/bin/sh -c '{ipt} -w -t nat -C POSTROUTING -j {chain} 2>/dev/null"
                f" || {ipt} -w -t nat -I POSTROUTING -j {chain}'",
            ]
    files[os.path.join(unit_dir, bridge_unit(br))] = (
        HEADER + "[Unit]\n"
        f"Description=kiosk.lxc bridge {br} ({addr}, NAT {'on' if spec.nat else 'off'})\n"
        "DefaultDependencies=no\n"
        "After=local-fs.target\n"
        f"Before=network-pre.target libvirtd.service {dnsmasq_unit(br)}\n"
        "Wants=network-pre.target\n"
        "\n[Service]\nType=oneshot\nRemainAfterExit=yes\n" + "\n".join(exec_lines) + "\n"
        "\n[Install]\nWantedBy=multi-user.target\n"
    )
    if spec.dnsmasq:
        files[os.path.join(unit_dir, dnsmasq_unit(br))] = (
            HEADER + "[Unit]\n"
            f"Description=kiosk.lxc DHCP and DNS on bridge {br}\n"
            f"Requires={bridge_unit(br)}\n"
            f"After={bridge_unit(br)} network.target\n"
            "\n[Service]\nType=simple\n"
            f"ExecStartPre=/bin/mkdir -p {spec.state_dir}\n"
            f"ExecStart={tools.get('dnsmasq', '/usr/sbin/dnsmasq')} --keep-in-foreground --conf-file={spec.conf_path}\n"
            "ExecReload=/bin/kill -HUP $MAINPID\n"
            "Restart=on-failure\n"
            "\n[Install]\nWantedBy=multi-user.target\n"
        )
    return files
