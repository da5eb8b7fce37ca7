"""Worker groups: host user functions, publish their results and errors."""

from workers.handlers import Context, load_handler
from workers.signals import DeadLetter, Retry

__all__ = ["Context", "DeadLetter", "Retry", "load_handler"]
