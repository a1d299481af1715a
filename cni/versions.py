"""The CNI versions we serve and the VERSION reply: shared by the front and the plugin.

No imports at all, so the exec'd front can answer a runtime's VERSION probe
(sent before every ADD and DEL by libcni runtimes) without loading anything.
"""

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"


def version_for(requested: object) -> str:
    """The request's cniVersion if we speak it, else our latest."""
    return requested if isinstance(requested, str) and requested in SUPPORTED_VERSIONS \
        else LATEST


def version_reply(version: str) -> bytes:
    listed = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    return f'{{"cniVersion":"{version}","supportedVersions":[{listed}]}}'.encode()
