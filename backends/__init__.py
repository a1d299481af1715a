"""pyflannel: backends."""
