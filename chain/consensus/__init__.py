"""The rules a block must meet without the global tree: difficulty (aserti3-2d) and the
stateless checks of headers, block shape and event signatures. The stateful rules are the
fold's (:mod:`globaltree.fold`)."""
