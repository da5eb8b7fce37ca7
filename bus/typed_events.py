"""Typed events at the edge: validate JSON data against the type's schema and carry it as Avro (pure).

An event whose `type` has a schema in the book leaves the gateway (or `bus publish`) as Avro, its
writer schema named in `dataschema`; other events stay JSON. Clients send data as JSON only: Avro
from outside would name a schema bus must then trust, and its body would need the bomb guard at the
edge as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bus.avro_codec import is_avro, to_avro_event
from bus.avro_schema import SchemaBook
from bus.avro_store import SchemaStore
from bus.errors import InvalidEvent
from bus.events import CloudEvent, is_json_content_type

__all__ = ["EdgeSchemas", "register_book", "typed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeSchemas:
    """What the gateway writes typed events with."""

    book: SchemaBook = field(default_factory=SchemaBook)
    """Event type -> schema: the platform's and the manifest's; empty: every event stays JSON."""
    registry_url: str | None = None
    """The schema registry's URL when one is configured: values are then Confluent-framed."""
    registry_ids: Mapping[str, int] = field(default_factory=dict)
    """Schema fingerprint -> its registry id (with a registry)."""


def register_book(book: SchemaBook, store: SchemaStore, *, registry_url: str | None = None) -> EdgeSchemas:
    """Register every type of the book in the store; ManifestError on the first incompatible one."""
    ids: dict[str, int] = {}
    for event_type, schema in book.types.items():
        schema_id = store.register(event_type, schema)
        if schema_id is not None:
            ids[schema.fingerprint] = schema_id
    return EdgeSchemas(book=book, registry_url=registry_url, registry_ids=ids)


def typed(events: Sequence[CloudEvent], schemas: EdgeSchemas) -> list[CloudEvent]:
    """The events with typed data validated and turned into Avro.

    InvalidEvent names the field: `data.items[2].price`, or `[1].data.items[2].price` in a batch.
    """
    out: list[CloudEvent] = []
    for index, event in enumerate(events):
        try:
            out.append(_typed(event, schemas))
        except InvalidEvent as exc:
            if len(events) > 1:
                raise InvalidEvent(f"[{index}].{exc.field}", exc.reason) from None
            raise
    return out


def _typed(event: CloudEvent, schemas: EdgeSchemas) -> CloudEvent:
    if is_avro(event):
        raise InvalidEvent(
            "datacontenttype",
            "application/avro is not accepted from clients: send the data as JSON; "
            "the gateway validates it against the type's schema and writes the Avro itself",
        )
    schema = schemas.book.for_type(event.type)
    if schema is None:
        return event
    if not is_json_content_type(event.datacontenttype):
        raise InvalidEvent(
            "datacontenttype",
            f"type {event.type!r} has an Avro schema: send its data as JSON (application/json), "
            f"not {event.datacontenttype}",
        )
    schema_id = schemas.registry_ids.get(schema.fingerprint)
    if schemas.registry_url is not None and schema_id is not None:
        return to_avro_event(event, schema, registry_url=schemas.registry_url, schema_id=schema_id)
    return to_avro_event(event, schema)
