"""Live view at headquarters: WHIP ingest from units brokered to a Janus media server, viewers by role."""
