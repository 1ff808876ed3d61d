"""Kafka record headers in the one form the worker passes around: a list of (name, value) pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Headers = list[tuple[str, bytes]]


def header_list(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None) -> Headers:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)
