"""core/wgkey.py: X25519 against RFC 7748 (section 5.2 vectors, the section 6.1
Diffie-Hellman) and against wireguard-tools' `wg pubkey`; flannel's key file: made
atomically, 0400, base64 without a newline; reused exactly; anything else refused with
the file left as it was."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import wgkey
from core.wgkey import (
    KeyFileError,
    decode_key,
    encode_key,
    generate_private_key,
    key_file_path,
    load_or_create_private_key,
    public_key,
    x25519,
)

H = bytes.fromhex

# RFC 7748 section 5.2: (scalar, u-coordinate, output)
VECTORS = [
    ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
     "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
     "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
    # its u has the top bit set, which X25519 must mask
    ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
     "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
     "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
]
ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


@pytest.mark.parametrize("scalar,u,out", VECTORS)
def test_rfc7748_section_5_2_vectors(scalar: str, u: str, out: str) -> None:
    assert x25519(H(scalar), H(u)).hex() == out


def test_rfc7748_section_5_2_iterated() -> None:
    k = u = (9).to_bytes(32, "little")
    for i in range(1, 1001):
        k, u = x25519(k, u), k
        if i == 1:
            assert k.hex() == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    assert k.hex() == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


def test_rfc7748_section_6_1_diffie_hellman() -> None:
    assert public_key(H(ALICE)).hex() == ALICE_PUB
    assert public_key(H(BOB)).hex() == BOB_PUB
    assert x25519(H(ALICE), H(BOB_PUB)).hex() == SHARED
    assert x25519(H(BOB), H(ALICE_PUB)).hex() == SHARED


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_diffie_hellman_agrees_and_clamping_is_applied(a: bytes, b: bytes) -> None:
    assert x25519(a, public_key(b)) == x25519(b, public_key(a))
    # the bits clamping sets or clears make no difference to the result
    flipped = bytes([a[0] ^ 7, *a[1:31], a[31] ^ 0xC0])
    assert public_key(flipped) == public_key(a)


def test_generated_private_keys_are_clamped_and_distinct() -> None:
    keys = [generate_private_key() for _ in range(16)]
    assert len(set(keys)) == 16
    for k in keys:
        assert len(k) == 32 and k[0] & 7 == 0 and k[31] & 0x80 == 0 and k[31] & 0x40


WG = shutil.which("wg")


def _wg(*args: str, stdin: str = "") -> str:
    done = subprocess.run([WG or "wg", *args], input=stdin, capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(WG is None, reason="wireguard-tools (wg) is not installed")
def test_public_key_matches_wg_pubkey() -> None:
    for _ in range(3):
        private = _wg("genkey")
        assert encode_key(public_key(decode_key(private))) == _wg("pubkey", stdin=private)
    for _ in range(2):  # and ours, read by wg
        mine = encode_key(generate_private_key())
        assert _wg("pubkey", stdin=mine) == encode_key(public_key(decode_key(mine)))


@pytest.mark.parametrize("text,fragment", [
    ("not base64!", "not base64"),
    (base64.b64encode(bytes(31)).decode(), "31 bytes"),
    (base64.b64encode(bytes(33)).decode(), "33 bytes"),
])
def test_decode_key_names_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as err:
        decode_key(text, "the PSK")
    assert "the PSK" in str(err.value)


# --- the key file -----------------------------------------------------------------------------


def test_key_file_path_is_flannels() -> None:
    assert key_file_path({}) == Path("/run/flannel/wgkey")
    assert key_file_path({"WIREGUARD_KEY_FILE": "/etc/x/key"}) == Path("/etc/x/key")
    assert key_file_path({"WIREGUARD_KEY_FILE": ""}) == Path("/run/flannel/wgkey")


def _snapshot(d: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
            for p in d.iterdir() if p.is_file()}


def test_an_absent_key_is_made_0400_base64_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "wgkey"  # parents are made too
    key, created = load_or_create_private_key(path)
    assert created
    raw = path.read_bytes()
    assert len(raw) == 44 and not raw.endswith(b"\n")
    assert base64.b64decode(raw, validate=True) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert [p.name for p in path.parent.iterdir()] == ["wgkey"]  # no temporary left
    # the next start reuses it, untouched
    before = _snapshot(path.parent)
    assert load_or_create_private_key(path) == (key, False)
    assert _snapshot(path.parent) == before


@pytest.mark.parametrize("suffix", ["", "\n"])
def test_a_present_key_is_used_exactly(tmp_path: Path, suffix: str) -> None:
    mine = bytes(range(1, 33))  # not even clamped: used as it is (X25519 clamps)
    path = tmp_path / "wgkey"
    path.write_text(encode_key(mine) + suffix)
    before = _snapshot(tmp_path)
    assert load_or_create_private_key(path) == (mine, False)
    assert _snapshot(tmp_path) == before


GOOD = encode_key(bytes(range(32)))


@pytest.mark.parametrize("content,fragment", [
    (b"", "0 bytes"),
    (GOOD.encode() + b"\n\n", "not base64"),
    (b" " + GOOD.encode(), "not base64"),
    (GOOD[:-1].encode(), "not base64"),  # padding lost
    (base64.b64encode(bytes(16)), "16 bytes"),
    (bytes(32).hex().encode(), "48 bytes"),  # hex is valid base64 of the wrong length
    (b"\x00" * 44, "not base64"),
    (b"\xff\xfe\x80" * 15, "not text"),
])
def test_an_unusable_key_file_is_refused_and_left_alone(tmp_path: Path, content: bytes,
                                                        fragment: str) -> None:
    path = tmp_path / "wgkey"
    path.write_bytes(content)
    path.chmod(0o400)
    before = _snapshot(tmp_path)
    with pytest.raises(KeyFileError, match=fragment) as err:
        load_or_create_private_key(path)
    assert str(path) in str(err.value)
    assert _snapshot(tmp_path) == before  # not replaced, nothing added


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wgkey"
    path.mkdir()  # unreadable as a file even for root
    with pytest.raises(KeyFileError, match="cannot read"):
        load_or_create_private_key(path)
    assert path.is_dir() and not any(path.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["wgkey"]


def test_a_key_written_first_by_another_process_wins(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wgkey"
    theirs = bytes([7]) * 32
    real_link = os.link

    def racing_link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        Path(dst).write_text(encode_key(theirs))  # they link theirs just before us
        real_link(src, dst)

    monkeypatch.setattr(wgkey.os, "link", racing_link)
    assert load_or_create_private_key(path) == (theirs, False)
    assert path.read_text() == encode_key(theirs)
    assert [p.name for p in tmp_path.iterdir()] == ["wgkey"]


def test_a_leftover_temporary_of_our_pid_does_not_block_a_start(tmp_path: Path) -> None:
    # a flanneld killed while writing (as PID 1 in its container, the same pid every start)
    path = tmp_path / "wgkey"
    stale = tmp_path / f".wgkey.{os.getpid()}.tmp"
    stale.write_text("half a ke")
    stale.chmod(0o400)
    key, created = load_or_create_private_key(path)
    assert created and path.read_text() == encode_key(key)
    assert [p.name for p in tmp_path.iterdir()] == ["wgkey"]
