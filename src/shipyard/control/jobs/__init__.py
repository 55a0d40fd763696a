"""Run-to-completion jobs: the protocol every job kind implements (``kind``), the training and
processing kinds, the supervisor that drives them, and the registry of job kinds
(``registry``, which batch transform joins from its own wing)."""
