"""The first module a fork server imports (:data:`loader.runner.FORKSERVER_PRELOAD`): it turns
the garbage collector off while the others are imported; :mod:`loader.preload_done`, the last,
freezes what they made and turns it on again, so every scan process forks with it on.

Each full collection during the imports walked the heap built so far again: 0.05-0.08 s of a
fork server's 0.57-0.77 s of preloading (0.48-0.54 s without). What the imports left
unreachable (about 58,000 objects) is frozen with the rest instead of collected: shared by the
scan processes, never walked.
"""

import gc

gc.disable()
