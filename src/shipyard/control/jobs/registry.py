"""Every job kind the plane drives, by its key (``shipyard.kinds.JOBS``)."""

from __future__ import annotations

from shipyard.control.jobs.kind import JobKind
from shipyard.control.jobs.processing import ProcessingJobs
from shipyard.control.jobs.training import TrainingJobs
from shipyard.control.transform.kind import TransformJobs
from shipyard.control.tuning.kind import TuningJobs

JOB_KINDS: dict[str, JobKind] = {
    job.kind.key: job
    for job in (TrainingJobs(), ProcessingJobs(), TransformJobs(), TuningJobs())
}
