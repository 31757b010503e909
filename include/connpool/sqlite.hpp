#pragma once

// SQLite adapter: a pooled Connection owning a sqlite3*, its Factory, and backup/restore jobs
// built on SQLite's online backup API. Link connpool::sqlite (it brings libsqlite3). POSIX only:
// backups are made crash-safe with mkstemp, fsync and rename.

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring> // std::strerror
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>  // open
#include <unistd.h> // fsync, close, link, unlink

#include <sqlite3.h>

#include "errors.hpp"
#include "jobs.hpp"

namespace connpool::sqlite {

/// A failure reported by SQLite: what() names the operation, the file and SQLite's message.
class Error : public connpool::Error {
public:
    /// Builds the error from the full message and SQLite's (extended) result code.
    Error(const std::string& message, int code) : connpool::Error(message), code_(code) {}

    /// Returns SQLite's (extended) result code, e.g. SQLITE_BUSY.
    [[nodiscard]] int code() const noexcept { return code_; }

private:
    int code_;
};

namespace detail {

inline std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

inline std::string errno_text(int error) { return std::strerror(error); }

[[noreturn]] inline void throw_sqlite(sqlite3* db, int rc, const std::string& what) {
    const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    throw Error(what + ": " + message + " (SQLite code " + std::to_string(rc) + ")", rc);
}

/// Closes a database handle; sqlite3_close_v2 defers the close until its statements finish.
struct CloseDb {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, CloseDb>;

/// Opens `path` with `flags`, or throws an Error naming the path.
inline DbPtr open_db(const std::filesystem::path& path, int flags, std::string_view purpose) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    DbPtr db(raw);
    if (rc != SQLITE_OK)
        throw_sqlite(db.get(), rc, "cannot open " + std::string(purpose) + " " + quoted(path));
    sqlite3_extended_result_codes(db.get(), 1);
    return db;
}

/// Runs `sql` (any number of statements, results ignored), or throws an Error.
inline void exec(sqlite3* db, const char* sql, std::string_view context) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
        const std::string text = message != nullptr ? message : sqlite3_errstr(rc);
        sqlite3_free(message);
        throw Error(std::string(context) + ": " + text + " (SQLite code " + std::to_string(rc) + ")", rc);
    }
}

/// Finalizes a prepared statement when it goes out of scope.
struct FinalizeStmt {
    void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, FinalizeStmt>;

/// Prepares `sql` on `db`, or throws an Error starting with `context`.
inline StmtPtr prepare(sqlite3* db, const char* sql, std::string_view context) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql, -1, &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) throw_sqlite(db, rc, std::string(context));
    return stmt;
}

/// Returns the rows of a one-column query as text.
inline std::vector<std::string> column_texts(sqlite3* db, const char* sql, std::string_view context) {
    const StmtPtr stmt = prepare(db, sql, context);
    int rc = SQLITE_OK;
    std::vector<std::string> rows;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
        const auto* text = sqlite3_column_text(stmt.get(), 0);
        rows.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "");
    }
    if (rc != SQLITE_DONE) throw_sqlite(db, rc, std::string(context));
    return rows;
}

/// Finishes a backup object (releasing its locks) when it goes out of scope.
struct FinishBackup {
    void operator()(sqlite3_backup* backup) const noexcept { sqlite3_backup_finish(backup); }
};
using BackupPtr = std::unique_ptr<sqlite3_backup, FinishBackup>;

} // namespace detail

/// How thoroughly a database file is checked: not at all, `PRAGMA quick_check` (structure,
/// O(N)), or `PRAGMA integrity_check` (also indexes against tables; slower).
enum class Check { none, quick, integrity };

/// Returns nothing if `db`'s main database passes `check`, else the problems SQLite lists
/// (at most 10, one per line).
inline std::string check_problems(sqlite3* db, Check check, std::string_view context) {
    if (check == Check::none) return {};
    const char* sql = check == Check::quick ? "PRAGMA main.quick_check(10)" : "PRAGMA main.integrity_check(10)";
    const auto rows = detail::column_texts(db, sql, context);
    if (rows.size() == 1 && rows.front() == "ok") return {};
    std::string problems;
    for (const auto& row : rows) problems += (problems.empty() ? "" : "\n") + row;
    return problems.empty() ? "the check returned nothing" : problems;
}

