"""The operations room: headquarters' web application, mounted at /ops (docs/architecture.md, "The web layer")."""
