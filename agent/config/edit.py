"""Changing one setting in the operator's config file without losing what else it holds.

The console's ``config set`` edits the file as text with tomlkit, so the operator's comments,
ordering and layout stay as they were; the result is validated by :func:`parse_config` before
anyone writes it.
"""

from __future__ import annotations

import tomlkit
import tomlkit.exceptions
from tomlkit.items import Table

from agent.config.model import Config, ConfigError
from agent.config.reader import parse_config


def set_setting(text: str, key: str, value: object, source: str = "the changed config") -> tuple[str, Config]:
    """``text`` with the setting at dotted ``key`` set to ``value`` (its section added when
    missing), and the config it now means. Raises :class:`ConfigError`."""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ConfigError("", f"invalid TOML: {exc}", source) from None
    *sections, name = key.split(".")
    node: tomlkit.TOMLDocument | Table = doc
    for part in sections:
        if part not in node:
            node.add(part, tomlkit.table())
        child = node[part]
        if not isinstance(child, Table):
            raise ConfigError(".".join(sections), "is not a table in the file; edit it by hand", source)
        node = child
    node[name] = value
    changed = tomlkit.dumps(doc)
    return changed, parse_config(changed, source)
