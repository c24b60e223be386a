"""One module per command's behaviour; the CLI in :mod:`oscsync.cli` only parses and prints."""
