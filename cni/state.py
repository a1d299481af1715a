"""What an ADD took, written down before it takes it, so DEL and GC can always undo it.

    <dataDir>/<containerID>                          flannel's scratch file: the delegate
                                                     config, exactly as flannel saves it
    <dataDir>/.pyflannel/<network>/<cid>@<ifname>    our attachment record (JSON)

The record is written (under the IPAM lock) after the addresses are chosen and
before they are reserved, and names everything the ADD will create: the host
veth, the nft chain, the reservation directory. Whatever point an ADD dies at,
DEL or GC finds the record and removes exactly what exists. `.pyflannel`
cannot collide with a container ID (IDs start with a letter or digit).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

RECORD_DIR = ".pyflannel"


@dataclass
class Record:
    network: str
    container_id: str
    ifname: str
    netns: str
    ipam_dir: str
    ips: list[str] = field(default_factory=list)        # "10.5.52.2/24"
    host_veth: str = ""
    bridge: str = ""
    chain: str = ""                                     # nft chain, "" without ipMasq
    subnets: list[str] = field(default_factory=list)    # pod subnet per ip (for masq)

    def addresses(self) -> list[str]:
        return [ip.split("/")[0] for ip in self.ips]


def _record_dir(data_dir: str, network: str) -> str:
    return os.path.join(data_dir, RECORD_DIR, network)


def record_path(data_dir: str, network: str, container_id: str, ifname: str) -> str:
    return os.path.join(_record_dir(data_dir, network), f"{container_id}@{ifname}")


def _write_new(path: str, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def create_record(data_dir: str, rec: Record) -> bool:
    """Write a new record; False if one exists (a second ADD of the same attachment)."""
    path = record_path(data_dir, rec.network, rec.container_id, rec.ifname)
    data = json.dumps(vars(rec), separators=(",", ":")).encode()
    try:
        _write_new(path, data)
    except FileNotFoundError:
        if not os.path.isdir(data_dir):
            os.makedirs(data_dir, 0o700, exist_ok=True)  # flannel's dataDir is 0700
        os.makedirs(os.path.join(data_dir, RECORD_DIR), 0o700, exist_ok=True)
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        try:
            _write_new(path, data)
        except FileExistsError:
            return False
    except FileExistsError:
        return False
    return True


def rewrite_record(data_dir: str, rec: Record) -> None:
    path = record_path(data_dir, rec.network, rec.container_id, rec.ifname)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(vars(rec), separators=(",", ":")).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _parse(raw: bytes) -> Record | None:
    try:
        data: dict[str, Any] = json.loads(raw)
        return Record(**data)
    except (ValueError, TypeError):
        return None


def load_record(data_dir: str, network: str, container_id: str, ifname: str) -> Record | None:
    try:
        with open(record_path(data_dir, network, container_id, ifname), "rb") as f:
            return _parse(f.read())
    except OSError:
        return None


def drop_record(data_dir: str, network: str, container_id: str, ifname: str) -> None:
    try:
        os.unlink(record_path(data_dir, network, container_id, ifname))
    except FileNotFoundError:
        pass


def all_records(data_dir: str, network: str) -> list[Record]:
    found = []
    directory = _record_dir(data_dir, network)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if "@" not in name or name.endswith(".tmp"):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                rec = _parse(f.read())
        except OSError:
            continue
        if rec is not None:
            found.append(rec)
    return found


# flannel's scratch file --------------------------------------------------------

def save_scratch(data_dir: str, container_id: str, data: bytes) -> None:
    """flannel's saveScratchNetConf: dir 0700, file 0600 (overwritten by a re-ADD)."""
    path = os.path.join(data_dir, container_id)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        os.makedirs(data_dir, 0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def load_scratch(data_dir: str, container_id: str) -> bytes | None:
    try:
        with open(os.path.join(data_dir, container_id), "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def drop_scratch(data_dir: str, container_id: str) -> None:
    try:
        os.unlink(os.path.join(data_dir, container_id))
    except (FileNotFoundError, IsADirectoryError):
        pass


def scratch_ids(data_dir: str) -> list[str]:
    try:
        return [n for n in os.listdir(data_dir) if not n.startswith(".")
                and os.path.isfile(os.path.join(data_dir, n))]
    except FileNotFoundError:
        return []
