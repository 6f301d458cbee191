"""Hardware abstraction layer: one protocol per sensor kind and the values that flow through them.

Nothing here does I/O or imports a vendor library. Drivers in ``drivers/`` implement these
protocols; the agent only ever sees these types.
"""
