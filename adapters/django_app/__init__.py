"""A minimal Django project behind :class:`authmw.wsgi.AuthMiddleware` (wrapped in :mod:`django_app.wsgi`)."""
