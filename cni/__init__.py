"""pyflannel: cni."""
