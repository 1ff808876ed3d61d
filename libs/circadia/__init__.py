"""Shared mechanisms of circadia: one concern per module, usable from any service."""

__version__ = "0.1.0"
