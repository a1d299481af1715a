"""flannelctl."""
