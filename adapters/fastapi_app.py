"""FastAPI behind authmw: the ASGI middleware signs callers in, ``require`` dependencies authorize endpoints.

Run: ``AUTHMW_STORE=sqlite:///authmw.db AUTHMW_MASTER_KEY_FILE=authmw.key uvicorn --app-dir adapters fastapi_app:app``
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from authmw import AuthContext, open_guard
from authmw.asgi import AuthMiddleware
from authmw.contrib.starlette import current_context, install_error_handler, require

# Any signed caller passes the middleware (routes it does not know are authenticate-only; the ModelArts preset
# still applies to its own paths); each endpoint below names the IAM action it needs.
guard = open_guard(os.environ.get("AUTHMW_STORE"), unmatched="authenticate-only")

# Dependencies: the request's context narrowed to the action, or a 403 action_denied answer.
MayCreateJobs = Annotated[AuthContext, Depends(require("modelarts:trainJob:create"))]
MayDeleteJobs = Annotated[AuthContext, Depends(require("modelarts:trainJob:delete"))]

app = FastAPI(title="jobs behind authmw")
install_error_handler(app)  # refusals raised by require() answer as SPEC §9 JSON errors
app.add_middleware(AuthMiddleware, guard=guard)


def _user(context: AuthContext) -> str | None:
    return context.principal.user_name if context.principal else None


@app.get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    context = current_context(request)
    return {
        "user": request.user.display_name,
        "user_id": request.user.identity,
        "workspace": context.workspace_id,
        "auth_method": context.auth_method.value if context.auth_method else None,
        "may_delete_jobs": "modelarts:trainJob:delete" in request.auth.scopes,
    }


@app.post("/jobs", status_code=201)
async def create_job(context: MayCreateJobs) -> dict[str, Any]:
    decision = context.decision  # names the policy statement that allowed it
    return {"created_by": _user(context), "allowed_by": decision.policy if decision else None}


@app.delete("/jobs/{job_id}")
async def delete_job(job_id: str, context: MayDeleteJobs) -> dict[str, Any]:
    return {"deleted": job_id, "by": _user(context)}
