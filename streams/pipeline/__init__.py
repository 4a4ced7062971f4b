"""The pure pipeline: event in → enrich → count → detect, with no Faust, no Kafka and no I/O.

- :mod:`~streams.pipeline.events`: the event contract (msgspec models of ``schemas/``), decoder and encoders.
- :mod:`~streams.pipeline.territory` and :mod:`~streams.pipeline.countries`: the IP属地 label rules.
- :mod:`~streams.pipeline.geoip`: GeoIP databases behind one small interface, the cached labeller.
- :mod:`~streams.pipeline.enrich`: a batch of raw records in, enriched records, dead letters and counts out.
- :mod:`~streams.pipeline.windows`: event-time windows and the bounded top-posts sketch.
- :mod:`~streams.pipeline.clock`: watermarks of the counting partitions, which windows close.
- :mod:`~streams.pipeline.detector`: the streaming burst detector, one step per territory and window.
- :mod:`~streams.pipeline.codec`: msgpack bytes for the values the counting stage keeps in tables.

Everything here is tested without a broker; :mod:`streams.runtime` wires it to Kafka and Faust.
"""
