"""SynthGuard streaming service: Kafka events in, verdicts, DLQ records and metrics out.

Only `stream` may import Kafka clients; it depends on `serving`, never the reverse.
"""
