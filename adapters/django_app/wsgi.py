"""The WSGI entry point: Django's application wrapped by authmw (``gunicorn django_app.wsgi:application``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from authmw import open_guard
from authmw.wsgi import AuthMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

guard = open_guard(os.environ.get("AUTHMW_STORE"), unmatched="authenticate-only")
application = AuthMiddleware(get_wsgi_application(), guard=guard)
