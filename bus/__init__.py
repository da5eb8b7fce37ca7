"""bus: a self-hostable, Kafka-native event platform (EventBridge + Lambda on your own Kafka)."""

from bus.errors import BusError, InvalidEvent, ManifestError
from bus.events import CloudEvent

__all__ = ["BusError", "CloudEvent", "InvalidEvent", "ManifestError", "__version__"]

__version__ = "0.1.0"
