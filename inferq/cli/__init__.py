"""The `inferq` command, and the one place where the API and the workers meet (`inferq up`).

`main` (arguments and sub-commands), `up` (the whole fabric on one machine), `local` (embedded
Redis and a llama.cpp server), `processes` (`--processes N` supervision), `status`, `reload`,
`submit` (the commands of the same names) and `logs` (one line per record, text or JSON).
"""

from inferq.cli.main import main

__all__ = ["main"]
