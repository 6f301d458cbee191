"""The bodycam agent: recorder, evidence format, store, sync, console."""

__version__ = "0.1.0"
