"""Record after the fact: the background recording, its ring, and the export of a range (agent/background)."""
