#pragma once

// The step loop shared by backup and restore: sqlite3_backup_step in steps, with cancellation,
// pauses, busy retries bounded by a limit that is really kept, restart detection and
// escalation, and progress in the database's pages.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <sqlite3.h>

#include "../jobs.hpp"
#include "error.hpp"

namespace connpool::sqlite::detail {

inline void check_step_options(int pages_per_step, std::chrono::milliseconds pause,
                               std::chrono::milliseconds busy_limit, std::string_view who) {
    if (pages_per_step == 0 || pages_per_step < -1)
        throw std::invalid_argument(std::string(who) + ": pages_per_step must be > 0 or -1 (all), got " +
                                    std::to_string(pages_per_step));
    if (pause.count() < 0)
        throw std::invalid_argument(std::string(who) + ": pause must be >= 0 ms, got " + std::to_string(pause.count()));
    if (busy_limit.count() < 0)
        throw std::invalid_argument(std::string(who) + ": busy_limit must be >= 0 ms, got " +
                                    std::to_string(busy_limit.count()));
}

/// Sleeps for `duration` in short slices, returning early (true) once a stop is requested.
inline bool sleep_unless_stopped(ProgressReporter& reporter, std::chrono::milliseconds duration) {
    const auto until = std::chrono::steady_clock::now() + duration;
    while (std::chrono::steady_clock::now() < until) {
        if (reporter.stop_requested()) return true;
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
            until - std::chrono::steady_clock::now(), std::chrono::milliseconds{20}));
    }
    return reporter.stop_requested();
}

/// Returns whether `rc` is a failure to write or grow a file (full disk, I/O error on write or
/// sync, read-only file), as opposed to a failure to read one.
inline bool is_write_error(int rc) {
    const int primary = rc & 0xff;
    return primary == SQLITE_FULL || primary == SQLITE_READONLY || rc == SQLITE_IOERR_WRITE ||
           rc == SQLITE_IOERR_FSYNC || rc == SQLITE_IOERR_DIR_FSYNC || rc == SQLITE_IOERR_TRUNCATE ||
           rc == SQLITE_IOERR_DELETE || rc == SQLITE_IOERR_NOMEM;
}

/// Sets a connection's busy timeout to 0 while it lives and restores it after: sqlite3_backup_step
/// would otherwise wait up to the connection's whole busy timeout inside one step, and the job's
/// own busy_limit (which the step loop keeps) would be overrun by that much.
class NoBusyWait {
public:
    explicit NoBusyWait(sqlite3* db) : db_(db) {
        sqlite3_stmt* stmt = nullptr;
        if (sqlite3_prepare_v2(db_, "PRAGMA busy_timeout", -1, &stmt, nullptr) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW)
            old_ms_ = sqlite3_column_int(stmt, 0);
        sqlite3_finalize(stmt);
        sqlite3_busy_timeout(db_, 0);
    }
    NoBusyWait(const NoBusyWait&) = delete;
    NoBusyWait& operator=(const NoBusyWait&) = delete;
    ~NoBusyWait() { sqlite3_busy_timeout(db_, old_ms_); }

private:
    sqlite3* db_;
    int old_ms_ = 0;
};

/// How a copy proceeds.
struct StepPlan {
    int pages_per_step;
    std::chrono::milliseconds pause;
    std::chrono::milliseconds busy_limit;
    int restarts_before_single_step; // < 0: never escalate on restarts
    bool grow = false;               // double the step while steps are quick (nothing restarts a restore)
    bool report = true;              // report pages, restarts and retries to the reporter
};

/// The files a copy reads and writes, for messages that say which one failed.
struct CopyFiles {
    std::string read;
    std::string write;
};

/// The two connections of an online backup, so a copy can start it again.
struct CopyEnds {
    sqlite3* dest;
    sqlite3* source;
};

