"""inferq: the command line and the one-machine launcher (the only place api and workers meet)."""
