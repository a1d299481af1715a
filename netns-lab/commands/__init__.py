"""netns-lab subcommands: one module each, its docstring is the help."""
