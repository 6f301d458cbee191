"""The one unit API: what the daemon hands to the console, the control socket and the heartbeat.

``status`` assembles the typed status once per request; ``api.UnitApi`` is every read and change
a front-end may ask for; ``commands`` is the one command table (name, arguments, access level,
handler) both front-ends dispatch through; ``access`` maps a socket peer to an access level;
``errors.Refused`` is the one refusal. Nothing here imports the daemon.
"""
