"""The exec'd `flannel` executable's front: forward to flanneld, or fall back in-process.

Interpreter start-up is most of a Python plugin's cost, so this module imports
only built-in modules (`posix`, `_socket`; `_json` only when the config names
a socket or subnet file) and never `os`, `socket` or `json`. It reads stdin as
raw bytes, sends it with the CNI_* variables to flanneld's unix socket
(`cniSocket`, else `<dirname(subnetFile)>/cni.sock`), and relays the answer.
When nothing listens there (or flanneld refuses us), it imports `cni.plugin`
(stdlib-only as well) and runs the very function the server runs, in this
process. Should that import fail (an interpreter it cannot run on), it execs
the installation's own interpreter on `cni.plugin`, stdin handed over in a memfd. VERSION (probed by
libcni runtimes before every ADD and DEL) is answered here, from cni/versions.py.

Wire format (all lengths are 4-byte big-endian):
  request:  b"PFC1" len env env len stdin stdin    (env: NUL-separated K=V)
  response: b"K" code len stdout stdout len stderr stderr   (b"R": refused, fall back)
"""

import _socket
import posix
import sys

MAGIC = b"PFC1"
DEFAULT_SOCKET = "/run/flannel/cni.sock"
_FORWARD_PREFIXES = (b"CNI_",)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = posix.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class _JsonCtx:
    """The attributes _json.make_scanner reads (what json.JSONDecoder would supply)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict = {}


def parse_conf(stdin: bytes) -> dict:
    """The config as a dict ({} if it is not one: the implementation reports that)."""
    try:
        import _json  # a C extension: no `re`, unlike the json package
        text = stdin.decode().strip()
        conf = _json.make_scanner(_JsonCtx())(text, 0)[0]  # type: ignore[arg-type]
    except Exception:
        return {}
    return conf if isinstance(conf, dict) else {}


def _string_end(data: bytes, quote: int) -> int:
    """Index of the quote closing the JSON string opened at `quote` (-1 if none)."""
    j = quote + 1
    while True:
        j = data.find(b'"', j)
        if j < 0:
            return -1
        k = j
        while data[k - 1] == 0x5C:  # backslashes: an odd run escapes this quote
            k -= 1
        if (j - k) % 2 == 0:
            return j
        j += 1


def top_level_strings(data: bytes, keys: tuple) -> dict | None:
    """String values of top-level `keys` of a JSON object, found without a parser.

    Skips over strings (so braces inside them don't count) and tracks nesting
    depth in between. None when unsure (an escaped value, an unterminated
    string): the caller then parses properly.
    """
    out: dict = {}
    depth, i, n = 0, 0, len(data)
    while True:
        q = data.find(b'"', i)
        if q < 0:
            return out
        seg = data[i:q]
        depth += seg.count(b"{") + seg.count(b"[") - seg.count(b"}") - seg.count(b"]")
        end = _string_end(data, q)
        if end < 0:
            return None
        i = end + 1
        if depth != 1:
            continue
        if b"\\" in data[q + 1:end]:
            return None  # an escape might spell one of our keys: let a real parser decide
        if data[q + 1:end] not in keys:
            continue
        j = i
        while j < n and data[j] in b" \t\r\n":
            j += 1
        if j >= n or data[j] != 0x3A:  # not followed by ':': a value, not a key
            continue
        j += 1
        while j < n and data[j] in b" \t\r\n":
            j += 1
        if j < n and data[j] == 0x22:
            vend = _string_end(data, j)
            if vend < 0 or b"\\" in data[j + 1:vend]:
                return None
            out[data[q + 1:end]] = data[j + 1:vend].decode()
            i = vend + 1


def socket_path(stdin: bytes) -> str:
    """flanneld's socket for this config, parsing JSON only if the config could move it."""
    if b'"cniSocket"' not in stdin and b'"subnetFile"' not in stdin and b"\\" not in stdin:
        return DEFAULT_SOCKET  # (an escape could spell a key: then look properly)
    found = top_level_strings(stdin, (b"cniSocket", b"subnetFile"))
    conf = parse_conf(stdin) if found is None else {k.decode(): v for k, v in found.items()}
    explicit = conf.get("cniSocket")
    if isinstance(explicit, str) and explicit:
        return explicit
    subnet_file = conf.get("subnetFile")
    if isinstance(subnet_file, str) and subnet_file:
        head, slash, _ = subnet_file.rpartition("/")
        return (head or ("" if slash else ".")) + "/cni.sock"
    return DEFAULT_SOCKET


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def encode_request(env: dict, stdin: bytes) -> bytes:
    pairs = b"\0".join(k + b"=" + v for k, v in env.items() if k.startswith(_FORWARD_PREFIXES))
    return MAGIC + _u32(len(pairs)) + pairs + _u32(len(stdin)) + stdin


def decode_response(data: bytes) -> tuple | None:
    """(code, stdout, stderr); None if refused; ValueError if truncated."""
    if data[:1] == b"R":
        return None
    if data[:1] != b"K" or len(data) < 9:
        raise ValueError("truncated")
    code = int.from_bytes(data[1:5], "big")
    n = int.from_bytes(data[5:9], "big")
    out = data[9:9 + n]
    m = int.from_bytes(data[9 + n:13 + n], "big")
    err = data[13 + n:13 + n + m]
    if len(data) != 13 + n + m:
        raise ValueError("truncated")
    return code, out, err


def _ask(path: str, request: bytes):
    """The server's answer; None to fall back; b"" if it died mid-request."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None  # no flanneld (ENOENT, ECONNREFUSED, EACCES...)
        try:
            sock.sendall(request)
            data = b""
            while not _complete(data):  # stop at the frame's end: never wait for the close
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return b""
        return data
    finally:
        sock.close()


def _complete(data: bytes) -> bool:
    """Whether `data` holds a whole response frame (a refusal is one byte)."""
    if data[:1] == b"R":
        return True
    if len(data) < 9:
        return False
    n = int.from_bytes(data[5:9], "big")
    if len(data) < 13 + n:
        return False
    return len(data) >= 13 + n + int.from_bytes(data[9 + n:13 + n], "big")


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[posix.write(fd, data):]


def _fallback(python: str, root: str, stdin: bytes) -> None:
    fd = posix.memfd_create("cni-stdin", 0)
    _write(fd, stdin)
    posix.lseek(fd, 0, 0)
    posix.dup2(fd, 0)
    posix.close(fd)
    code = f"import sys; sys.path.append({root!r}); from cni.plugin import main; sys.exit(main())"
    posix.execv(python, [python, "-c", code])


def main(fallback_python: str, root: str) -> None:
    env = posix.environ
    command = env.get(b"CNI_COMMAND", b"")
    stdin = b"" if command == b"VERSION" and posix.isatty(0) else _read_all(0)
    if command == b"VERSION":  # runtimes probe before every ADD/DEL: answer at once
        from cni.versions import version_for, version_reply
        found = top_level_strings(stdin, (b"cniVersion",))
        requested = parse_conf(stdin).get("cniVersion") if found is None \
            else found.get(b"cniVersion")
        _write(1, version_reply(version_for(requested)))
        posix._exit(0)
    answer = _ask(socket_path(stdin), encode_request(env, stdin))
    if answer is not None:
        try:
            decoded = decode_response(answer)
        except ValueError:
            if command != b"ADD":
                decoded = None  # idempotent commands: just do them here
            else:
                _write(1, b'{"code":11,"msg":"flanneld failed while handling this ADD",'
                       b'"details":"retry; its DEL cleans up whatever it took"}')
                posix._exit(1)
        if decoded is not None:
            code, out, err = decoded
            if err:
                _write(2, err)
            _write(1, out)
            posix._exit(code)
    _in_process(stdin)
    _fallback(fallback_python, root, stdin)
    sys.exit(70)  # execv only returns by raising


def _in_process(stdin: bytes) -> None:
    """flanneld is not there: do the work here, with the server's own code."""
    try:
        import os

        from cni.plugin import handle
    except ImportError:
        return
    code, out, err = handle(dict(os.environ), stdin)
    if err:
        _write(2, err)
    _write(1, out)
    posix._exit(code)
