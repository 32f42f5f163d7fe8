"""placeholder"""
from __future__ import annotations


class SdclusterError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(SdclusterError):
    pass


def translate(e: BaseException) -> SdclusterError:
    return SdclusterError(str(e))
