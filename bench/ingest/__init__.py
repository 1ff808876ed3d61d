"""Ingest load and soak: the ingest gateway against a raw Kafka producer, then a soak of the
whole pipeline with the services' memory sampled.

``python -m bench.ingest.run`` starts everything it needs, runs the load generator
(``bench.ingest.load``) and the raw producer (``bench.ingest.baseline``) in processes of their
own, prints the tables and writes them into the "Ingest load and soak" section of
``docs/benchmarks.md``. See README.md here.
"""
