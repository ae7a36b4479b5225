"""The admin HTTP API, mounted by `dopamine serve` at /admin. Every route requires the Admin service.

(Work in progress: the routes are added in the next commits.)
"""

from __future__ import annotations

from typing import Sequence

from starlette.applications import Starlette
from starlette.routing import BaseRoute


def create_admin_app(archive, settings, access, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    return Starlette(routes=list(extra_routes))
