"""What the GPIO drivers share: whether libgpiod and the GPIO character device can be used here."""

from __future__ import annotations

import importlib.util
import os

from hal.common import Availability

GPIOCHIP = "/dev/gpiochip0"


def gpiod_availability(path: str = GPIOCHIP) -> Availability:
    """libgpiod v2 bindings importable, and ``path`` present and read-write for this user."""
    if importlib.util.find_spec("gpiod") is None:
        return Availability(False, "library missing: pip install gpiod (libgpiod v2 bindings)")
    if not os.path.exists(path):
        return Availability(False, f"device absent: {path}")
    if not os.access(path, os.R_OK | os.W_OK):
        return Availability(False, f"permission denied: {path} (add the service user to group gpio)")
    return Availability(True)
