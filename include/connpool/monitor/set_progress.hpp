#pragma once

// A set's aggregate progress: many jobs that make one operation (a database backup or restore:
// one job per table), seen as one line in the terminal view, one "set.*" event stream in JSON
// lines, one series per set in Prometheus and one element of HTTP /sets.
//
// Adapter-neutral: the monitor never includes an adapter. An adapter's aggregate (for example
// postgres::DatabaseProgress) is read through set_counts(), which takes any type with the fields
// done, total, tables_done and tables, so every adapter's DatabaseOperation can feed a set.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <connpool/jobs.hpp>

namespace connpool::monitor {

/// What a set has done so far, as its operation counts it.
struct SetCounts {
    std::uint64_t done = 0;    ///< units done over all the set's jobs
    std::uint64_t total = 0;   ///< units expected over all of them (0 = unknown)
    std::size_t jobs_done = 0; ///< jobs that ended
    std::size_t jobs = 0;      ///< jobs in all
};

/// Returns the counts of an adapter's aggregate progress: any type with `done`, `total`,
/// `tables_done` and `tables` (postgres::DatabaseProgress, and the MySQL adapter's).
template <class Aggregate>
    requires requires(const Aggregate& a) {
        a.done;
        a.total;
        a.tables_done;
        a.tables;
    }
SetCounts set_counts(const Aggregate& a) {
    return SetCounts{static_cast<std::uint64_t>(a.done), static_cast<std::uint64_t>(a.total),
                     static_cast<std::size_t>(a.tables_done), static_cast<std::size_t>(a.tables)};
}

/// A set's progress at one moment, as the hub keeps it and sinks get it.
struct SetProgress {
    std::string name;                              ///< the set's name (e.g. "backup of shop")
    JobKind kind = JobKind::backup;                ///< backup or restore
    JobState state = JobState::running;            ///< running until it ends, then its end state
    std::uint64_t done = 0, total = 0;             ///< units over all its jobs (total 0 = unknown)
    std::string unit = "bytes";                    ///< what done and total count
    std::size_t jobs_done = 0, jobs = 0;           ///< jobs ended, and in all
    std::chrono::nanoseconds elapsed{};            ///< since the set started
    double rate = 0;                               ///< units per second since it started
    std::optional<std::chrono::nanoseconds> eta{}; ///< at that rate; only while running with the total known
    std::string error;                             ///< why it failed (empty otherwise)

    /// Returns done/total in [0, 1], or nothing when the total is unknown (1 once succeeded).
    [[nodiscard]] std::optional<double> fraction() const noexcept {
        if (state == JobState::succeeded) return 1.0;
        if (total == 0) return std::nullopt;
        return done >= total ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
    }
};

} // namespace connpool::monitor
