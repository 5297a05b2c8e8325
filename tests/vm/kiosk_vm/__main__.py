"""`python3 -m kiosk_vm` (with tests/vm on PYTHONPATH): see kiosk_vm.cli."""

import sys

from .cli import main

sys.exit(main())
