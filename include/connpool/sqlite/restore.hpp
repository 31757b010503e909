#pragma once

// sqlite::restore_from: replaces a pooled connection's database with a backup file, all or
// nothing. The source is first copied to a private, locked snapshot beside the target and
// checked there, so whatever happens to the source file afterwards cannot reach the target.

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>

#include <sqlite3.h>

#include "../io/durable_file.hpp"
#include "../jobs.hpp"
#include "check.hpp"
#include "connection.hpp"
#include "error.hpp"
#include "files.hpp"
#include "header.hpp"
#include "step_copier.hpp"

namespace connpool::sqlite {

/// How restore_from() restores. Every field has a default.
struct RestoreOptions {
    /// Pages copied by the first step; later steps double while each takes under 50 ms (the
    /// target is locked from the first step to the last anyway). All steps are one transaction
    /// on the target. Default 256; -1 = one step.
    int pages_per_step = 256;
    /// Pause between steps. Default 0.
    std::chrono::milliseconds pause{0};
    /// Check run on the snapshot of the source before the target is touched. Default integrity.
    /// (Check::pages is a backup's check; for a source it means Check::quick.)
    Check verify_source = Check::integrity;
    /// How long the source or the target may stay busy or locked, in a row, before the job
    /// fails. Default 30 s. The target connection's own busy timeout is suspended meanwhile.
    std::chrono::milliseconds busy_limit{30'000};
    /// Open the source with SQLite's `immutable` flag: no locks, no -shm, so a WAL source on
    /// read-only media can be read. Only for a source nothing writes to. Default false.
    bool immutable_source = false;
};

namespace detail {

/// Returns an SQLite URI ("file:...?immutable=1") for `path`, percent-encoding what URIs reserve.
inline std::string immutable_uri(const std::filesystem::path& path) {
    std::error_code ec;
    const std::string full = std::filesystem::absolute(path, ec).string();
    std::string uri = "file:";
    static constexpr char hex[] = "0123456789ABCDEF";
    for (const unsigned char c : full) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '-' ||
            c == '_' || c == '.' || c == '~') {
            uri += static_cast<char>(c);
        } else {
            uri += '%';
            uri += hex[c >> 4];
            uri += hex[c & 15];
        }
    }
    return uri + "?immutable=1";
}

/// After a failed copy into the target: makes SQLite roll the target back now (a pager that
/// hit an I/O error rolls back only when it next reads), and throws a plain Error (the
/// connection is then discarded) if a hot journal is still there.
inline void roll_back_now(Connection& connection, const std::string& what) {
    sqlite3_exec(connection.handle(), "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
    const std::filesystem::path file = main_file(connection.handle());
    if (file.empty()) return;
    try {
        refuse_hot_journal(file, "target");
    } catch (const OperationError& e) {
        throw Error(what + " failed, and rolling the target back failed too: " + e.what(), SQLITE_IOERR);
    }
}

inline void run_restore(Connection& connection, const std::filesystem::path& source, const RestoreOptions& options,
                        ProgressReporter& reporter) {
    namespace fs = std::filesystem;
    const std::string what = "restore of " + quoted(connection.path()) + " from " + quoted(source);
    const HeaderInfo header = read_header(source);
    refuse_hot_journal(source);
    const fs::path target_file = main_file(connection.handle());
    if (same_file(source, target_file))
        throw OperationError("cannot restore from " + quoted(source) + ": it is the target database itself");
    if (sqlite3_get_autocommit(connection.handle()) == 0)
        throw OperationError("cannot restore into " + quoted(connection.path()) +
                             ": its connection is inside a transaction");
    const std::string mode = first_text(connection.handle(), "PRAGMA main.journal_mode", what + " failed");
    // Without a journal on disk, a cancelled restore cannot be rolled back (OFF) and a crashed
    // one leaves a half-written file (MEMORY): refuse rather than risk the target.
    if (mode == "off" || mode == "memory")
        throw OperationError("cannot restore into " + quoted(connection.path()) +
                             ": its connection has journal_mode=" + mode +
                             ", with which SQLite cannot roll the target back after a cancel or crash; use a "
                             "connection with journal_mode DELETE, TRUNCATE, PERSIST or WAL");
    // SQLite cannot change the page size of a database in WAL mode, and would fail mid-way.
    const auto target_page_size = connection.query_int("PRAGMA main.page_size");
    if (mode == "wal" && target_page_size != header.page_size)
        throw OperationError("cannot restore " + quoted(source) + " into " + quoted(connection.path()) +
                             ": its page size (" + std::to_string(header.page_size) + ") differs from the target's (" +
                             std::to_string(target_page_size) +
                             ") and the target is in WAL mode, whose page size SQLite cannot change");

    try {
        // 1. A private snapshot of the source, beside the target (same file system, owner-only,
        //    locked), read in one step so it is one consistent state of the source.
        const fs::path target_dir = target_file.empty()             ? fs::temp_directory_path()
                                    : target_file.has_parent_path() ? target_file.parent_path()
                                                                    : fs::path(".");
        const fs::path snapshot_name =
            target_dir / ((target_file.empty() ? std::string("memory") : target_file.filename().string()) + ".restore");
        io::remove_stale_temps(snapshot_name, {"-journal", "-wal", "-shm"});
        io::TempFile snapshot(snapshot_name, io::Publish::replace, {"-journal", "-wal", "-shm"});
        const std::string who = "restore source " + quoted(source);
        reporter.set_phase("reading source");
        DbPtr snap;
        try { // nothing here touches the target: any failure keeps its connection
            snap = open_db(snapshot.path(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, "a snapshot of " + who);
            exec(snap.get(), "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", what + " failed");
            {
                DbPtr source_db;
                try {
                    source_db = options.immutable_source
                                    ? open_db(immutable_uri(source),
                                              SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, who)
                                    : open_db(source, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, who);
                    (void)first_text(source_db.get(), "PRAGMA main.schema_version", who + " cannot be read");
                } catch (const Error& e) {
                    const int primary = e.code() & 0xff;
                    if (header.wal && (primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY))
                        throw OperationError(std::string(e.what()) +
                                             ": the source is in WAL mode, and SQLite cannot create "
                                             "or open its " +
                                             quoted(source.string() + "-shm") +
                                             " (a read-only directory or medium?); copy it to writable storage, or set "
                                             "RestoreOptions::immutable_source if nothing writes to it");
                    throw OperationError(e.what());
                }
                BackupPtr copy(sqlite3_backup_init(snap.get(), "main", source_db.get(), "main"));
                if (!copy)
                    throw_sqlite(snap.get(), sqlite3_errcode(snap.get()), what + " could not start reading the source");
                const StepPlan whole{-1, std::chrono::milliseconds{0}, options.busy_limit, -1, false, false};
                if (!copy_pages(copy, {snap.get(), source_db.get()}, whole, reporter, who + " could not be read",
                                {source.string(), snapshot.path().string()}))
                    return; // cancelled
                if (const int rc = sqlite3_backup_finish(copy.release()); rc != SQLITE_OK)
                    throw OperationError(who + " could not be read: " + describe(rc));
            }
            // The snapshot carries the source's journal mode in its header; a rollback-journal target
            // must not become WAL by adopting it (and a WAL target keeps WAL: the backup API sees to it).
            if (mode != "wal") exec(snap.get(), "PRAGMA journal_mode=DELETE", what + " failed");

            // 2. The snapshot is checked whole before the target is touched.
            if (options.verify_source != Check::none) reporter.set_phase("checking source");
            if (const auto problems = check_problems(
                    snap.get(), options.verify_source == Check::pages ? Check::quick : options.verify_source,
                    who + " cannot be read");
                !problems.empty())
                throw OperationError(who + " failed its check:\n" + problems);
        } catch (const Error& e) {
            throw OperationError(e.what());
        }

        // 3. One write transaction on the target from the first step to the last, so finishing
        //    early rolls it all back. (In WAL mode readers keep seeing the old contents until it
        //    commits; in rollback mode the target is locked exclusively from the first step.)
        BackupPtr backup(sqlite3_backup_init(connection.handle(), "main", snap.get(), "main"));
        if (!backup) throw_sqlite(connection.handle(), sqlite3_errcode(connection.handle()), what + " could not start");
        const StepPlan plan{options.pages_per_step, options.pause, options.busy_limit, -1, true, true};
        reporter.set_phase("copying");
        const NoBusyWait no_busy_wait(connection.handle());
        bool done = false;
        int rc = SQLITE_OK;
        try {
            done = copy_pages(backup, {connection.handle(), snap.get()}, plan, reporter, what,
                              {source.string(), connection.path().string()});
            if (done) rc = sqlite3_backup_finish(backup.release());
        } catch (const OperationError&) {
            backup.reset();
            roll_back_now(connection, what);
            throw;
        } catch (const Error& e) {
            backup.reset();
            roll_back_now(connection, what);
            throw OperationError(e.what()); // rolled back: the connection is as before
        }
        if (!done) return; // cancelled: the transaction is rolled back by `backup`
        if (rc != SQLITE_OK) {
            roll_back_now(connection, what);
            throw OperationError(what + " failed writing " + quoted(connection.path()) + ": " + describe(rc));
        }
    } catch (const io::Error& e) {
        throw OperationError(what + ": " + e.what());
    }
}

} // namespace detail

/// Returns a job that replaces the leased connection's main database with the one in the file
/// `source`. The source is checked first (exists, is a SQLite database, whole pages, no hot
/// journal), copied to a private snapshot beside the target and checked there
/// (RestoreOptions::verify_source); then the snapshot is copied into the target in one
/// transaction, so a bad or changing source, a full disk, a failure or a cancel leaves the target
/// untouched, and the target keeps its journal mode. Targets that could not roll back
/// (journal_mode OFF or MEMORY) are refused. Progress is in the source's pages. Throws
/// std::invalid_argument at once for invalid options.
[[nodiscard]] inline Job<Connection> restore_from(std::filesystem::path source, RestoreOptions options = {}) {
    detail::check_step_options(options.pages_per_step, options.pause, options.busy_limit,
                               "connpool::sqlite::RestoreOptions");
    if (source.empty()) throw std::invalid_argument("connpool::sqlite::restore_from: the source path is empty");
    std::string name = source.filename().string();
    return Job<Connection>{std::move(name), JobKind::restore,
                           [source = std::move(source), options](Connection& connection, ProgressReporter& reporter) {
                               detail::run_restore(connection, source, options, reporter);
                           }};
}

} // namespace connpool::sqlite
