"""The one error type of the ingest gateway: a refusal with a status, a reason and details."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.responses import JSONResponse


class Rejection(Exception):
    """An upload the gateway refuses. ``reason`` is a stable machine-readable word; ``errors``
    lists field-level problems as ``{"loc": [...], "msg": "..."}``."""

    def __init__(self, status: int, reason: str, *, errors: Sequence[Mapping[str, object]] | None = None,
                 headers: Mapping[str, str] | None = None, samples: int = 0) -> None:
        super().__init__(f"{status} {reason}")
        self.samples = samples  # samples the refused upload held, when the body was read that far
        self.status = status
        self.reason = reason
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[object, ...]:
        # a Rejection crosses from the parser processes (ingest_gateway.prepare) by pickle
        return (_rejection, (self.status, self.reason, self.errors, self.headers, self.samples))

    def response(self) -> JSONResponse:
        body: dict[str, object] = {"error": self.reason}
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _rejection(status: int, reason: str, errors: list[Mapping[str, object]] | None,
               headers: dict[str, str], samples: int) -> Rejection:
    return Rejection(status, reason, errors=errors, headers=headers, samples=samples)
