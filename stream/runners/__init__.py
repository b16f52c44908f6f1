"""Adapters: runners that move records between Kafka and the `stream.pipeline`.

`aiokafka_runner` is the default; `faust_runner` is the faust-streaming alternative.
Both share `common` (retry-until-back, encoding, metrics) and the same pipeline.
"""
