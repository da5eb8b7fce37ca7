"""Where writer schemas are found, and reading a typed event's Avro data with them (pure).

A reader needs the schema a record was written with, which may be newer than its own (a worker
whose manifest has v1 reading a record written with v2). Its own book holds the schemas it was
built with; a `SchemaStore` holds every schema any gateway registered: the compacted
`<prefix>.schemas` topic (`bus.kafka.schema_store`) or a Confluent-compatible registry
(`bus.registry`). Both refuse a new version that is incompatible with the type's latest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bus.avro_codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    BookRef,
    RegistryRef,
    from_avro_event,
    is_avro,
    parse_dataschema,
)
from bus.avro_schema import Schema, SchemaBook
from bus.errors import InvalidEvent
from bus.events import CloudEvent

__all__ = ["SchemaStore", "TypedReader"]


class SchemaStore(Protocol):
    """Registered writer schemas, shared by every process of a prefix."""

    def register(self, event_type: str, schema: Schema) -> int | None:
        """Register `schema` as the type's latest version; its registry id, if the store assigns ids.

        Registering a known schema again changes nothing. A schema incompatible with the type's
        latest version raises ManifestError(`schemas.<type>`, ...) naming the fields.
        """
        ...

    def ensure_compatible(self, event_type: str, schema: Schema) -> None:
        """Raise the ManifestError `register` would raise for `schema`, registering nothing."""
        ...

    def writer_schema(self, ref: BookRef | RegistryRef) -> Schema:
        """The schema a dataschema names; InvalidEvent("dataschema", ...) when the store lacks it."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TypedReader:
    """Turns typed events (application/avro) back into JSON events; other events pass unchanged."""

    book: SchemaBook = field(default_factory=SchemaBook)
    """This process's schemas: reader schemas by type, and the writers it knows by fingerprint."""
    store: SchemaStore | None = None
    """Where writers the book lacks are looked up; None: the book's writers only."""
    resolve: bool = True
    """Read with the book's schema for the event's type (Avro resolution), not the writer's own."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Largest Avro body decoded (bytes)."""
    max_items: int = DEFAULT_MAX_ITEMS
    """Most array items and map entries one body may declare."""

    def read(self, event: CloudEvent) -> CloudEvent:
        """The event with JSON data; InvalidEvent naming `dataschema` or `data` if it cannot be read.

        Errors of the store itself (unreachable, retriable) propagate: the record is not at fault.
        """
        if not is_avro(event):
            return event
        if event.dataschema is None:
            raise InvalidEvent("dataschema", "an application/avro event must name its schema in dataschema")
        writer = self.writer(parse_dataschema(event.dataschema))
        reader = self.book.for_type(event.type) if self.resolve else None
        if reader is not None and reader.fingerprint == writer.fingerprint:
            reader = None
        return from_avro_event(
            event, writer, reader_schema=reader, max_bytes=self.max_bytes, max_items=self.max_items
        )

    def writer(self, ref: BookRef | RegistryRef) -> Schema:
        """The writer schema a dataschema names: from the book, else from the store."""
        if isinstance(ref, BookRef):
            known = self.book.by_id(ref.fingerprint)
            if known is not None:
                return known
        if self.store is None:
            named = ref.fingerprint if isinstance(ref, BookRef) else f"registry id {ref.schema_id}"
            raise InvalidEvent("dataschema", f"names schema {named}, which this process does not know")
        return self.store.writer_schema(ref)
