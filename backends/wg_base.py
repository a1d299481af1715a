"""What a WireGuard device is to the backend, whichever kind runs it (wg_device: wireguard-go
over its UAPI socket; wg_kernel: kernel WireGuard over generic netlink): UAPI text in and out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class WgDeviceError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


@dataclass
class DeviceInfo:
    name: str
    kind: str  # "userspace" (wireguard-go) or "kernel"
    pid: int = 0  # wireguard-go's
    adopted: bool = False


class WgDevice(Protocol):
    info: DeviceInfo

    def get(self) -> str: ...
    def set(self, request: str) -> None: ...
    def close(self) -> None: ...
