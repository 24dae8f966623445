"""The applications on top: the ``blockcoin`` command line (node, wallet, queries, store, host),
the node daemon that wires engine, network and API together, and the loopback demo."""
