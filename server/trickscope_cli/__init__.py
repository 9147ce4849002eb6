"""The ``trickscope`` command: the one place that sees both the agent and the server.

Each subcommand imports its side lazily, so ``trickscope serve`` starts where torch is absent.
"""
