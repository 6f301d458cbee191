"""Concrete drivers, one module per device, each implementing one HAL protocol.

Importing a driver module never imports its vendor library: that happens in ``open`` or
``probe``, so a machine without the library reports the driver unavailable.
"""
