"""The views and their URLs: each view reads the context authmw left in ``request.META["authmw"]``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from authmw import AuthContext
from authmw.contrib.django import require


def _user(request: HttpRequest) -> str | None:
    context: AuthContext = request.META["authmw"]
    return context.principal.user_name if context.principal else None


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    context: AuthContext = request.META["authmw"]
    return JsonResponse(
        {
            "user": _user(request),
            "user_id": context.principal.user_id if context.principal else None,
            "workspace": context.workspace_id,
            "auth_method": context.auth_method.value if context.auth_method else None,
        }
    )


@require_POST
@require("modelarts:trainJob:create")
def create_job(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"created_by": _user(request)}, status=201)


@require_http_methods(["DELETE"])
@require("modelarts:trainJob:delete")
async def delete_job(request: HttpRequest, job_id: str) -> JsonResponse:  # async views are checked the same way
    return JsonResponse({"deleted": job_id, "by": _user(request)})


urlpatterns = [
    path("whoami", whoami),
    path("jobs", create_job),
    path("jobs/<str:job_id>", delete_job),
]
