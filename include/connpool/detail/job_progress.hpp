#pragma once

// The job layer's vocabulary: what a job is (JobKind), where it is in its life (JobState),
// what it reports (Progress) and the callback types that receive it. Public names, included
// through <connpool/jobs.hpp>; nothing here has state or threads.

#include <algorithm> // std::min: Progress::fraction
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "../errors.hpp"

namespace connpool {

/// What a job does. It only labels the job (in Progress, sinks and metrics).
enum class JobKind { backup, restore };

/// Where a job is in its life: queued → running → succeeded | failed | cancelled.
/// A job cancelled while queued goes straight from queued to cancelled, without a lease.
enum class JobState { queued, running, succeeded, failed, cancelled };

/// Returns "backup" or "restore".
[[nodiscard]] constexpr std::string_view to_string(JobKind kind) noexcept {
    return kind == JobKind::backup ? "backup" : "restore";
}

/// Returns the state's name: "queued", "running", "succeeded", "failed" or "cancelled".
[[nodiscard]] constexpr std::string_view to_string(JobState state) noexcept {
    switch (state) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::succeeded: return "succeeded";
    case JobState::failed: return "failed";
    case JobState::cancelled: return "cancelled";
    }
    return "unknown";
}

/// Returns whether `state` is one a job ends in (succeeded, failed or cancelled).
[[nodiscard]] constexpr bool is_final(JobState state) noexcept {
    return state == JobState::succeeded || state == JobState::failed ||
           state == JobState::cancelled;
}

/// Thrown by an operation that failed for a reason that leaves its connection healthy (a bad
/// input file, an unwritable destination): the runner returns the lease instead of discarding
/// it. Any other exception from an operation discards the connection, whose state is unknown.
class OperationError : public Error {
public:
    using Error::Error;
};

/// A job's progress at one moment, as given to callbacks and returned by snapshots.
struct Progress {
    /// The runner's number for the job, in submission order from 1.
    std::uint64_t id = 0;
    /// The job's name (Job::name).
    std::string name{};
    /// The job's kind (Job::kind).
    JobKind kind = JobKind::backup;
    /// The job's state.
    JobState state = JobState::queued;
    /// Units of work done so far; never decreases.
    std::uint64_t done = 0;
    /// Units of work in all; 0 while unknown. A restarted operation adds the work it redoes.
    std::uint64_t total = 0;
    /// What done and total count: "pages", "bytes", "rows"; empty until the operation says.
    std::string unit{};
    /// What the operation is doing now, when it says ("copying", "verifying", "syncing"), so a
    /// job at 100 % that is still checking its result does not look stuck; empty otherwise.
    std::string phase{};
    /// Time spent running (holding a lease); zero while queued, fixed once the job ends.
    std::chrono::nanoseconds elapsed{0};
    /// Time spent waiting for a connection, from submission until the job got its lease.
    std::chrono::nanoseconds waited{0};
    /// Units per second: smoothed over the last few seconds while running (so it follows
    /// changes), the average over the whole run once the job has ended.
    double rate = 0;
    /// Estimated time to completion while running with a known total and a non-zero rate;
    /// zero once succeeded; otherwise empty.
    std::optional<std::chrono::nanoseconds> eta;
    /// How many times the operation started over (e.g. an online backup after a concurrent write).
    std::uint64_t restarts = 0;
    /// How many times the operation retried a step (e.g. the database was busy).
    std::uint64_t retries = 0;
    /// Why the job failed; empty unless state is failed.
    std::string error{};

    /// Returns done / total in [0, 1], or nothing while the total is unknown.
    [[nodiscard]] std::optional<double> fraction() const noexcept {
        if (total == 0) return std::nullopt;
        return std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    }
};

/// Called with a job's progress. A job's callbacks never run concurrently with each other.
using ProgressCallback = std::function<void(const Progress&)>;

/// Receives an exception thrown by a progress callback, with the Progress it was given.
using CallbackErrorSink = std::function<void(const Progress&, std::exception_ptr)>;

namespace detail {

/// The clock of every job-layer time stamp (Progress::waited, elapsed, rate, throttling).
using job_clock = std::chrono::steady_clock;

/// Returns the message of the exception `error`, for Progress::error.
inline std::string describe(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "unknown exception (not derived from std::exception)";
    }
}

} // namespace detail

} // namespace connpool
