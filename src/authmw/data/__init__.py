"""Data files shipped with authmw (route catalog, system policies)."""
