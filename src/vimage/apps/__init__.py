"""Network applications that run inside vnets: protocol code stepped by the kernel loop.

`tasks` turns a generator that uses non-blocking sockets into a task the kernel loop
steps (so any number of them progress together, in virtual time too); `iperf3` is an
iperf3-compatible client and server built on it.
"""
