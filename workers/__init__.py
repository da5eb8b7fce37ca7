"""Worker groups: host user functions, publish their results and errors."""

from workers.handlers import Context, load_handler

__all__ = ["Context", "load_handler"]
