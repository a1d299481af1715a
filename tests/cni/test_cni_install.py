"""flannelctl install-cni: the executable (absolute interpreter, -I -S) and the conflist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flanneld.ctl.install_cni import CONFLIST

FLANNELCTL = Path(sys.executable).with_name("flannelctl")


def test_install_writes_executable_and_conflist(tmp_path: Path) -> None:
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    proc = subprocess.run([str(FLANNELCTL), "install-cni", "--bin-dir", str(bin_dir),
                           "--conf-dir", str(conf_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    exe = bin_dir / "flannel"
    assert exe.stat().st_mode & 0o777 == 0o755
    shebang = exe.read_text().splitlines()[0]
    interpreter, flags = shebang[2:].split(" ")
    assert os.path.isabs(interpreter) and "shims" not in interpreter and flags == "-IS"
    assert json.loads((conf_dir / "10-flannel.conflist").read_text()) == CONFLIST
    assert CONFLIST["plugins"][0] == {"type": "flannel", "delegate": {
        "hairpinMode": True, "isDefaultGateway": True}}
    # a runtime's VERSION probe, with an empty environment and PATH
    probe = subprocess.run([str(exe)], env={"CNI_COMMAND": "VERSION"}, input=b"",
                           capture_output=True, timeout=60)
    assert probe.returncode == 0
    assert "1.1.0" in json.loads(probe.stdout)["supportedVersions"]


def test_reinstall_replaces_atomically(tmp_path: Path) -> None:
    from flanneld.ctl.install_cni import install
    first = install(tmp_path)
    inode = first.stat().st_ino
    again = install(tmp_path)
    assert again == first and again.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["flannel"]