/// One pooled SQLite connection: owns a `sqlite3*` (closed on destruction). Move-only; like any
/// leased connection, used by one thread at a time.
class Connection {
public:
    /// Adopts `db` (opened on `path`); made by Factory.
    Connection(sqlite3* db, std::filesystem::path path) noexcept : db_(db), path_(std::move(path)) {}

    /// Returns the raw handle, for any SQLite call. Do not close it.
    [[nodiscard]] sqlite3* handle() const noexcept { return db_.get(); }

    /// Returns the path the connection was opened on.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

    /// Runs `sql` (one or more statements, results ignored); throws Error on failure.
    void exec(const std::string& sql) {
        detail::exec(handle(), sql.c_str(), "SQL on " + detail::quoted(path_) + " failed");
    }

    /// Returns the first column of the first row of `sql` as an integer (0 when there is no row).
    [[nodiscard]] std::int64_t query_int(const std::string& sql) {
        const std::string context = "query on " + detail::quoted(path_) + " failed";
        const detail::StmtPtr stmt = detail::prepare(handle(), sql.c_str(), context);
        const int rc = sqlite3_step(stmt.get());
        if (rc == SQLITE_ROW) return sqlite3_column_int64(stmt.get(), 0);
        if (rc != SQLITE_DONE) detail::throw_sqlite(handle(), rc, context);
        return 0;
    }

private:
    detail::DbPtr db_;
    std::filesystem::path path_;
};

/// How a Factory opens connections. Every field has a default.
struct FactoryOptions {
    /// How long a statement waits for another connection's lock before SQLITE_BUSY. Default 5 s.
    std::chrono::milliseconds busy_timeout{5000};
    /// sqlite3_open_v2 flags. Default read-write, create if missing. Connections are opened
    /// SQLITE_OPEN_NOMUTEX (a lease is used by one thread at a time) unless FULLMUTEX is given.
    int open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    /// Put the database in WAL mode (readers and the writer stop blocking each other; online
    /// backups then copy a snapshot while writes go on). Default false: keep the file's mode.
    bool wal = false;
    /// SQL run on every new connection, after the settings above (e.g. "PRAGMA foreign_keys=ON").
    std::string init_sql{};
};

/// Creates Connections on one database file, for Pool. Thread-safe: only reads its own state.
class Factory {
public:
    /// A factory for the database at `path` (created if missing, unless open_flags say otherwise).
    explicit Factory(std::filesystem::path path, FactoryOptions options = {})
        : path_(std::move(path)), options_(std::move(options)) {
        if (options_.busy_timeout.count() < 0)
            throw std::invalid_argument("connpool::sqlite::FactoryOptions: busy_timeout must be >= 0 ms, got " +
                                        std::to_string(options_.busy_timeout.count()));
    }

    /// Opens a new connection; throws Error naming the file when SQLite cannot open it.
    [[nodiscard]] Connection create() const {
        int flags = options_.open_flags;
        if ((flags & SQLITE_OPEN_FULLMUTEX) == 0) flags |= SQLITE_OPEN_NOMUTEX;
        auto db = detail::open_db(path_, flags, "SQLite database");
        sqlite3_busy_timeout(db.get(), static_cast<int>(std::min<std::int64_t>(
                                           options_.busy_timeout.count(), INT32_MAX)));
        const std::string context = "setting up a connection to " + detail::quoted(path_) + " failed";
        if (options_.wal) {
            const auto mode = detail::column_texts(db.get(), "PRAGMA journal_mode=WAL", context);
            if (mode.empty() || mode.front() != "wal")
                throw Error("cannot put " + detail::quoted(path_) + " in WAL mode (journal mode stays '" +
                                (mode.empty() ? std::string("?") : mode.front()) + "')",
                            SQLITE_ERROR);
        }
        if (!options_.init_sql.empty()) detail::exec(db.get(), options_.init_sql.c_str(), context);
        return Connection(db.release(), path_);
    }

