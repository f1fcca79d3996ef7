"""authmw quick start, Flask: each view names its IAM action with ``@require``; ``protect`` reads them.

Run: ``flask --app flask_app run --port 8000`` (the store: ``$AUTHMW_STORE``, made by ``authmw init``).
``/docs`` is public; a view that names no action would stop the app at start-up.
"""

from typing import Any

from flask import Flask

from authmw.contrib.flask import context, protect, public, require

app = Flask(__name__)
REPORTS = {1: "q1 revenue", 2: "q2 revenue"}


@app.get("/docs")
@public
def docs() -> dict[str, str]:
    return {"GET /reports": "reports:report:list", "DELETE /reports/<int:report_id>": "reports:report:delete"}


@app.get("/reports")
@require("reports:report:list")
def list_reports() -> dict[str, Any]:
    principal = context().principal
    return {"user": principal.user_name if principal else None, "reports": REPORTS}


@app.delete("/reports/<int:report_id>")
@require("reports:report:delete")
def delete_report(report_id: int) -> dict[str, int]:
    REPORTS.pop(report_id, None)
    return {"deleted": report_id}


protect(app)  # after the views: the guard's route table is read from them
