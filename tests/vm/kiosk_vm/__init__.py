"""Kiosk VMs for tests: a cached Debian image, qemu VMs reachable over SSH, an inventory.

See docs/vm-harness.md. Standard library only, so it runs with any python3.
"""

from .image import Image, ImageSpec, ensure_image, find_mirrors
from .inventory import Host, instance_config_yaml, inventory_yaml, write_inventory
from .vm import BootError, Fleet, destroy

__all__ = [
    "BootError",
    "Fleet",
    "Host",
    "Image",
    "ImageSpec",
    "destroy",
    "ensure_image",
    "find_mirrors",
    "instance_config_yaml",
    "inventory_yaml",
    "write_inventory",
]
