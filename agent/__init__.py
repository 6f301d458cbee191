"""The bodycam agent: recorder, evidence format, store, sync, console."""
