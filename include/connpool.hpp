#pragma once

/// The connpool core in one include: Pool, Lease, BoundedBlockingQueue, the errors and the job
/// layer (JobRunner, Job, Progress, JobHandle).
/// Adapters (connpool/sqlite.hpp, connpool/postgres.hpp) are separate, opt-in headers.

#include "connpool/bounded_queue.hpp"
#include "connpool/errors.hpp"
#include "connpool/jobs.hpp"
#include "connpool/lease.hpp"
#include "connpool/pool.hpp"
