"""Certificates and passwords for a lab's etcd (`etcd: {tls: true, auth: true}`).

`make_pki` makes a throwaway CA and, signed by it, a server certificate for
the etcd members' addresses and client certificates for flanneld and for the
lab's own etcdctl, with the `openssl` command (EC P-256 keys: quick). Keys are
written mode 0600. `passwords` makes (once) and reads the etcd users'
passwords: `root` (the lab's etcdctl) and `flanneld`, which may only read and
write under the network's etcd prefix.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENTS = ("flanneld", "root")


class PkiError(RuntimeError):
    """openssl is missing or failed; the message says which step."""


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def exists(self) -> bool:
        return self.ca.exists() and all(self.cert(n).exists() for n in ("server", *CLIENTS))


def _openssl(*args: str | Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise PkiError("etcd tls needs the openssl command: apt-get install openssl")
    proc = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_pki(directory: Path, server_ips: list[str], *, days: int = 7,
             ca_name: str = "pyflannel-lab-ca") -> Pki:
    """A CA, a server certificate valid for `server_ips` (and 127.0.0.1), client certificates
    for flanneld and root; all in `directory` (mode 0700)."""
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    old = os.umask(0o077)  # keys are born 0600
    try:
        _openssl("req", "-x509", *_EC, "-keyout", pki.key("ca"), "-out", pki.ca,
                 "-days", str(days), "-subj", f"/CN={ca_name}")
        sans = ",".join(f"IP:{ip}" for ip in dict.fromkeys([*server_ips, "127.0.0.1"]))
        exts = {"server": f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth",
                **{c: "extendedKeyUsage=clientAuth" for c in CLIENTS}}
        for name, ext in exts.items():
            (directory / f"{name}.ext").write_text(ext + "\n")
            _openssl("req", *_EC, "-keyout", pki.key(name), "-out", directory / f"{name}.csr",
                     "-subj", f"/CN={name}")
            _openssl("x509", "-req", "-in", directory / f"{name}.csr", "-CA", pki.ca,
                     "-CAkey", pki.key("ca"), "-CAcreateserial", "-days", str(days),
                     "-out", pki.cert(name), "-extfile", directory / f"{name}.ext")
    finally:
        os.umask(old)
    for f in directory.iterdir():
        if f.suffix in (".csr", ".ext", ".srl"):
            f.unlink()  # only the CA, certificates and keys stay
        else:
            os.chmod(f, 0o600 if f.suffix == ".key" else 0o644)
    return pki


def passwords(directory: Path) -> dict[str, str]:
    """The etcd users' passwords, made on first use (file mode 0600)."""
    path = directory / "passwords.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    made = {user: secrets.token_urlsafe(12) for user in CLIENTS}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(made, f)
    return made
