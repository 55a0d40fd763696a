"""Hyperparameter tuning jobs (CreateHyperParameterTuningJob): each trial is a training job.

- :mod:`~shipyard.control.tuning.ranges`: ``ParameterRanges`` checked into typed ranges, and
  the hyperparameter strings trials get (standard library only);
- :mod:`~shipyard.control.tuning.search`: the search engine (Random, Bayesian, Grid,
  Hyperband, early stopping) on Optuna, pure and deterministic given a seed;
- :mod:`~shipyard.control.tuning.request`, ``kind``, ``runner``, ``trials``: the job kind,
  its request and record, and the runner that drives trials as training jobs.

Nothing is imported here: ``search`` loads Optuna, which only the runner needs.
"""
