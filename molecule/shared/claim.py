# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Send three ARP requests from a claimed MAC and address on an interface (a raw socket: CAP_NET_RAW).

Run by molecule/shared/hostile.yml as `python3 - IFNAME MAC SENDER_IP TARGET_IP <claim.py`: the frames
ask for TARGET_IP (the bridge's address) and say SENDER_IP is at MAC, so a bridge that lets them
through learns MAC on the sender's port and the host a neighbour SENDER_IP at MAC.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

ifname, mac, sender, target = sys.argv[1:5]
src = bytes.fromhex(mac.replace(":", ""))
arp = struct.pack(
    "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, socket.inet_aton(sender), bytes(6), socket.inet_aton(target)
)
frame = b"\xff" * 6 + src + struct.pack("!H", 0x0806) + arp
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
    sock.bind((ifname, 0))
    for _attempt in range(3):
        sock.send(frame)
        time.sleep(0.2)
print(f"sent 3 ARP requests on {ifname} from {mac} claiming {sender}")
