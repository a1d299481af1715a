"""The ground floor: pyflannel's shared vocabulary, importing nothing else of ours.

Leases and their etcd keys (`lease`), the network config (`config`),
`subnet.env` (`subnetenv`) and the clipping of quoted input in errors (`clip`).
Pure data and pure functions; every other package builds on these.
"""