/// Runs an online backup in steps until it is done (true) or the job is cancelled (false; the
/// destination's transaction is rolled back by the caller's sqlite3_backup_finish). Progress:
/// done and total are the database's pages; a restart (another connection wrote to the source)
/// is counted apart, and done stays where it was until the new attempt passes it. Throws Error
/// saying what failed, in which file, with SQLite's description of the code; OperationError when
/// the database stayed busy past the limit (a lock held elsewhere, not a broken connection).
/// `backup` runs between `ends`, and may be replaced by a new backup between them.
inline bool copy_pages(BackupPtr& backup, CopyEnds ends, const StepPlan& plan, ProgressReporter& reporter,
                       const std::string& what, const CopyFiles& files) {
    using clock = std::chrono::steady_clock;
    int step = plan.pages_per_step;
    int restarts = 0;
    std::uint64_t copied = 0;   // pages copied by the current attempt, after the last step
    std::uint64_t reported = 0; // what the reporter has been told
    bool busy = false;
    clock::time_point busy_since{};
    auto busy_pause = std::chrono::milliseconds{1};
    for (;;) {
        if (reporter.stop_requested()) return false;
        const auto started = clock::now();
        const int rc = sqlite3_backup_step(backup.get(), step);
        const int primary = rc & 0xff;
        if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
            // A backup object takes only the plain codes for "try again": after an extended one
            // (SQLITE_BUSY_RECOVERY while another connection rebuilds a WAL index, returned at
            // once whatever the busy timeout) every later step returns that code again. So such
            // a copy starts over on a new object: finishing the old one rolls the destination's
            // transaction back, and the new one copies every page anew.
            if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
                backup.reset(); // first: a destination takes one backup at a time
                backup.reset(sqlite3_backup_init(ends.dest, "main", ends.source, "main"));
                if (!backup) throw_sqlite(ends.dest, sqlite3_errcode(ends.dest), what + " could not start again");
                copied = 0;
            }
            const auto now = clock::now();
            if (!busy) {
                busy = true;
                busy_since = started;
                busy_pause = std::chrono::milliseconds{1};
            } else if (now - busy_since >= plan.busy_limit) {
                const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - busy_since);
                throw OperationError(what + " gave up: the database stayed busy or locked for " +
                                     std::to_string(waited.count()) + " ms (busy_limit " +
                                     std::to_string(plan.busy_limit.count()) + " ms; " + sqlite3_errstr(rc) + ")");
            }
            if (plan.report) reporter.count_retry();
            if (sleep_unless_stopped(reporter, busy_pause)) return false;
            busy_pause = std::min(busy_pause * 2, std::chrono::milliseconds{100});
            continue;
        }
        if (rc != SQLITE_OK && rc != SQLITE_DONE) {
            const bool writing = is_write_error(rc);
            const std::string& file = writing ? files.write : files.read;
            throw Error(what + " failed " + (writing ? "writing " : "reading ") + quoted(file) + ": " + describe(rc),
                        rc);
        }
        busy = false;

        const auto page_count = static_cast<std::uint64_t>(sqlite3_backup_pagecount(backup.get()));
        const auto remaining = static_cast<std::uint64_t>(sqlite3_backup_remaining(backup.get()));
        const std::uint64_t now_copied = page_count - std::min(remaining, page_count);
        // Without a restart a step copies `step` more pages (or all that remain). When another
        // connection has written to the source, SQLite starts over from page 1 within the step,
        // so fewer pages than that count as copied. (A restart inside a step that then copies
        // everything cannot be told from the page counts, and needs no escalation anyway.)
        const std::uint64_t expected =
            step < 0 ? page_count : std::min<std::uint64_t>(copied + static_cast<std::uint64_t>(step), page_count);
        if (rc == SQLITE_OK && copied > 0 && now_copied < expected) {
            ++restarts;
            if (plan.report) reporter.count_restart();
            if (plan.restarts_before_single_step >= 0 && restarts >= plan.restarts_before_single_step) {
                step = -1;
            } else if (step > 0) {
                step = static_cast<int>(std::min<std::int64_t>(std::int64_t{step} * 4, INT32_MAX));
            }
        }
        copied = now_copied;
        if (plan.report) {
            reporter.set_total(page_count, "pages");
            if (copied > reported) {
                reporter.advance(copied - reported);
                reported = copied;
            }
        }
        if (rc == SQLITE_DONE) return true;
        // Steps of a restore hold the target locked from the first to the last anyway, so small
        // steps only cost time: they grow while each takes under 50 ms, staying cancellable.
        if (plan.grow && step > 0 && clock::now() - started < std::chrono::milliseconds{50})
            step = static_cast<int>(std::min<std::int64_t>(std::int64_t{step} * 2, 1 << 16));
        if (plan.pause.count() > 0 && sleep_unless_stopped(reporter, plan.pause)) return false;
    }
}

} // namespace connpool::sqlite::detail
