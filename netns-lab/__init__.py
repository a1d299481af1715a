"""pyflannel: netns-lab."""
