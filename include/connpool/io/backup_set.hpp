#pragma once

// What every adapter's whole-database backup and restore share: the handle of a set in flight
// (DatabaseOperation: its per-table jobs, its aggregate progress, its own end after the tables'),
// and the small files of a set written through the durable-file layer. The adapters' own headers
// (postgres/database.hpp, mysql/database.hpp) take the snapshot and run the tables; this header
// knows nothing of any database.
//
// A set's progress is over its tables' jobs, but a job still queued has reported no total yet:
// each table's size as the set saw it when it started (the catalog's, or the backup's) stands in
// for it until its job says, so the total and the ETA are right from the first moment.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "../jobs.hpp"
#include "durable_file.hpp"

namespace connpool::io {

/// Aggregate progress of a database backup or restore.
struct DatabaseProgress {
    /// Bytes done and expected over all tables (a backup's total is estimated until each table ends).
    std::uint64_t done = 0, total = 0;
    /// Tables ended, and in all.
    std::size_t tables_done = 0, tables = 0;
    /// Time left at the rate so far; only while the total is known and something is done.
    std::optional<std::chrono::nanoseconds> eta{};
};

/// A database backup or restore in flight: the per-table jobs and the set's own end (schema,
/// manifest). Waits for itself on destruction. Thread-safe.
class DatabaseOperation {
public:
    /// Blocks until every table job has ended and the set is finished; returns succeeded only if
    /// every table and the set's own steps succeeded, cancelled if any table was cancelled (and
    /// none failed), else failed.
    JobState wait() const {
        std::unique_lock lock(state_->mu);
        state_->cv.wait(lock, [&] { return state_->finished; });
        return state_->end;
    }

    /// Returns the per-table jobs, largest table first.
    [[nodiscard]] const std::vector<JobHandle>& tables() const noexcept { return state_->handles; }

    /// Returns why the set failed ("" when it did not): the first failed table's error, or the
    /// set's own (schema, manifest). Blocks until the set is finished.
    [[nodiscard]] std::string error() const {
        (void)wait();
        std::lock_guard lock(state_->mu);
        return state_->error;
    }

    /// Cancels every table job (queued or running) and every schema job the set started; the
    /// set then ends cancelled.
    void cancel() const {
        std::vector<JobHandle> schema_jobs;
        {
            std::lock_guard lock(state_->mu);
            state_->cancel_requested = true;
            schema_jobs = state_->schema_jobs;
        }
        for (const auto& h : state_->handles) h.cancel();
        for (const auto& h : schema_jobs) h.cancel();
    }

    /// Returns the aggregate progress: bytes over all tables and an ETA. A table whose job has not
    /// said its total yet counts with its size as the set saw it at the start.
    [[nodiscard]] DatabaseProgress progress() const {
        DatabaseProgress p;
        p.tables = state_->handles.size();
        for (std::size_t i = 0; i < state_->handles.size(); ++i) {
            const Progress t = state_->handles[i].progress();
            const std::uint64_t expected = i < state_->expected.size() ? state_->expected[i] : 0;
            p.done += t.done;
            // An ended job's work is what it did (a cancelled queued one did none).
            p.total += is_final(t.state) ? std::max(t.total, t.done)
                                          : t.total == 0 ? std::max(expected, t.done) : std::max(t.total, t.done);
            p.tables_done += is_final(t.state) ? 1 : 0;
        }
        const auto elapsed = std::chrono::steady_clock::now() - state_->started;
        if (p.total > 0 && p.done > 0 && p.done < p.total)
            p.eta = std::chrono::duration_cast<std::chrono::nanoseconds>(
                elapsed * (static_cast<double>(p.total - p.done) / static_cast<double>(p.done)));
        return p;
    }

    /// Waits for the set to finish.
    ~DatabaseOperation() {
        if (state_ && state_->finisher.joinable()) state_->finisher.join();
    }
    DatabaseOperation(DatabaseOperation&&) noexcept = default;
    DatabaseOperation& operator=(DatabaseOperation&&) = delete;
    DatabaseOperation(const DatabaseOperation&) = delete;

    /// Shared by the operation and its finisher thread; made by the adapters' backup_database and
    /// restore_database.
    struct State {
        mutable std::mutex mu;
        std::condition_variable cv;
        bool finished = false;
        JobState end = JobState::failed;
        std::string error;
        std::vector<JobHandle> handles;
        std::vector<std::uint64_t> expected; // each table's size at the start, as handles
        std::vector<JobHandle> schema_jobs;  // e.g. a restore's per-table index jobs; guarded by mu
        bool cancel_requested = false;       // guarded by mu
        std::thread finisher;
        std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    };
    /// Adopts `state` (its finisher already started).
    explicit DatabaseOperation(std::shared_ptr<State> state) noexcept : state_(std::move(state)) {}

private:
    std::shared_ptr<State> state_;
};

namespace detail {

/// Writes `text` as dir/name durably (temp file 0600, fsync, publish without replacing).
inline void write_set_file(const std::filesystem::path& dir, const std::string& name, const std::string& text) {
    TempFile temp(dir / name, Publish::no_replace);
    for (std::size_t written = 0; written < text.size();) {
        const ssize_t n = ::write(temp.fd(), text.data() + written, text.size() - written);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot write " + quoted(temp.path()), errno);
        }
        written += static_cast<std::size_t>(n);
    }
    temp.sync();
    temp.publish();
}

/// Returns the whole of a set's file; throws io::Error naming it when it cannot be read.
inline std::string read_set_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot read " + quoted(path), ENOENT);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Throws std::invalid_argument unless the pool can lease the leader and one table job at once.
/// `function` names the caller in the message ("connpool::mysql::backup_database").
inline void require_leader_and_one(std::size_t max_size, const std::string& function) {
    if (max_size < 2)
        throw std::invalid_argument(function + ": the pool's max_size is " + std::to_string(max_size) +
                                    "; a database backup or restore needs one connection for its leader (snapshot, "
                                    "schema) plus one per table it copies at once (N+1), so at least 2");
}

/// Throws io::Error unless `dir` is missing or an empty directory (a set never mixes with other files).
inline void require_new_directory(const std::filesystem::path& dir) {
    std::error_code ec;
    if (std::filesystem::exists(dir, ec) && !std::filesystem::is_empty(dir, ec))
        throw Error("cannot back up into " + quoted(dir) + ": the directory is not empty", EEXIST);
}

/// Ends a set: the end state from the tables' and the set's own step, then wakes the waiters.
inline void finish_set(DatabaseOperation::State& state, JobState end, std::string error) {
    std::lock_guard lock(state.mu);
    state.end = end;
    state.error = std::move(error);
    state.finished = true;
    state.cv.notify_all();
}

/// Waits for every table job; returns the set's state so far and the first failure's text.
inline std::pair<JobState, std::string> wait_tables(const std::vector<JobHandle>& handles) {
    JobState end = JobState::succeeded;
    std::string error;
    for (const auto& h : handles) {
        const JobState s = h.wait();
        if (s == JobState::failed) {
            if (end != JobState::failed) error = h.progress().name + ": " + h.error();
            end = JobState::failed;
        } else if (s == JobState::cancelled && end == JobState::succeeded) {
            end = JobState::cancelled;
            error = h.progress().name + " was cancelled";
        }
    }
    return {end, error};
}

} // namespace detail
} // namespace connpool::io
