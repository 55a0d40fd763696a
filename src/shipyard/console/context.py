"""What every page handler gets: the plane, the job lister, the templates, the request and
the session (whose CSRF token each form carries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2

from shipyard.console.auth import Session
from shipyard.console.http import Request, Response, html
from shipyard.console.listing import Lister
from shipyard.control import ControlPlane

__all__ = ["PageContext"]


@dataclass
class PageContext:
    plane: ControlPlane
    lister: Lister
    env: jinja2.Environment
    request: Request
    session: Session | None

    def render(self, template: str, http_status: int = 200, **values: Any) -> Response:
        return html(self.render_text(template, **values), http_status)

    def render_text(self, template: str, **values: Any) -> str:
        return self.env.get_template(template).render(
            base=self.request.prefix, csrf=self.session.csrf if self.session else "",
            access_key=self.session.access_key if self.session else "",
            request=self.request, **values)
