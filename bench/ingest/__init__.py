"""Ingest load and soak on the project's traffic model (bench/traffic.py): the ingest gateway's
capacity against a raw Kafka producer on the same uploads, small-upload latency with and without
backlog syncs, the maximum upload, then a soak of the whole pipeline with the services' memory
sampled.

``python -m bench.ingest.run`` starts everything it needs, runs the load generator
(``bench.ingest.load``) and the raw producer (``bench.ingest.baseline``) in processes of their
own, prints the tables and writes them into the "Ingest load and soak" section of
``docs/benchmarks.md``. See README.md here.
"""
