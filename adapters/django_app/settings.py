"""Just enough Django settings for a JSON API whose callers sign their requests (no sessions, no database)."""

from __future__ import annotations

import os
import secrets

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)  # nothing here signs cookies
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"  # `manage.py runserver` serves the authmw-wrapped app too
INSTALLED_APPS: list[str] = []
# No CsrfViewMiddleware: callers authenticate every request with a signature or a token, never with cookies.
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