    /// Returns whether an idle connection still answers (a statement that touches no file, so it
    /// never waits for a lock).
    [[nodiscard]] bool validate(Connection& connection) const noexcept {
        return sqlite3_exec(connection.handle(), "SELECT 1", nullptr, nullptr, nullptr) == SQLITE_OK;
    }

    /// Rolls back a transaction a lease left open; returns false (retire it) if that fails.
    [[nodiscard]] bool reset(Connection& connection) const noexcept {
        if (sqlite3_get_autocommit(connection.handle()) != 0) return true;
        return sqlite3_exec(connection.handle(), "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK;
    }

    /// Returns the database path.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
    FactoryOptions options_;
};

/// How backup_to() copies. Every field has a default.
struct BackupOptions {
    /// Pages copied per step; the source is read-locked only during a step. Default 256 (1 MiB at
    /// 4 KiB pages); -1 = everything in one step.
    int pages_per_step = 256;
    /// Pause between steps, so writers get the database between them. Default 0.
    std::chrono::milliseconds pause{0};
    /// Replace an existing file at the destination (atomically, once the new one is complete).
    /// Default false: an existing destination fails the job, so a typo cannot clobber a file.
    bool overwrite = false;
    /// Check run on the finished copy before it gets its final name. Default integrity.
    Check verify = Check::integrity;
    /// After this many restarts (another connection wrote to the source mid-copy), copy all that
    /// remains in one step, which a stream of writes cannot interrupt. Until then each restart
    /// quadruples the step. Default 3.
    int restarts_before_single_step = 3;
    /// How long the source may stay busy or locked, in a row, before the job fails. Default 30 s.
    std::chrono::milliseconds busy_limit{30'000};
};

/// How restore_from() restores. Every field has a default.
struct RestoreOptions {
    /// Pages copied per step. All steps are one transaction on the target. Default 256; -1 = one step.
    int pages_per_step = 256;
    /// Pause between steps. Default 0.
    std::chrono::milliseconds pause{0};
    /// Check run on the source before the target is touched. Default integrity.
    Check verify_source = Check::integrity;
    /// How long the target may stay busy or locked, in a row, before the job fails. Default 30 s.
    std::chrono::milliseconds busy_limit{30'000};
};

namespace detail {

inline void check_step_options(int pages_per_step, std::chrono::milliseconds pause, std::chrono::milliseconds busy_limit,
                               std::string_view who) {
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

/// Runs an online backup from `source` into `dest` in steps, reporting pages. Returns false if
/// it stopped because the job was cancelled (the destination's transaction is then rolled
/// back by the caller's sqlite3_backup_finish). `db_for_errors` holds SQLite's error message.
struct StepPlan {
    int pages_per_step;
    std::chrono::milliseconds pause;
    std::chrono::milliseconds busy_limit;
    int restarts_before_single_step; // < 0: never escalate
};

inline bool copy_pages(sqlite3_backup* backup, sqlite3* db_for_errors, const StepPlan& plan, ProgressReporter& reporter,
                       const std::string& what) {
    using clock = std::chrono::steady_clock;
    int step = plan.pages_per_step;
    int restarts = 0;
    std::uint64_t base = 0;      // pages copied by attempts that restarted (work redone)
    std::uint64_t copied = 0;    // pages copied by the current attempt, after the last step
    std::uint64_t reported = 0;  // what the reporter has been told
    bool busy = false;
    clock::time_point busy_since{};
    auto busy_pause = std::chrono::milliseconds{1};
    for (;;) {
        if (reporter.stop_requested()) return false;
        const int rc = sqlite3_backup_step(backup, step);
        const int primary = rc & 0xff;
        if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
            const auto now = clock::now();
            if (!busy) {
                busy = true;
                busy_since = now;
                busy_pause = std::chrono::milliseconds{1};
            } else if (now - busy_since >= plan.busy_limit) {
                // Another connection's lock, not a fault of ours: the connection is kept.
                throw OperationError(what + " gave up: the database stayed busy or locked for " +
                                     std::to_string(plan.busy_limit.count()) + " ms (" +
                                     sqlite3_errstr(rc) + ")");
            }
            reporter.count_retry();
            if (sleep_unless_stopped(reporter, busy_pause)) return false;
            busy_pause = std::min(busy_pause * 2, std::chrono::milliseconds{100});
            continue;
        }
        if (rc != SQLITE_OK && rc != SQLITE_DONE) throw_sqlite(db_for_errors, rc, what + " failed");
        busy = false;

        const auto page_count = static_cast<std::uint64_t>(sqlite3_backup_pagecount(backup));
        const auto remaining = static_cast<std::uint64_t>(sqlite3_backup_remaining(backup));
        const std::uint64_t now_copied = page_count - std::min(remaining, page_count);
        // Without a restart a step copies `step` more pages (or all that remain). When another
        // connection has written to the source, SQLite starts over from page 1 within the step,
        // so fewer pages than that count as copied. (A restart inside a step that then copies
        // everything cannot be told from the page counts, and needs no escalation anyway.)
        const std::uint64_t expected =
            step < 0 ? page_count
                     : std::min<std::uint64_t>(copied + static_cast<std::uint64_t>(step), page_count);
        if (rc == SQLITE_OK && copied > 0 && now_copied < expected) {
            base += copied;
            ++restarts;
            reporter.count_restart();
            if (plan.restarts_before_single_step >= 0 && restarts >= plan.restarts_before_single_step) {
                step = -1;
            } else if (step > 0) {
                step = static_cast<int>(std::min<std::int64_t>(std::int64_t{step} * 4, INT32_MAX));
            }
        }
        copied = now_copied;
        reporter.set_total(base + page_count, "pages");
        if (base + copied > reported) {
            reporter.advance(base + copied - reported);
            reported = base + copied;
        }
        if (rc == SQLITE_DONE) return true;
        if (plan.pause.count() > 0 && sleep_unless_stopped(reporter, plan.pause)) return false;
    }
}

/// Removes a temporary backup file and SQLite's companions of it, unless committed.
class TempFile {
public:
    explicit TempFile(std::filesystem::path path) : path_(std::move(path)) {}
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() {
        if (committed_) return;
        for (const char* suffix : {"", "-journal", "-wal", "-shm"}) {
            std::error_code ignored;
            std::filesystem::remove(path_.string() + suffix, ignored);
        }
    }
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
    void commit() noexcept { committed_ = true; }

private:
    std::filesystem::path path_;
    bool committed_ = false;
};

/// Flushes the file or directory at `path` to stable storage, or throws OperationError.
inline void fsync_path(const std::filesystem::path& path, int flags, std::string_view what) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
        const int error = errno;
        if (fd >= 0) ::close(fd);
        throw OperationError("cannot flush " + std::string(what) + " " + quoted(path) + " to disk: " + errno_text(error));
    }
    ::close(fd);
}

/// Returns the path of the file behind `db`'s main database ("" for an in-memory one).
inline std::filesystem::path main_file(sqlite3* db) {
    const char* name = sqlite3_db_filename(db, "main");
    return name != nullptr ? std::filesystem::path(name) : std::filesystem::path();
}

inline bool same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
    std::error_code ec;
    return !a.empty() && !b.empty() && std::filesystem::equivalent(a, b, ec) && !ec;
}

inline void run_backup(Connection& connection, const std::filesystem::path& dest, const BackupOptions& options,
                       ProgressReporter& reporter) {
    namespace fs = std::filesystem;
    const std::string what = "backup of " + quoted(connection.path()) + " to " + quoted(dest);

    // Everything that can be wrong with the destination is found before any page is read.
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw OperationError("cannot write backup " + quoted(dest) + ": directory " + quoted(dir) + " does not exist");
    if (fs::exists(fs::symlink_status(dest, ec))) {
        if (same_file(dest, main_file(connection.handle())))
            throw OperationError("cannot write backup " + quoted(dest) + ": it is the source database itself");
        if (!options.overwrite)
            throw OperationError("cannot write backup " + quoted(dest) +
                                 ": the file exists (set BackupOptions::overwrite to replace it)");
        if (fs::is_directory(dest, ec))
            throw OperationError("cannot write backup " + quoted(dest) + ": it is a directory");
    }

    // The copy is made under a temporary name in the same directory (so the final rename is
    // atomic), created owner-read/write only by mkstemp; SQLite's journal inherits that mode.
    std::string pattern = (dir / ("." + dest.filename().string() + ".tmp-XXXXXX")).string();
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) {
        const int error = errno;
        throw OperationError("cannot write backup " + quoted(dest) + ": cannot create a file in " + quoted(dir) + ": " +
                             errno_text(error));
    }
    // Closed before SQLite opens the file: closing any descriptor of a file drops the process's
    // POSIX locks on it, including SQLite's.
    ::close(fd);
    TempFile temp{fs::path(pattern)};

