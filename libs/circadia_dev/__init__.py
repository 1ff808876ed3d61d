"""circadia's development tools: the local stack, the demo, the development token issuer and
the ``circadia`` command. Never installed into a service's image."""
