"""GC (CNI 1.1.0): release everything of this network not in `cni.dev/valid-attachments`.

Covers our attachment records (veth, nft chain, reservations), reservations
with no record (left by host-local or a crash), nft chains with no record, and
flannel scratch files of this network. Continues past errors, reports them all.
"""

from __future__ import annotations

import json
import os

from cni import ipam, masq, state
from cni.context import undo
from cni.protocol import INTERNAL, INVALID_CONFIG, CniError, Request, shown

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

    from cni.context import Context
    from cni.delegate import FlannelConf


def valid_attachments(conf: dict[str, Any]) -> set[tuple[str, str]]:
    raw = conf.get("cni.dev/valid-attachments", [])
    if not isinstance(raw, list):
        raise CniError(INVALID_CONFIG, "'cni.dev/valid-attachments' must be a list of "
                       "{containerID, ifname} objects")
    out = set()
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CniError(INVALID_CONFIG, f"'cni.dev/valid-attachments': bad entry {shown(item)}")
        out.add((item["containerID"], str(item.get("ifname", ""))))
    return out


def collect(req: Request, ctx: Context, fc: FlannelConf) -> None:
    valid = valid_attachments(req.conf)
    valid_ids = {cid for cid, _ in valid}
    errors: list[str] = []
    for rec in state.all_records(fc.data_dir, fc.name):
        if (rec.container_id, rec.ifname) not in valid:
            try:
                undo(rec, ctx, fc.data_dir)
            except CniError as exc:
                errors.append(f"{exc.msg}: {exc.details}")
    ipam_conf = fc.ipam or {}
    store = ipam.Store(str(ipam_conf.get("dataDir") or ipam.DEFAULT_DATA_DIR), fc.name)
    try:
        with store.locked():
            for name, (cid, ifname) in store.owners().items():
                keep = (cid, ifname) in valid if ifname else cid in valid_ids
                if not keep:
                    try:
                        os.unlink(os.path.join(store.dir, name))
                    except FileNotFoundError:
                        pass
    except OSError as exc:
        errors.append(f"reservations in {store.dir}: {exc}")
    try:
        masq.collect(fc.name, {masq.chain_name(fc.name, cid, ifname) for cid, ifname in valid})
    except (OSError, masq.NftError) as exc:
        errors.append(f"nft table {masq.TABLE}: {exc}")
    for cid in state.scratch_ids(fc.data_dir):
        if cid in valid_ids:
            continue
        raw = state.load_scratch(fc.data_dir, cid)
        try:
            mine = raw is not None and json.loads(raw).get("name") == fc.name
        except (ValueError, AttributeError):
            mine = False
        if mine:
            state.drop_scratch(fc.data_dir, cid)
    if errors:
        raise CniError(INTERNAL, f"GC of {fc.name} left {len(errors)} problem(s)",
                       "; ".join(errors))
