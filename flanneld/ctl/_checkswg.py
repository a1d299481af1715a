"""`flannelctl doctor`'s WireGuard checks, pure over what `_nodewg` read (wireguard backend only).

wg-key: the private key file (mode 0400, parses, and its public key is the one our
lease publishes and the devices use); wg-device: each device exists, is up, answers
on its socket, listens on the configured port, with MTU = interface MTU - 80;
wg-handshake: peers without a recent handshake. Every peer's programming goes
through the usual peers / skipped / strays findings (`peer_findings`).
"""

from __future__ import annotations

from flanneld.ctl._nodewg import KERNEL_UNREADABLE, WgView
from flanneld.ctl.findings import FAIL, OK, SKIP, WARN, Finding, peer_findings
from flanneld.ctl.wgpeers import human_age

KEY_MODE = 0o400
REPAIRS = "or wait one --resync-interval: flanneld repairs the device's key, port and MTU"


def check_key(wg: WgView) -> Finding:
    path = wg.key_file
    if wg.key_error:
        return Finding("wg-key", FAIL, f"{path}: {wg.key_error}",
                       fix="start flanneld (it creates the key when the file is absent); a "
                       "malformed key it refuses to replace: restore it, or remove the file "
                       "and restart flanneld (peers then learn the new key from our lease)")
    problems, lines = [], []
    if wg.key_mode is not None and wg.key_mode & 0o077:
        problems.append(f"mode {wg.key_mode:04o}: readable by others than root")
    elif wg.key_mode is not None and wg.key_mode != KEY_MODE:
        problems.append(f"mode {wg.key_mode:04o}, want {KEY_MODE:04o}")
    if wg.lease_public and wg.key_public != wg.lease_public:
        problems.append(f"its public key {wg.key_public} is not our lease's "
                        f"{wg.lease_public}")
    for dev, pub in sorted(wg.device_publics.items()):
        if pub != wg.key_public:
            problems.append(f"{dev} uses another private key (public {pub})")
    lines = [f"public key {wg.key_public}"]
    if not problems:
        return Finding("wg-key", OK, f"{path} mode {wg.key_mode or 0:04o}, public key "
                       f"{wg.key_public}")
    mode_only = all(p.startswith("mode ") for p in problems)
    return Finding("wg-key", FAIL if any("readable by others" in p for p in problems) or
                   not mode_only else WARN, f"{path}: {'; '.join(problems)}", tuple(lines),
                   fix=f"chmod 0400 {path}" if mode_only else
                   f"restart flanneld: it sets the devices' key from {path} and publishes "
                   "its public key in our lease")


def check_devices(wg: WgView) -> Finding:
    if not wg.devices:
        return Finding("wg-device", FAIL, "the config names no WireGuard device")
    problems, good, warn = [], [], []
    for d in wg.devices:
        if d.link is None:
            problems.append(f"{d.name} does not exist")
            continue
        if d.error == KERNEL_UNREADABLE:
            warn.append(f"{d.name}: {d.error}")
            continue
        mine = []
        if not d.link.up:
            mine.append(f"{d.name} is DOWN")
        if d.link.mtu != d.mtu:
            mine.append(f"{d.name} MTU {d.link.mtu}, want {d.mtu} (interface MTU - 80)")
        if d.error:
            mine.append(f"{d.name}: no answer on its socket ({d.error})")
        elif d.state is not None and d.state.listen_port != d.listen_port:
            mine.append(f"{d.name} listens on {d.state.listen_port}, want {d.listen_port}")
        problems += mine
        if not mine:
            good.append(f"{d.name} {d.kind}, up, port {d.listen_port}, MTU {d.mtu}")
    if problems:
        return Finding("wg-device", FAIL, "; ".join(problems), tuple(warn + good),
                       fix="ip link set <device> up / mtu <want>, " + REPAIRS
                       + "; a device that is gone (wireguard-go exited) is re-created")
    if warn:
        return Finding("wg-device", WARN, "; ".join(warn), tuple(good),
                       fix="read it with `wg show` (wireguard-tools)")
    return Finding("wg-device", OK, "; ".join(good))


def check_handshakes(wg: WgView) -> Finding:
    verdicts = wg.verdicts()
    if not any(d.state is not None for d in wg.devices):
        return Finding("wg-handshake", SKIP, "no device state to read")
    quiet = {k: v for k, v in verdicts.items() if v.quiet}
    live = sum(1 for v in verdicts.values() if v.handshake_age is not None and not v.quiet)
    if not quiet:
        return Finding("wg-handshake", OK, f"{live} of {len(verdicts)} peers handshaken in the "
                       "last 180 s; the others are new")
    lines = tuple(f"{k}: last handshake {human_age(v.handshake_age)}, endpoint "
                  f"{v.endpoint or 'none'}, rx {v.rx_bytes} tx {v.tx_bytes}"
                  for k, v in sorted(quiet.items()))
    return Finding("wg-handshake", WARN, f"{len(quiet)} of {len(verdicts)} peers without a "
                   "handshake in 180 s", lines)


def check_peers(wg: WgView) -> list[Finding]:
    names = ("peers", "skipped", "strays")
    if not any(d.state is not None for d in wg.devices):
        return [Finding(n, SKIP, "no WireGuard device state to read (see wg-device)")
                for n in names]
    if not wg.lease_public:
        return [Finding(n, SKIP, "no lease of ours with a PublicKey (see lease)") for n in names]
    return peer_findings(wg.checks(), wg.strays(), names)


def findings(wg: WgView) -> list[Finding]:
    return [check_key(wg), check_devices(wg), *check_peers(wg), check_handshakes(wg)]
