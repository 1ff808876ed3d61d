"""The local development stack: a real Kafka broker and the three services as processes.

Used by ``circadia up|down|status`` and by the test suite's broker fixture. Everything it
writes lives under the gitignored ``.local/`` (state) and ``.cache/`` (downloads).
"""