    {
        DbPtr dest_db = open_db(temp.path(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, "backup file");
        // No journal and no syncs while copying: if anything fails the file is deleted, and it is
        // fsynced once, whole, before it is renamed into place.
        exec(dest_db.get(), "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", what + " failed");
        BackupPtr backup(sqlite3_backup_init(dest_db.get(), "main", connection.handle(), "main"));
        if (!backup) throw_sqlite(dest_db.get(), sqlite3_errcode(dest_db.get()), what + " could not start");
        const StepPlan plan{options.pages_per_step, options.pause, options.busy_limit,
                            options.restarts_before_single_step};
        reporter.set_phase("copying");
        if (!copy_pages(backup.get(), dest_db.get(), plan, reporter, what)) return; // cancelled
        const int rc = sqlite3_backup_finish(backup.release());
        if (rc != SQLITE_OK) throw_sqlite(dest_db.get(), rc, what + " failed");
        // A copy of a WAL database says WAL in its header, so merely opening it (even read-only)
        // would create -wal and -shm files beside it. A backup is a single, portable file.
        exec(dest_db.get(), "PRAGMA journal_mode=DELETE", what + " failed");

        if (options.verify != Check::none) reporter.set_phase("verifying");

        if (const auto problems = check_problems(dest_db.get(), options.verify, what + ": verifying the copy failed");
            !problems.empty())
            throw Error(what + ": the copy failed its check:\n" + problems, SQLITE_CORRUPT);
        const int close_rc = sqlite3_close(dest_db.release());
        if (close_rc != SQLITE_OK) throw Error(what + ": closing the copy failed", close_rc);
    }
    reporter.set_phase("syncing");
    fsync_path(temp.path(), O_RDONLY, "backup file");

    if (reporter.stop_requested()) return; // last chance to cancel before the file appears
    if (options.overwrite) {
        if (::rename(temp.path().c_str(), dest.c_str()) != 0) {
            const int error = errno;
            throw OperationError("cannot write backup " + quoted(dest) + ": " + errno_text(error));
        }
    } else {
        // link() fails if the name exists, so a file that appeared meanwhile is never replaced.
        if (::link(temp.path().c_str(), dest.c_str()) != 0) {
            const int error = errno;
            throw OperationError("cannot write backup " + quoted(dest) + ": " +
                                 (error == EEXIST ? std::string("the file exists (set BackupOptions::overwrite to replace it)")
                                                  : errno_text(error)));
        }
        ::unlink(temp.path().c_str());
    }
    temp.commit();
    fsync_path(dir, O_RDONLY | O_DIRECTORY, "directory"); // makes the new name durable
}

/// What the first 100 bytes of a file say about it as a SQLite database.
struct HeaderInfo {
    std::uint32_t page_size = 0;
    std::uint64_t page_count = 0; // 0 when the header's count is not known to be valid
};

/// Reads and sanity-checks the header of the would-be SQLite database at `path`; throws an
/// OperationError naming the file and what is wrong with it.
inline HeaderInfo read_header(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (!fs::exists(status)) throw OperationError("restore source " + quoted(path) + " does not exist");
    if (!fs::is_regular_file(status)) throw OperationError("restore source " + quoted(path) + " is not a regular file");
    const auto size = fs::file_size(path, ec);
    if (ec) throw OperationError("cannot read restore source " + quoted(path) + ": " + ec.message());
    if (size == 0) throw OperationError("restore source " + quoted(path) + " is empty");

    std::array<unsigned char, 100> header{};
    std::ifstream in(path, std::ios::binary);
    if (!in) throw OperationError("cannot read restore source " + quoted(path) + ": " + errno_text(errno));
    in.read(reinterpret_cast<char*>(header.data()), static_cast<std::streamsize>(header.size()));
    static constexpr std::string_view magic{"SQLite format 3\0", 16};
    if (in.gcount() < 16 || std::string_view(reinterpret_cast<const char*>(header.data()), 16) != magic)
        throw OperationError("restore source " + quoted(path) + " is not a SQLite database (no SQLite header)");
    if (in.gcount() < static_cast<std::streamsize>(header.size()))
        throw OperationError("restore source " + quoted(path) + " is truncated (" + std::to_string(size) +
                             " bytes, shorter than a SQLite header)");

    auto be32 = [&](std::size_t at) {
        return (std::uint32_t{header[at]} << 24) | (std::uint32_t{header[at + 1]} << 16) |
               (std::uint32_t{header[at + 2]} << 8) | std::uint32_t{header[at + 3]};
    };
    HeaderInfo info;
    const std::uint32_t raw_page_size = (std::uint32_t{header[16]} << 8) | header[17];
    info.page_size = raw_page_size == 1 ? 65536 : raw_page_size;
    if (info.page_size < 512 || info.page_size > 65536 || (info.page_size & (info.page_size - 1)) != 0)
        throw OperationError("restore source " + quoted(path) + " is not a valid SQLite database (page size " +
                             std::to_string(raw_page_size) + ")");
    // The page count in the header is valid only when its change counter matches (SQLite >= 3.7.0).
    if (be32(24) == be32(92) && be32(28) != 0) info.page_count = be32(28);
    const std::uint64_t expected = info.page_count * info.page_size;
    if (size % info.page_size != 0 || size < expected)
        throw OperationError("restore source " + quoted(path) + " is truncated (" + std::to_string(size) +
                             " bytes; its header says " + std::to_string(info.page_count) + " pages of " +
                             std::to_string(info.page_size) + " bytes)");
    return info;
}

inline void run_restore(Connection& connection, const std::filesystem::path& source, const RestoreOptions& options,
                        ProgressReporter& reporter) {
    const std::string what = "restore of " + quoted(connection.path()) + " from " + quoted(source);
    const HeaderInfo header = read_header(source);
    if (same_file(source, main_file(connection.handle())))
        throw OperationError("cannot restore from " + quoted(source) + ": it is the target database itself");

    // The source is opened read-only and checked whole before the target is touched.
    DbPtr source_db;
    if (options.verify_source != Check::none) reporter.set_phase("checking source");
    try {
        source_db = open_db(source, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, "restore source");
        const auto problems = check_problems(source_db.get(), options.verify_source,
                                             "restore source " + quoted(source) + " cannot be read");
        if (!problems.empty())
            throw OperationError("restore source " + quoted(source) + " failed its check:\n" + problems);
    } catch (const Error& e) { // the source is bad, not the connection: keep the connection
        throw OperationError(e.what());
    }

    if (sqlite3_get_autocommit(connection.handle()) == 0)
        throw OperationError("cannot restore into " + quoted(connection.path()) + ": its connection is inside a transaction");
    // SQLite cannot change the page size of a database in WAL mode, and would fail mid-way.
    const auto mode = column_texts(connection.handle(), "PRAGMA main.journal_mode", what + " failed");
    const auto target_page_size = connection.query_int("PRAGMA main.page_size");
    if (!mode.empty() && mode.front() == "wal" && target_page_size != header.page_size)
        throw OperationError("cannot restore " + quoted(source) + " into " + quoted(connection.path()) +
                             ": its page size (" + std::to_string(header.page_size) + ") differs from the target's (" +
                             std::to_string(target_page_size) +
                             ") and the target is in WAL mode, whose page size SQLite cannot change");

    // The backup API holds one write transaction on the target from the first step to the last,
    // so finishing early rolls it all back. (In WAL mode readers keep seeing the old contents
    // until it commits; in rollback mode the target is locked exclusively from the first step,
    // so an open reader makes the steps busy.)
    BackupPtr backup(sqlite3_backup_init(connection.handle(), "main", source_db.get(), "main"));
    if (!backup) throw_sqlite(connection.handle(), sqlite3_errcode(connection.handle()), what + " could not start");
    const StepPlan plan{options.pages_per_step, options.pause, options.busy_limit, -1};
    reporter.set_phase("copying");
    if (!copy_pages(backup.get(), connection.handle(), plan, reporter, what)) return; // cancelled: rolled back
    const int rc = sqlite3_backup_finish(backup.release());
    if (rc != SQLITE_OK) throw_sqlite(connection.handle(), rc, what + " failed");

    // A copy of a WAL database carries WAL in its header, which would switch a rollback-journal
    // target to WAL (and back the other way): the target keeps the journal mode it had.
    const std::string old_mode = mode.empty() ? std::string("delete") : mode.front();
    const auto new_mode = column_texts(connection.handle(), "PRAGMA main.journal_mode", what + " failed");
    if ((old_mode == "wal") != (!new_mode.empty() && new_mode.front() == "wal") &&
        std::all_of(old_mode.begin(), old_mode.end(), [](char c) { return c >= 'a' && c <= 'z'; }))
        exec(connection.handle(), ("PRAGMA main.journal_mode=" + old_mode).c_str(), what + " failed");
}

} // namespace detail

