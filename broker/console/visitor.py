"""Who is asking for a console page, and how a page is rendered: shared by the console's page
modules (`app`, `video_pages`, `delivery_pages`, `analytics_pages`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from broker.caller import Caller
from broker.console.web import Request, Response


@dataclass(frozen=True, slots=True, kw_only=True)
class Visitor:
    """Who is asking: the session's access key (None when access control is off) and the
    CSRF token this browser's forms carry; `cookies` are the ones to set on the answer. The
    caller's region is the one the visitor chose (`regions`: the selector's choices)."""

    access_key_id: str | None
    csrf: str
    cookies: tuple[str, ...]
    caller: Caller
    regions: tuple[str, ...] = ()


class Render(Protocol):
    """Renders a template into a page for the visitor (`ConsoleService._page`)."""

    def __call__(
        self, template: str, visitor: Visitor, *, status: int = 200, **context: Any
    ) -> Response: ...


class FamilyPages(Protocol):
    """The pages of one of the family's services below a path prefix (e.g. `/video`)."""

    async def route(self, request: Request, visitor: Visitor, rest: str) -> Response | None:
        """The page for `rest` (the path below the prefix), or None when there is none."""
        ...
