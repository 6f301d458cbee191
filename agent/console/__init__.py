"""The technician console on a serial line: diagnostics for anyone, changes after a key login.

``parser`` assembles lines, ``commands`` is the command table, ``auth`` the challenge-response
login and lockout, ``session`` one line's protocol, ``server`` the pyserial thread, ``backend``
what the console needs from the unit and ``agent_backend`` the running agent behind it.
``service.start_console`` wires it all for ``agent.daemon``. See docs/console.md.
"""
