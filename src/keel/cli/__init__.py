"""The `keel` command line: one module per noun, each registering its subcommands."""
