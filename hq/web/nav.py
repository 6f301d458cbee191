"""The mount point and the nav: what each feature adds to the menu, and for which roles."""

from __future__ import annotations

from dataclasses import dataclass

from hq.accounts.records import Role

PREFIX = "/ops"


@dataclass(frozen=True, slots=True)
class NavItem:
    """One entry of the nav: shown to users holding any of ``roles`` (all users when empty)."""

    label: str
    path: str  # under /ops, e.g. "/audit"
    roles: frozenset[Role]
    description: str = ""

    @property
    def href(self) -> str:
        return PREFIX + self.path
