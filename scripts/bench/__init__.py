"""The sections of ``make bench``: evidence sealing and verification, the agent process, the agent against ffmpeg."""
