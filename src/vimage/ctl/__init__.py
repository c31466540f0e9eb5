"""The vimage daemon (vimaged), its control protocol and the client library.

Modules here import nothing heavy at module level: the client side (protocol, paths,
client, shims) must start fast inside the PATH shims of `vimage exec`; only the
daemon side (daemon, ops, policy) touches the kernel.
"""
