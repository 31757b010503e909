#pragma once

// The SQLite adapter's error type and the RAII handles every part of it uses (database,
// statement, backup). Standard library and sqlite3.h only.

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sqlite3.h>

#include "../errors.hpp"

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
// (A non-template exact match, so ADL's std::quoted never wins for a std::string.)
inline std::string quoted(const std::string& path) { return "'" + path + "'"; }

/// Returns SQLite's description of `rc` ("database or disk is full"), and the code.
inline std::string describe(int rc) {
    return std::string(sqlite3_errstr(rc)) + " (SQLite code " + std::to_string(rc) + ")";
}

/// Throws an Error for `rc`, with `db`'s message when `db` is the handle that failed with it.
/// (Some APIs, the backup API among them, fail without setting the handle's error: then the
/// handle says "not an error", and the message comes from the code instead.)
[[noreturn]] inline void throw_sqlite(sqlite3* db, int rc, const std::string& what) {
    std::string message = sqlite3_errstr(rc);
    if (db != nullptr && sqlite3_extended_errcode(db) == rc) message = sqlite3_errmsg(db);
    throw Error(what + ": " + message + " (SQLite code " + std::to_string(rc) + ")", rc);
}

/// Closes a database handle; sqlite3_close_v2 defers the close until its statements finish.
struct CloseDb {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, CloseDb>;

/// Opens `path` with `flags` (through the VFS named `vfs`, default: SQLite's), or throws an
/// Error naming the path.
inline DbPtr open_db(const std::filesystem::path& path, int flags, std::string_view purpose,
                     const char* vfs = nullptr) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, vfs);
    DbPtr db(raw);
    if (rc != SQLITE_OK) throw_sqlite(db.get(), rc, "cannot open " + std::string(purpose) + " " + quoted(path));
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

/// Returns the first row's first column of `sql` as text ("" without a row).
inline std::string first_text(sqlite3* db, const char* sql, std::string_view context) {
    const auto rows = column_texts(db, sql, context);
    return rows.empty() ? std::string() : rows.front();
}

/// Finishes a backup object (releasing its locks) when it goes out of scope.
struct FinishBackup {
    void operator()(sqlite3_backup* backup) const noexcept { sqlite3_backup_finish(backup); }
};
using BackupPtr = std::unique_ptr<sqlite3_backup, FinishBackup>;

} // namespace detail
} // namespace connpool::sqlite
