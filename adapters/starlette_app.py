"""Starlette behind authmw: the ASGI middleware signs callers in; endpoints await ``require(...)(request)``.

Run: ``AUTHMW_STORE=sqlite:///authmw.db AUTHMW_MASTER_KEY_FILE=authmw.key uvicorn --app-dir adapters starlette_app:app``
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authmw import open_guard
from authmw.asgi import AuthMiddleware
from authmw.contrib.starlette import current_context, install_error_handler, require

guard = open_guard(os.environ.get("AUTHMW_STORE"), unmatched="authenticate-only")
may_create = require("modelarts:trainJob:create")
may_delete = require("modelarts:trainJob:delete")


async def whoami(request: Request) -> JSONResponse:
    context = current_context(request)
    return JSONResponse(
        {
            "user": request.user.display_name,
            "user_id": request.user.identity,
            "workspace": context.workspace_id,
            "auth_method": context.auth_method.value if context.auth_method else None,
        }
    )


async def create_job(request: Request) -> JSONResponse:
    await may_create(request)  # raises the refusal, answered by the installed handler
    return JSONResponse({"created_by": request.user.display_name}, status_code=201)


async def delete_job(request: Request) -> JSONResponse:
    await may_delete(request)
    return JSONResponse({"deleted": request.path_params["job_id"], "by": request.user.display_name})


app = Starlette(
    routes=[
        Route("/whoami", whoami),
        Route("/jobs", create_job, methods=["POST"]),
        Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
    ],
    middleware=[Middleware(AuthMiddleware, guard=guard)],
)
install_error_handler(app)
