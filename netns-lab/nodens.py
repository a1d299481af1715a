"""A lab host's own mount namespace, set up from inside (stdlib only).

`python -m netns_lab.nodens SPEC` is started by `Sandbox.add_mount_ns` in the
host's network namespace. It

1. unshares a mount namespace and makes every mount in it a slave: mounts made
   on the box still show up here (new pod namespaces under /run/netns), nothing
   made here shows up outside;
2. mounts a sysfs of the host's network namespace on /sys, as `ip netns exec`
   does, so /sys/class/net lists the host's own links;
3. bind-mounts each per-host source directory over its default path
   (`/run/flannel`, `/var/lib/pyflannel`, ...). A default path that does not
   exist on the box is never created there: its nearest existing parent is
   shadowed, inside this namespace only, by a tmpfs that holds that parent's
   entries bound back in place plus the new directory;
4. prints `ready` and execs `sleep infinity`, which holds the namespace until
   the lab's cleanup kills it (processes entered into it keep it alive as well;
   they all live in the host's network namespace and are killed with it).

SPEC is JSON: {"binds": [[source, target], ...], "label": name}; a target may
lie under an earlier one (its mountpoint must then exist in the source).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str | Path, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), str(target).encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None),
           f"mount {source} on {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def shadow(parent: Path) -> None:
    """Cover `parent` with a tmpfs that holds its original entries, bound back in place."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)  # the original, reachable after the tmpfs
    st = os.fstat(fd)
    entries = os.listdir(fd)
    mount("tmpfs", parent, "tmpfs", 0,
          f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid},size=1m")
    for name in entries:
        src = f"/proc/self/fd/{fd}/{name}"
        dst = parent / name
        est = os.lstat(src)
        if stat.S_ISLNK(est.st_mode):
            os.symlink(os.readlink(src), dst)
            continue
        if stat.S_ISDIR(est.st_mode):
            dst.mkdir()
        else:
            dst.touch()
        mount(src, dst, None, MS_BIND | MS_REC)  # with what is mounted below it, as a slave


def ensure_dir(target: Path, ours: set[Path]) -> None:
    """Make `target` exist in this namespace; only ever create inside our own tmpfs."""
    missing = []
    p = target
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not missing:
        if not p.is_dir():
            raise NotADirectoryError(f"{target} exists and is not a directory")
        return
    if p not in ours:
        shadow(p)
        ours.add(p)
    for m in reversed(missing):
        m.mkdir(mode=0o755)
        ours.add(m)


def setup(binds: list[tuple[str, str]]) -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount("none", "/", None, MS_REC | MS_SLAVE)
    ro = os.statvfs("/sys").f_flag & os.ST_RDONLY
    umount("/sys", MNT_DETACH)
    mount("sysfs", "/sys", "sysfs", MS_RDONLY if ro else 0)
    ours: set[Path] = set()
    for source, target in binds:
        ensure_dir(Path(target), ours)
        mount(source, target, None, MS_BIND)


def sleep_binary() -> str:
    return shutil.which("sleep", path="/usr/bin:/bin") or "/bin/sleep"


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    try:
        setup([(s, t) for s, t in spec["binds"]])
    except OSError as exc:
        print(f"nodens: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.execv(sleep_binary(), [f"pfl-node-{spec.get('label', '')}", "infinity"])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
