"""Flask behind authmw: the WSGI middleware wraps ``app.wsgi_app``; ``@require`` authorizes views.

Run: ``AUTHMW_STORE=sqlite:///authmw.db AUTHMW_MASTER_KEY_FILE=authmw.key flask --app adapters/flask_app.py run``
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from authmw import open_guard
from authmw.contrib.flask import context, install_error_handler, require
from authmw.wsgi import AuthMiddleware

guard = open_guard(os.environ.get("AUTHMW_STORE"), unmatched="authenticate-only")

app = Flask(__name__)
app.wsgi_app = AuthMiddleware(app.wsgi_app, guard=guard)  # type: ignore[method-assign]  # so `flask run` serves it
install_error_handler(app)  # for views that call guard.authorize themselves


def _user() -> str | None:
    principal = context().principal
    return principal.user_name if principal else None


@app.get("/whoami")
def whoami() -> dict[str, Any]:
    checked = context()
    return {
        "user": _user(),
        "user_id": checked.principal.user_id if checked.principal else None,
        "workspace": checked.workspace_id,
        "auth_method": checked.auth_method.value if checked.auth_method else None,
    }


@app.post("/jobs")
@require("modelarts:trainJob:create")
def create_job() -> tuple[dict[str, Any], int]:
    return {"created_by": _user()}, 201


@app.delete("/jobs/<job_id>")
@require("modelarts:trainJob:delete")
def delete_job(job_id: str) -> dict[str, Any]:
    return {"deleted": job_id, "by": _user()}
