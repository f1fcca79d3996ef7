"""authmw quick start, FastAPI: each route names its IAM action where it is written; ``protect`` reads them.

Run: ``uvicorn fastapi_app:app --port 8000`` (the store: ``$AUTHMW_STORE``, made by ``authmw init``).
``/docs`` and ``/openapi.json`` stay public; a route that names no action would stop the app at start-up.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI

from authmw import AuthContext
from authmw.contrib.starlette import protect, public, require

app = FastAPI(title="reports")
REPORTS = {1: "q1 revenue", 2: "q2 revenue"}


@app.get("/healthz")
@public
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/reports")
async def list_reports(context: Annotated[AuthContext, Depends(require("reports:report:list"))]) -> dict[str, Any]:
    user = context.principal.user_name if context.principal else None
    return {"user": user, "reports": REPORTS}


@app.delete("/reports/{report_id}", dependencies=[Depends(require("reports:report:delete"))])
async def delete_report(report_id: int) -> dict[str, int]:
    REPORTS.pop(report_id, None)
    return {"deleted": report_id}


protect(app)  # after the routes: the guard's route table is read from them
