"""The one error type of the simulated API."""

from __future__ import annotations


class ApiError(Exception):
    """An error the TrueNAS API would answer with an HTTP status (404, 422, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"TrueNAS API error {self.status}: {self.message}"


def not_found(kind: str, key: object) -> ApiError:
    return ApiError(404, f"[ENOENT] {kind} {key!r} does not exist")


def invalid(where: str, message: str) -> ApiError:
    return ApiError(422, f"[EINVAL] {where}: {message}")
