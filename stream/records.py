"""Domain: transport-neutral records the pipeline consumes and produces.

`Incoming` is a consumed record (payload bytes and where they were read); an
`Outcome` is a `Verdict` or a `Failure`, the content of a DLQ record.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.events import DeadLetterHeaders, SourceRef, Verdict, utc_now


@dataclass(frozen=True)
class Incoming:
    """One consumed record, transport-neutral."""

    payload: bytes
    source: SourceRef
    key: bytes | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Failure:
    """Why an event was not verdicted: becomes its DLQ record."""

    incoming: Incoming
    error_class: str
    stage: str
    message: str
    attempts: int = 1

    def headers(self) -> DeadLetterHeaders:
        """The DLQ headers of this failure."""
        return DeadLetterHeaders(
            error_class=self.error_class,
            error_message=self.message[:1024],
            stage=self.stage,  # validated by pydantic
            attempts=self.attempts,
            source_topic=self.incoming.source.topic,
            source_partition=self.incoming.source.partition,
            source_offset=self.incoming.source.offset,
            failed_at=utc_now(),
        )


Outcome = Verdict | Failure
