"""The running worker: Faust, Kafka and Prometheus around the pure :mod:`streams.pipeline`.

- :mod:`~streams.runtime.app`: the composition root, settings in, a configured Faust app out.
- :mod:`~streams.runtime.enrichment`: the batched aiokafka enrichment loop inside the Faust worker.
- :mod:`~streams.runtime.counting`: the Faust agent on the counts topic, its tables, the detector steps.
- :mod:`~streams.runtime.kafka`: the one connection object every Kafka client is built from.
- :mod:`~streams.runtime.admin` and :mod:`~streams.runtime.topics`: readiness probes and topic creation.
- :mod:`~streams.runtime.batch_send`: whole record batches per partition.
- :mod:`~streams.runtime.metrics` and :mod:`~streams.runtime.health`: ``/metrics``, ``/healthz``, ``/readyz``.
"""
