"""flanneld: the per-host daemon, its subnet manager and its sans-I/O core.

Kept import-free: the CNI plugin's fallback path imports submodules of this
package and must not pay for anything it does not use.
"""

__version__ = "0.1.0"
