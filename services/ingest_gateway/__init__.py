"""The ingest gateway: authenticated device uploads in, durably acknowledged Kafka records out."""
