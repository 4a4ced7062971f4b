"""End-to-end throughput of shudi against a raw aiokafka loop, a naive pipeline and a bare Faust relay.

Run from the repo root::

    python -m bench.throughput --bootstrap 127.0.0.1:19092            # 200k events, 4 partitions
    python -m bench.throughput --tiny --bootstrap ...                  # 3k events, CI: asserts accounting
    python -m bench.throughput --rate 5000 --events 100000 ...         # latency at a fixed input rate
    python -m bench.throughput --long ...                              # >= 10M events, RSS every million

Every mode runs in child processes (so their CPU and RSS can be read from /proc without the harness's own
work mixed in), reads the same input through its own consumer group and writes its own output topic.
Throughput and latency come from the *record timestamps* read back from the output topics by this harness,
never from what a worker says about itself.

The parts: :mod:`~bench.throughput.modes` (what is compared), :mod:`~bench.throughput.loops` (the raw and
naive loops), :mod:`~bench.throughput.measure` (running and measuring one mode),
:mod:`~bench.throughput.harness` (one run: database, input, every mode), :mod:`~bench.throughput.report`
(the table and the JSON) and :mod:`~bench.throughput.kafka` (the harness's own topics).
"""
