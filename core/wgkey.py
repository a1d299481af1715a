"""WireGuard keys: X25519 (RFC 7748) in pure Python, and flannel's key file.

The key file is flannel's: `/run/flannel/wgkey` (`WIREGUARD_KEY_FILE` overrides it),
the private key in base64 with no newline, mode 0400. When it is absent a key is made
and written atomically: a temporary file in the same directory, then a hard link to
the final name, so that a crash leaves either no key or a whole one, and a key that
another process wrote first is never overwritten. When it is present it is used
exactly. One that cannot be read or parsed is refused (`KeyFileError`): peers know the
public key, and replacing it silently would cut every tunnel.

X25519 here runs once per start (and once per `flannelctl doctor`), so a few
milliseconds of integer arithmetic beat a dependency.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_KEY_FILE = Path("/run/flannel/wgkey")
KEY_FILE_ENV = "WIREGUARD_KEY_FILE"
KEY_LEN = 32
_P = 2**255 - 19
_A24 = 121665


class KeyFileError(ValueError):
    """The key file exists but cannot be used; the message says what to do."""


def key_file_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, what: str = "key") -> bytes:
    """A base64 32-byte key; ValueError naming `what` otherwise."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64 ({exc})") from None
    if len(raw) != KEY_LEN:
        raise ValueError(f"{what} is {len(raw)} bytes; a WireGuard key is 32 "
                         "(make one with `wg genkey` or `wg genpsk`)")
    return raw


def clamp(scalar: bytes) -> bytes:
    b = bytearray(scalar)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748 section 5: the Montgomery ladder over curve25519."""
    k = int.from_bytes(clamp(scalar), "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in range(254, -1, -1):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % _P, (x2 - z2) % _P
        aa, bb = a * a % _P, b * b % _P
        e = (aa - bb) % _P
        c, d = (x3 + z3) % _P, (x3 - z3) % _P
        da, cb = d * a % _P, c * b % _P
        x3 = (da + cb) ** 2 % _P
        z3 = x1 * (da - cb) ** 2 % _P
        x2 = aa * bb % _P
        z2 = e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def public_key(private: bytes) -> bytes:
    return x25519(private, (9).to_bytes(32, "little"))


def generate_private_key() -> bytes:
    return clamp(os.urandom(KEY_LEN))


def parse_key_file(text: str, path: Path) -> bytes:
    """The key in a key file's text. One trailing newline (`wg genkey > file`) is
    tolerated; anything else that is not exactly a base64 key is refused."""
    body = text[:-1] if text.endswith("\n") else text
    try:
        return decode_key(body, f"the WireGuard key in {path}")
    except ValueError as exc:
        raise KeyFileError(f"{exc}; flanneld will not replace a key that peers may know: "
                           f"restore the file, or remove it to have a new key made "
                           f"(peers then learn it from our lease)") from None


def load_or_create_private_key(path: Path) -> tuple[bytes, bool]:
    """(private key, whether it was just made)."""
    try:
        return parse_key_file(path.read_text("ascii"), path), False
    except FileNotFoundError:
        pass
    except UnicodeDecodeError:
        raise KeyFileError(f"{path} is not text: it holds no base64 WireGuard key; restore "
                           "it, or remove it to have a new key made") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the WireGuard key {path}: {exc.strerror}; "
                           "fix its permissions (flanneld runs as root)") from None
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    key = generate_private_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # left by a run killed while writing it, with our pid (PID 1 again in a container):
    # O_EXCL would fail on it at every start
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, encode_key(key).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another flanneld made one first: theirs it is
        return parse_key_file(path.read_text("ascii"), path), False
    finally:
        tmp.unlink(missing_ok=True)
    return key, True
