"""Fan-out benchmark: the circadia fan-out gateway against Centrifugo v6 on loopback.

``python -m bench.fanout.run`` builds and starts everything it needs, runs a client fleet
(``bench.fanout.client``, its own process) against each server, prints the tables and
writes them into the "Fan-out" section of ``docs/benchmarks.md``. See README.md here.
"""
