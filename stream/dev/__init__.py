"""The local dev stack: Tansu launcher, stack, demo, producer and test doubles.

Not part of the worker: the runtime modules never import `stream.dev` (an import
contract); only the CLI's `stream.commands` reaches it, lazily, for ``up``,
``produce`` and ``stream-demo``.
"""
