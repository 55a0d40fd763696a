"""The control plane's state: the SQLite store, per-host log files and their readers, locks,
and the status rules records follow."""
