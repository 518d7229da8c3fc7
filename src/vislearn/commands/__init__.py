"""CLI subcommands, one module each; each defines ``register(subparsers)``."""
