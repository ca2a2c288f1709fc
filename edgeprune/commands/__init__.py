"""One module per CLI command; each exposes ``register(subparsers) -> parser`` and sets ``func(args, ui)``."""
