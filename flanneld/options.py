"""flanneld's options: the flag table (flanneld.flags) parsed from argv, env and YAML, purely.

Every flag is also settable as a `FLANNELD_<UPPER_SNAKE>` environment variable
(as flannel's `flagutil.SetFlagsFromEnv`; empty values are ignored, like there)
and as a key of the `--config` YAML file (the flag name without dashes; `_` and
`-` are the same). Precedence: command line > environment > YAML > default.

Flags are spelled as Go's flag package accepts them (`-iface eth0`, `--iface=eth0`,
bool flags as `--ip-masq` or `--ip-masq=false`), so flannel's unit files and
manifests work unchanged. Errors name the flag, the value and the rule.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import yaml

from flanneld.flags import (
    BY_NAME,
    FLAGS,
    IGNORED,
    UNSUPPORTED,
    Flag,
    format_help,
    render_markdown,
    update_docs,
)

# The table and its renderings live in flanneld.flags; these stay importable from here.
__all__ = ["FLAGS", "Flag", "Options", "OptionsError", "config_path", "format_help",
           "load_options", "parse_options", "render_markdown", "split_argv", "update_docs"]


class OptionsError(ValueError):
    """A bad flag, env var or config key; the message names it, its value and the rule."""


_NOT_IN_YAML = ("config", "help", "version")  # flags the YAML file cannot set


@dataclass(frozen=True)
class Options:
    etcd_endpoints: tuple[str, ...]
    etcd_prefix: str
    etcd_cafile: Path | None
    etcd_certfile: Path | None
    etcd_keyfile: Path | None
    etcd_username: str | None
    etcd_password: str | None
    iface: tuple[str, ...]
    iface_regex: tuple[str, ...]
    iface_can_reach: IPv4Address | None
    public_ip: IPv4Address | None
    public_ipv6: IPv6Address | None
    ip_masq: bool
    iptables_forward_rules: bool
    ip_masq_fully_random_disable: bool
    subnet_file: Path
    subnet_lease_renew_margin: int
    subnet_lease_ttl: int
    resync_interval: float
    state_dir: Path
    cni_socket: Path | None
    wireguard_userspace: str
    healthz_ip: str
    healthz_port: int
    config: Path | None
    log_level: str
    version: bool
    help: bool
    warnings: tuple[str, ...] = field(default=(), compare=False)


# -- parsing --------------------------------------------------------------------------------

def _lookup(name: str, where: str, shown: str) -> Flag:
    flag = BY_NAME.get(name) or BY_NAME.get(name.replace("-", "_"))
    if flag is None:
        close = difflib.get_close_matches(name, BY_NAME, n=3)
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        raise OptionsError(f"{where}: unknown flag {shown}{hint}; see flanneld --help")
    return flag


def split_argv(argv: Sequence[str]) -> list[tuple[Flag, str]]:
    """Go-flag style tokens to (flag, raw value) pairs, in order."""
    pairs: list[tuple[Flag, str]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok in ("-h", "--help", "-help"):
            pairs.append((BY_NAME["help"], "true"))
            continue
        if not tok.startswith("-") or tok in ("-", "--"):
            raise OptionsError(f"command line: unexpected argument {tok!r}: flanneld takes "
                               "only flags; see flanneld --help")
        body = tok[2:] if tok.startswith("--") else tok[1:]
        name, eq, value = body.partition("=")
        flag = _lookup(name, "command line", "-" * (len(tok) - len(body)) + name)
        if not eq:
            if flag.is_bool:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise OptionsError(f"command line: --{name} needs a value ({flag.metavar})")
        pairs.append((flag, value))
    return pairs


def config_path(argv: Sequence[str], env: Mapping[str, str]) -> Path | None:
    """The --config file named on the command line or in FLANNELD_CONFIG, if any."""
    path: Path | None = None
    for flag, raw in split_argv(argv):
        if flag.name == "config":
            path = _convert(flag, raw, f"--config={raw!r}")
    if path is None and env.get(BY_NAME["config"].env):
        path = Path(env[BY_NAME["config"].env])
    return path


def _convert(flag: Flag, raw: str, shown: str) -> Any:
    try:
        return flag.convert(raw)
    except ValueError as exc:
        raise OptionsError(f"{shown}: {exc}") from None


def _yaml_pairs(yaml_text: str, source: str) -> list[tuple[Flag, str, str]]:
    try:
        doc = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise OptionsError(f"{source}: not valid YAML: {exc}") from None
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise OptionsError(f"{source}: must be a mapping of flag names to values, "
                           f"got {type(doc).__name__}")
    out: list[tuple[Flag, str, str]] = []
    for key, value in doc.items():
        name = str(key).lstrip("-").replace("_", "-").lower()
        flag = _lookup(name, source, repr(key))
        if flag.name in _NOT_IN_YAML:
            raise OptionsError(f"{source}: {key!r} cannot be set in the config file")
        if value is None:
            continue  # `key:` with no value leaves the default
        items = value if isinstance(value, list) else [value]
        if not flag.repeatable and len(items) != 1 and flag.name != "etcd-endpoints":
            raise OptionsError(f"{source}: {key}={value!r}: takes one value, not a list")
        if flag.name == "etcd-endpoints" and isinstance(value, list):
            items = [",".join(map(_yaml_scalar, value))]
        out.extend((flag, _yaml_scalar(v), f"{source}: {key}={v!r}") for v in items)
    return out


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise OptionsError(f"config value {value!r}: must be a scalar")
    return str(value)


def _env_pairs(env: Mapping[str, str]) -> list[tuple[Flag, str, str]]:
    out: list[tuple[Flag, str, str]] = []
    for flag in FLAGS:
        raw = env.get(flag.env, "")
        if not raw or flag.name in ("help", "config"):
            continue
        # Interface names and IPs hold no commas, so a list fits in one variable.
        values = raw.split(",") if flag.name == "iface" else [raw]
        out.extend((flag, v.strip(), f"{flag.env}={raw!r}") for v in values)
    return out


def parse_options(argv: Sequence[str], env: Mapping[str, str] | None = None,
                  yaml_text: str | None = None, *, yaml_source: str = "config file") -> Options:
    """Options from the command line, the environment and the YAML config text (pure)."""
    env = env or {}
    layers: list[list[tuple[Flag, str, str]]] = [
        _yaml_pairs(yaml_text, yaml_source) if yaml_text is not None else [],
        _env_pairs(env),
        [(f, v, f"--{f.name}={v!r}") for f, v in split_argv(argv)],
    ]
    values: dict[str, Any] = {}
    given: dict[str, str] = {}  # flag name -> how it was given (for messages)
    for layer in layers:  # later layers win; a repeatable list is replaced, not merged
        seen: dict[str, list[Any]] = {}
        for flag, raw, shown in layer:
            value = _convert(flag, raw, shown)
            if flag.repeatable:
                seen.setdefault(flag.name, []).append(value)
                values[flag.name] = tuple(seen[flag.name])
            else:
                values[flag.name] = value
            given[flag.name] = shown
    return _finish(values, given)


def _finish(values: dict[str, Any], given: dict[str, str]) -> Options:
    warnings: list[str] = []
    for name in list(values):
        flag = BY_NAME[name]
        if flag.origin == UNSUPPORTED:
            if values[name]:
                raise OptionsError(f"{given[name]}: not supported: use etcd (pyflannel has "
                                   "no Kubernetes subnet manager; run with --etcd-endpoints)")
            del values[name]
        elif flag.origin == IGNORED:
            warnings.append(f"{given[name]}: {flag.help}")
            del values[name]
    has_cert, has_key = "etcd-certfile" in values, "etcd-keyfile" in values
    if has_cert != has_key:
        name = "etcd-certfile" if has_cert else "etcd-keyfile"
        raise OptionsError(f"{given[name]}: --etcd-certfile and --etcd-keyfile must be "
                           "given together (TLS client auth needs both)")
    kwargs = {f.attr: values.get(f.name, f.default) for f in FLAGS
              if f.origin not in (IGNORED, UNSUPPORTED)}
    if "cni-socket" not in values:
        kwargs["cni_socket"] = kwargs["subnet_file"].parent / "cni.sock"
    return Options(**kwargs, warnings=tuple(warnings))


def load_options(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    """parse_options with the --config file read from disk (the only I/O here)."""
    path = config_path(argv, env)
    text = None
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise OptionsError(f"--config={str(path)!r}: cannot read it: {exc.strerror}") from None
    return parse_options(argv, env, text, yaml_source=f"config file {path}")

