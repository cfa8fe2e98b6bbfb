"""A bounded soak: steady traffic through the gateway for minutes, every process watched.

``make soak`` (``python -m tools.soak``) starts the local stack, calls every
RPC from a few callers for a warm-up and then the soak proper, samples the
resident memory and open file descriptors of the gateway, the services,
tritonserver and its model stubs, and judges that no call failed and that
every process stayed flat. ``make test`` runs a 30-second smoke of it.
"""
