"""flanneld's flag table: each flag's converter, default, origin and help text.

One table serves everything: `flanneld.options` parses argv, env and YAML with it,
`format_help` renders `flanneld --help` from it, and `render_markdown` the flag
reference of docs/flanneld.md (kept current by `update_docs` and a unit test).
Converters turn a raw string into a value or raise ValueError(<the rule>).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "FLANNELD_"
LOG_LEVELS = ("debug", "info", "warning", "error")


# -- converters: str -> value, raising ValueError(<the rule>) ------------------------------

def _text(raw: str) -> str:
    return raw


def _bool(raw: str) -> bool:
    # Go's strconv.ParseBool, which flannel's bool flags use.
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError("must be true or false")


def _ranged(parse: Callable[[str], Any], lo: float, hi: float, what: str,
            unit: str = "") -> Callable[[str], Any]:
    def conv(raw: str) -> Any:
        try:
            value = parse(raw)
        except ValueError:
            raise ValueError(f"must be {what} in {lo}..{hi}{unit}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be in {lo}..{hi}{unit}")
        return value
    return conv


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    return _ranged(lambda raw: int(raw, 10), lo, hi, "an integer")


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    return _ranged(float, lo, hi, "a number", " seconds")


def _endpoints(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    if not urls:
        raise ValueError("needs at least one URL such as http://127.0.0.1:2379")
    for url in urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")  # bare host:port is http
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not a URL such as http://10.0.0.1:2379")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError(f"{url!r} has a bad port") from None
    return urls


def _prefix(raw: str) -> str:
    if not raw.startswith("/"):
        raise ValueError("must be an absolute key path such as /coreos.com/network")
    return raw


def _ipv4(raw: str) -> IPv4Address:
    try:
        return IPv4Address(raw)
    except ValueError:
        raise ValueError("must be an IPv4 address such as 192.168.64.3") from None


def _ipv6(raw: str) -> IPv6Address:
    try:
        return IPv6Address(raw)
    except ValueError:
        raise ValueError("must be an IPv6 address such as fd72::3") from None


def _any_ip(raw: str) -> str:
    try:
        return str(ip_address(raw))
    except ValueError:
        raise ValueError("must be an IP address such as 127.0.0.1") from None


def _iface(raw: str) -> str:
    try:
        addr = ip_address(raw)
    except ValueError:
        if not 0 < len(raw) <= 15 or re.search(r"[/:\s]", raw):
            raise ValueError("must be an interface name (1-15 chars, no '/', ':' or spaces) "
                             "or an IP address") from None
        return raw
    return str(addr)


def _regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression ({exc})") from None
    return raw


def _path(raw: str) -> Path:
    if not raw:
        raise ValueError("must be a file path")
    return Path(raw)


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None  # "" disables


def _wg_userspace(raw: str) -> str:
    if raw.lower() in ("auto", "never"):
        return raw.lower()
    if not raw.startswith("/"):
        raise ValueError("must be auto, never, or the absolute path of a wireguard-go binary")
    return raw


def _log_level(raw: str) -> str:
    level = raw.lower()
    level = "warning" if level == "warn" else level
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


# -- the table ------------------------------------------------------------------------------

# Where a flag comes from and what we do with it.
FLANNEL = "flannel"          # flannel's flag, implemented
OURS = "pyflannel"           # ours, not in flannel
IGNORED = "ignored"          # flannel's, accepted with a warning
UNSUPPORTED = "unsupported"  # flannel's, an error when set (true for bools)


@dataclass(frozen=True)
class Flag:
    name: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    origin: str = FLANNEL
    section: str = "misc"
    repeatable: bool = False
    is_bool: bool = False
    metavar: str = "VALUE"
    default_text: str | None = None  # shown in help/docs instead of repr(default)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is True:
            return "true"
        if self.default in (None, (), False):
            return ""
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default))
        return str(self.default)


def _b(name: str, help: str, **kw: Any) -> Flag:
    return Flag(name, _bool, kw.pop("default", False), help, is_bool=True, metavar="",
                **kw)


FLAGS: tuple[Flag, ...] = (
    # etcd
    Flag("etcd-endpoints", _endpoints, ("http://127.0.0.1:4001", "http://127.0.0.1:2379"),
         "comma-separated etcd URLs", section="etcd", metavar="URLS"),
    Flag("etcd-prefix", _prefix, "/coreos.com/network", "etcd key prefix of the network",
         section="etcd", metavar="PATH"),
    Flag("etcd-cafile", _path, None, "CA bundle to verify etcd's certificate", section="etcd",
         metavar="FILE"),
    Flag("etcd-certfile", _path, None, "client certificate for etcd (with --etcd-keyfile)",
         section="etcd", metavar="FILE"),
    Flag("etcd-keyfile", _path, None, "client key for etcd (with --etcd-certfile)",
         section="etcd", metavar="FILE"),
    Flag("etcd-username", _text, None, "etcd user name", section="etcd", metavar="NAME"),
    Flag("etcd-password", _text, None, "etcd password", section="etcd", metavar="SECRET"),
    # interface choice
    Flag("iface", _iface, (), "interface (name, IPv4 or IPv6 address) for inter-host traffic; "
         "repeatable, the first that fits wins", section="interface", repeatable=True,
         metavar="IFACE"),
    Flag("iface-regex", _regex, (), "regex matched against interface IPs, then names; "
         "repeatable, used when no --iface fits", section="interface", repeatable=True,
         metavar="REGEX"),
    Flag("iface-can-reach", _ipv4, None, "use the interface the kernel would route this "
         "address through (like `ip route get`)", section="interface", metavar="IP"),
    Flag("public-ip", _ipv4, None, "IP other hosts reach this one at (default: the "
         "interface's address); may be a NAT address", section="interface", metavar="IP"),
    Flag("public-ipv6", _ipv6, None, "IPv6 address other hosts reach this one at when "
         "EnableIPv6 (default: the interface's global IPv6 address, permanent first, never "
         "deprecated or temporary)", section="interface", metavar="IP"),
    # traffic rules
    _b("ip-masq", "masquerade traffic leaving the overlay (nftables table `ip pyflannel`)",
       section="traffic"),
    _b("iptables-forward-rules", "accept forwarded overlay traffic (nftables chain "
       "`forward` of table `ip pyflannel`)", default=True, section="traffic"),
    _b("ip-masq-fully-random-disable", "masquerade without `fully-random`", section="traffic"),
    # files and lease
    Flag("subnet-file", _path, Path("/run/flannel/subnet.env"),
         "where to write the subnet.env the CNI plugin reads", section="lease", metavar="FILE"),
    Flag("subnet-lease-renew-margin", _int_range(1, 1439), 60,
         "minutes: never let the lease get closer than this to its expiry before renewing",
         section="lease", metavar="MINUTES"),
    Flag("subnet-lease-ttl", _int_range(5, 365 * 86400), 86400,
         "seconds: TTL of the etcd lease that holds our subnet (flannel: fixed 24 h)",
         origin=OURS, section="lease", metavar="SECONDS"),
    Flag("resync-interval", _seconds(0.1, 3600), 10.0,
         "seconds between full reconciles of the kernel state (repairs drift)",
         origin=OURS, section="lease", metavar="SECONDS", default_text="10"),
    Flag("state-dir", _path, Path("/var/lib/pyflannel"), "directory for pyflannel's own state",
         origin=OURS, section="lease", metavar="DIR"),
    Flag("cni-socket", _optional_path, None, "unix socket of the CNI fast path; \"\" "
         "disables it", origin=OURS, section="lease", metavar="PATH",
         default_text="<dir of --subnet-file>/cni.sock"),
    Flag("wireguard-userspace", _wg_userspace, "auto", "WireGuard backend: auto (kernel "
         "WireGuard where the kernel has it, else wireguard-go), never (kernel only), or the "
         "path of a wireguard-go binary (always userspace)", origin=OURS, section="lease",
         metavar="auto|never|PATH"),
    # health
    Flag("healthz-ip", _any_ip, "127.0.0.1", "address of /healthz, /readyz and /metrics "
         "(flannel: 0.0.0.0)", section="health", metavar="IP"),
    Flag("healthz-port", _int_range(0, 65535), 0, "port of /healthz, /readyz and /metrics; "
         "0 disables", section="health", metavar="PORT"),
    # misc
    Flag("config", _path, None, "YAML file holding any of these flags (keys: flag names)",
         origin=OURS, metavar="FILE"),
    Flag("log-level", _log_level, "info", "one of " + ", ".join(LOG_LEVELS), origin=OURS,
         metavar="LEVEL"),
    _b("version", "print the version and exit"),
    _b("help", "show this help and exit", origin=OURS),
    # flannel's, accepted and ignored
    Flag("iptables-resync", _text, None, "ignored: rules are checked every --resync-interval",
         origin=IGNORED),
    _b("ip-blackhole-route", "ignored", origin=IGNORED),
    Flag("kube-api-url", _text, None, "ignored (Kubernetes mode only)", origin=IGNORED),
    Flag("kubeconfig-file", _text, None, "ignored (Kubernetes mode only)", origin=IGNORED),
    Flag("kube-annotation-prefix", _text, None, "ignored (Kubernetes mode only)",
         origin=IGNORED),
    Flag("net-config-path", _text, None, "ignored (Kubernetes mode only)", origin=IGNORED),
    Flag("set-node-network-unavailable", _text, None, "ignored (Kubernetes mode only)",
         origin=IGNORED),
    Flag("v", _text, None, "ignored (klog verbosity): use --log-level", origin=IGNORED),
    Flag("vmodule", _text, None, "ignored (klog): use --log-level", origin=IGNORED),
    Flag("log_backtrace_at", _text, None, "ignored (klog)", origin=IGNORED),
    _b("kube-subnet-mgr", "not supported: pyflannel keeps its leases in etcd",
       origin=UNSUPPORTED),
)
BY_NAME = {f.name: f for f in FLAGS}


# -- help and docs --------------------------------------------------------------------------

SECTIONS = (("etcd", "etcd"), ("interface", "Interface and public IP"),
            ("traffic", "Traffic rules (nftables)"), ("lease", "Lease, files and reconcile"),
            ("health", "Health and metrics"), ("misc", "Other"))


def _visible(flags: Iterable[Flag], section: str) -> list[Flag]:
    return [f for f in flags if f.section == section and f.origin in (FLANNEL, OURS)]


def format_help(prog: str = "flanneld") -> str:
    lines = [f"usage: {prog} [flags]", "",
             "pyflannel's per-host daemon: takes a subnet lease in etcd and programs the "
             "kernel for every peer.",
             "Each flag is also FLANNELD_<UPPER_SNAKE> in the environment and a key of the "
             "--config YAML file;", "precedence: command line > environment > YAML > default."]
    for section, title in SECTIONS:
        lines += ["", f"{title}:"]
        for f in _visible(FLAGS, section):
            head = f"  --{f.name}" + (f" {f.metavar}" if f.metavar else "")
            default = f" (default {f.shown_default()})" if f.shown_default() else ""
            tag = " [pyflannel]" if f.origin == OURS else ""
            text = textwrap.wrap(f"{f.help}{default}{tag}", 100 - 41)
            if len(head) > 40:
                lines.append(head)
                head = ""
            lines.append(f"{head:<40} {text[0]}")
            lines += [" " * 41 + t for t in text[1:]]
    ignored = ", ".join("--" + f.name for f in FLAGS if f.origin == IGNORED)
    lines += ["", *textwrap.wrap(f"Accepted and ignored (flannel's, with a warning): "
                                 f"{ignored}.", 100)]
    lines += ["Not supported (an error): --kube-subnet-mgr."]
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The flag reference of docs/flanneld.md, generated from FLAGS."""
    out = ["| flag | environment | default | origin | meaning |", "|---|---|---|---|---|"]
    for section, _title in SECTIONS:
        for f in [g for g in FLAGS if g.section == section]:
            arg = f" {f.metavar}" if f.metavar else ""
            default = f"`{f.shown_default()}`" if f.shown_default() else ""
            rep = " (repeatable)" if f.repeatable else ""
            env = "" if f.name == "help" else f"`{f.env}`"
            out.append(f"| `--{f.name}{arg}` | {env} | {default} | {f.origin} | "
                       f"{f.help.replace('|', '/')}{rep} |")
    return "\n".join(out) + "\n"


# The marker names flanneld.options, which re-exports update_docs: docs/flanneld.md holds it.
BEGIN, END = "<!-- flags:begin (generated by flanneld.options) -->", "<!-- flags:end -->"


def update_docs(path: Path) -> None:
    """Rewrite the generated flag table between the markers of docs/flanneld.md."""
    rewrite_generated(path, BEGIN, END, render_markdown())


def rewrite_generated(path: Path, begin: str, end: str, body: str) -> None:
    """Replace what lies between the `begin` and `end` markers of a doc with `body`."""
    head, _, rest = path.read_text().partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{body}{end}{tail}")
