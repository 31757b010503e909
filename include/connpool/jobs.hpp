#pragma once

// The job layer: runs backup and restore operations through a Pool, one lease per running
// operation, and reports their progress. Standard library only, like the rest of the core.
//
// This header is the facade; the parts, each with the design note of what it implements:
//   detail/job_progress.hpp    JobKind, JobState, Progress, the callback types   (vocabulary)
//   detail/job_rate_meter.hpp  the smoothed rate behind Progress::rate
//   detail/job_delivery.hpp    serialized, throttled callback delivery; which jobs a thread is inside
//   detail/job_queue.hpp       the intrusive queue a job leaves at once when cancelled
//   detail/job_control.hpp     one job's state and transitions; ProgressReporter, JobHandle, Job
//   detail/job_runner.hpp      RunnerOptions, JobRunner: the workers, the leases, calling off
//                              the acquires no queued job needs

#include "detail/job_control.hpp"
#include "detail/job_progress.hpp"
#include "detail/job_runner.hpp"
