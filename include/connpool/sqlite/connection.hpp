#pragma once

// A pooled SQLite connection and the Factory that opens them. This is all a program that only
// pools SQLite connections needs: it includes neither the job layer nor any POSIX header.
// Link connpool::sqlite (it brings libsqlite3).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>

#include <sqlite3.h>

#include "error.hpp"

namespace connpool::sqlite {

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
        sqlite3_busy_timeout(db.get(),
                             static_cast<int>(std::min<std::int64_t>(options_.busy_timeout.count(), INT32_MAX)));
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

} // namespace connpool::sqlite