/// Returns a job that copies the leased connection's main database to a new file at `dest`,
/// with SQLite's online backup API, safe while other connections write. Progress is in pages.
/// The copy is written to a temporary file (mode 0600) beside `dest`, checked, fsynced and
/// renamed into place; a failed or cancelled backup leaves neither. Throws
/// std::invalid_argument at once for invalid options.
[[nodiscard]] inline Job<Connection> backup_to(std::filesystem::path dest, BackupOptions options = {}) {
    detail::check_step_options(options.pages_per_step, options.pause, options.busy_limit, "connpool::sqlite::BackupOptions");
    if (dest.empty()) throw std::invalid_argument("connpool::sqlite::backup_to: the destination path is empty");
    std::string name = dest.filename().string();
    return Job<Connection>{std::move(name), JobKind::backup,
                           [dest = std::move(dest), options](Connection& connection, ProgressReporter& reporter) {
                               detail::run_backup(connection, dest, options, reporter);
                           }};
}

/// Returns a job that replaces the leased connection's main database with the one in the file
/// `source`. The source is checked first (exists, is a SQLite database, not truncated, passes
/// RestoreOptions::verify_source, compatible page size); then it is copied in one transaction,
/// so a bad source or a failed or cancelled restore leaves the target untouched. Progress is in
/// pages. Throws std::invalid_argument at once for invalid options.
[[nodiscard]] inline Job<Connection> restore_from(std::filesystem::path source, RestoreOptions options = {}) {
    detail::check_step_options(options.pages_per_step, options.pause, options.busy_limit, "connpool::sqlite::RestoreOptions");
    if (source.empty()) throw std::invalid_argument("connpool::sqlite::restore_from: the source path is empty");
    std::string name = source.filename().string();
    return Job<Connection>{std::move(name), JobKind::restore,
                           [source = std::move(source), options](Connection& connection, ProgressReporter& reporter) {
                               detail::run_restore(connection, source, options, reporter);
                           }};
}

} // namespace connpool::sqlite
