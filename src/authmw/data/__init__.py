"""Data files shipped with authmw (route catalog, system policies)."""

__all__: list[str] = []  # a namespace: import the module you need
