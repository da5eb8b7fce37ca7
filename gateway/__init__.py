"""The event gateway: HTTP requests in, CloudEvents on Kafka out."""

from gateway.app import create_app

__all__ = ["create_app"]
