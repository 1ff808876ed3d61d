"""The fan-out gateway: each result pushed to the live WebSockets of its own user only."""
