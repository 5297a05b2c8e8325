"""The VM harness (kiosk_vm, beside these tests) is plain Python outside the collection: import it directly."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
