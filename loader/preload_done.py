"""The last module a fork server imports (:data:`loader.runner.FORKSERVER_PRELOAD`): it moves
everything the preloaded modules made into the garbage collector's permanent generation
(``gc.freeze()``) before the first scan process forks from the server, and turns the collector
on again (:mod:`loader.preload_start`, the first, turned it off).

A scan process inherits the server's 94,000 tracked objects (the loader, dlt, pyarrow). They
live as long as the process, yet every full collection in it walked all of them again: 45-65 ms
each, which a worker's scan process paid every few small scans (an incremental scan takes
0.15-0.2 CPU seconds there). Frozen objects are left out of every collection, so a full one
walks only what the process made itself (1-2 ms after a small scan); it also stops the
collector from writing to those objects' pages, which forked processes share until written.
Python's documentation recommends exactly this for a server that forks without exec.
"""

import gc

gc.freeze()
gc.enable()
