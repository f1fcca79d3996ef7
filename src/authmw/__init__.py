"""authmw: cloud-grade authentication and access control for Python web apps."""
