"""The technician console on a serial line: diagnostics for anyone, changes after a key login.

``parser`` assembles lines, ``auth`` the challenge-response login and lockout, ``session`` one
line's protocol, ``server`` the pyserial thread, ``backend`` what the console needs from the
unit. The commands are the unit API's one table (``agent.unitapi.commands``) and the unit
behind them is the ``agent.unitapi.api.UnitApi`` the daemon hands to ``service.start_console``.
Nothing here imports the daemon. See docs/console.md.
"""
