#pragma once

// The backup pool's workers: a connection that can reach any demo database, so one pool smaller
// than the number of databases limits how many backups run at once (see main.cpp).

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>

#include <sqlite3.h>

#include <connpool.hpp>
#include <connpool/sqlite.hpp>

#include "demo_data.hpp" // demo_db_options

namespace demo {

/// A backup worker's connection. It is not tied to one database: the job it runs says which demo
/// database to back up, and the worker opens a sqlite::Connection to it (kept while the next
/// job is about the same database). Move-only, used by one thread at a time, like any leased
/// connection.
class WorkerConnection {
public:
    /// Returns a connection to `db`, opening it unless the worker has it open already. Throws
    /// OperationError if it cannot: a database that cannot be opened is that job's failure,
    /// not a broken worker, so the runner keeps the worker.
    sqlite::Connection& open(const fs::path& db) {
        if (!current_ || current_->path() != db) {
            current_.reset();
            try {
                current_.emplace(sqlite::Factory{db, demo_db_options}.create());
            } catch (const sqlite::Error& e) {
                throw connpool::OperationError(e.what());
            }
        }
        return *current_;
    }

    /// Rolls back a transaction a job left open; false if that failed (then the pool retires it).
    [[nodiscard]] bool reset() noexcept {
        if (!current_ || sqlite3_get_autocommit(current_->handle()) != 0) return true;
        return sqlite3_exec(current_->handle(), "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK;
    }

private:
    std::optional<sqlite::Connection> current_;
};

/// Makes workers for the backup pool. A new worker holds no SQLite connection yet.
struct WorkerFactory {
    WorkerConnection create() const { return {}; }
    bool reset(WorkerConnection& worker) const noexcept { return worker.reset(); }
};

/// Counts the backups running at once. Counted inside the job's operation, which runs only
/// while its lease is held, so the peak is exact: never more than the pool's max_size.
class Concurrency {
public:
    /// Marks one operation running until the returned guard goes out of scope.
    [[nodiscard]] auto enter() {
        const int now = running_.fetch_add(1) + 1;
        int peak = peak_.load();
        while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
        }
        const auto leave = [this](Concurrency*) { running_.fetch_sub(1); };
        return std::unique_ptr<Concurrency, decltype(leave)>(this, leave);
    }

    /// Returns the most operations that ran at the same time.
    [[nodiscard]] int peak() const noexcept { return peak_.load(); }

private:
    std::atomic<int> running_{0};
    std::atomic<int> peak_{0};
};

/// Turns the adapter's job for one database (a Job<sqlite::Connection>) into a job for the
/// worker pool: the worker opens `db`, then the adapter's own operation runs on that connection.
inline connpool::Job<WorkerConnection> on_database(fs::path db, connpool::Job<sqlite::Connection> job, Concurrency& concurrency) {
    return {std::move(job.name), job.kind,
            [db = std::move(db), run = std::move(job.run), &concurrency](WorkerConnection& worker,
                                                                          connpool::ProgressReporter& reporter) {
                const auto running = concurrency.enter();
                run(worker.open(db), reporter);
            }};
}

/// Remembers, from a job's progress callbacks, when its last page was copied: what the job did
/// after that (check the copy, fsync, rename) is the summary's "check s" column. Callbacks run on
/// the runner's threads, so the value is an atomic; one job's callbacks never overlap.
struct CopiedAt {
    std::atomic<std::int64_t> elapsed_ns{-1};

    connpool::ProgressCallback callback() {
        return [this](const connpool::Progress& p) {
            // Reaching 100 % is always delivered, even between throttled callbacks. A restart
            // raises the total again, so only the last attempt's last page counts; the phase
            // changes after it ("verifying", "syncing") are the part being measured.
            if (p.state == connpool::JobState::running && p.total != 0 && p.done == p.total &&
                (p.phase.empty() || p.phase == "copying"))
                elapsed_ns.store(p.elapsed.count());
        };
    }
};

} // namespace demo
