#pragma once

// sqlite::backup_to: an online backup of a pooled connection's database into a new file that
// appears under its final name only when it is complete, verified and durable (io::TempFile).

#include <chrono>
#include <cstddef>
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
#include "page_checksums.hpp"
#include "step_copier.hpp"

namespace connpool::sqlite {

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
    /// Check run on the finished copy before it gets its final name. Default Check::pages: a
    /// checksum of every page as SQLite wrote it from the snapshot, compared with the file read
    /// back (every page there, none lost, torn or changed on its way to the file system; read
    /// while the file is fsynced), and the copy opens and its schema reads. Check::quick /
    /// Check::integrity run SQLite's structural checks instead (which also find corruption the
    /// source already had), at several times the cost (see the README's backup benchmark).
    Check verify = Check::pages;
    /// After this many restarts (another connection wrote to the source mid-copy), copy all that
    /// remains in one step, which a stream of writes cannot interrupt. Until then each restart
    /// quadruples the step. Default 3.
    int restarts_before_single_step = 3;
    /// How long the source may stay busy or locked, in a row, before the job fails. Default 30 s.
    /// Kept to within a step: the connection's own busy timeout is suspended during the copy.
    std::chrono::milliseconds busy_limit{30'000};
    /// With Check::pages, drop the copy's cached pages before reading it back, so the read-back
    /// comes from the storage device (it also catches what the device loses or garbles), at the
    /// cost of reading the whole file from it. Default false: read back through the page cache.
    bool verify_from_storage = false;
};

/// Removes the temp files that killed or crashed backups to `dest` left beside it (and their
/// SQLite companions), but never the temp file of a backup still running, in this process or
/// another. backup_to() does this itself before each backup. Returns how many it removed;
/// throws io::Error when dest's directory cannot be listed.
inline std::size_t remove_stale_temps(const std::filesystem::path& dest) {
    return io::remove_stale_temps(dest, {"-journal", "-wal", "-shm"});
}

namespace detail {

/// Throws an OperationError for every destination that must not be written, before any page is read.
inline void check_destination(const std::filesystem::path& dest, sqlite3* source, bool overwrite) {
    namespace fs = std::filesystem;
    const std::string who = "cannot write backup " + quoted(dest);
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    std::error_code ec;
    const auto dir_status = fs::status(dir, ec);
    if (!fs::exists(dir_status)) throw OperationError(who + ": directory " + quoted(dir) + " does not exist");
    if (!fs::is_directory(dir_status)) throw OperationError(who + ": " + quoted(dir) + " is not a directory");
    const fs::path source_file = main_file(source);
    if (const auto [base, suffix] = companion_of(dest, source_file); !base.empty())
        throw OperationError(who + ": it is SQLite's " + std::string(suffix) + " file of the database " + quoted(base) +
                             ", and replacing it would lose or corrupt that database's data");
    const auto status = fs::symlink_status(dest, ec);
    if (!fs::exists(status)) return;
    if (fs::is_directory(fs::status(dest, ec))) throw OperationError(who + ": it is a directory");
    if (same_file(dest, source_file)) throw OperationError(who + ": it is the source database itself");
    if (!overwrite) throw OperationError(who + ": the file exists (set BackupOptions::overwrite to replace it)");
    // SQLite would take a journal or WAL left beside the old file for the new file's, and roll
    // the new file back with the old file's pages (or replay old frames into it).
    for (const std::string_view suffix : {std::string_view{"-journal"}, std::string_view{"-wal"}}) {
        const fs::path companion = dest.string() + std::string(suffix);
        if (fs::exists(fs::symlink_status(companion, ec)))
            throw OperationError(who + ": " + quoted(companion) +
                                 " exists beside it, and SQLite would apply it to the new file; if no program has "
                                 "the database open, open it once with sqlite3 to settle it, or remove it");
    }
}

inline void run_backup(Connection& connection, const std::filesystem::path& dest, const BackupOptions& options,
                       ProgressReporter& reporter) {
    const std::string what = "backup of " + quoted(connection.path()) + " to " + quoted(dest);
    try {
        check_destination(dest, connection.handle(), options.overwrite);
        remove_stale_temps(dest);
        // The copy is made under a temporary name in the same directory (so publishing is an
        // atomic rename), created owner-only and locked for as long as it is being written.
        io::TempFile temp(dest, options.overwrite ? io::Publish::replace : io::Publish::no_replace,
                          {"-journal", "-wal", "-shm"});
        PageChecksums checksums;
        const bool by_pages = options.verify == Check::pages;
        {
            DbPtr dest_db = by_pages ? checksums.open(temp.path())
                                     : open_db(temp.path(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, "backup file");
            // No journal and no syncs while copying: if anything fails the file is deleted, and it
            // is fsynced once, whole, before it is published.
            exec(dest_db.get(), "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", what + " failed");
            BackupPtr backup(sqlite3_backup_init(dest_db.get(), "main", connection.handle(), "main"));
            if (!backup) throw_sqlite(dest_db.get(), sqlite3_errcode(dest_db.get()), what + " could not start");
            const StepPlan plan{options.pages_per_step, options.pause, options.busy_limit,
                                options.restarts_before_single_step};
            reporter.set_phase("copying");
            bool done = false;
            {
                const NoBusyWait no_busy_wait(connection.handle());
                try {
                    done = copy_pages(backup, {dest_db.get(), connection.handle()}, plan, reporter, what,
                                      {connection.path().string(), temp.path().string()});
                } catch (const Error& e) {
                    // The destination's disk, not the source connection, failed: keep the connection.
                    if (is_write_error(e.code())) throw OperationError(e.what());
                    throw;
                }
            }
            if (!done) return; // cancelled
            if (const int rc = sqlite3_backup_finish(backup.release()); rc != SQLITE_OK) {
                if (is_write_error(rc))
                    throw OperationError(what + " failed writing " + quoted(temp.path()) + ": " + describe(rc));
                throw Error(what + " failed: " + describe(rc), rc);
            }
            // A copy of a WAL database says WAL in its header, so merely opening it (even
            // read-only) would create -wal and -shm files beside it. A backup is one portable file.
            exec(dest_db.get(), "PRAGMA journal_mode=DELETE", what + " failed");

            if (options.verify != Check::none) reporter.set_phase("verifying");
            std::string problems;
            try {
                problems = check_problems(dest_db.get(), options.verify, what + ": verifying the copy failed");
            } catch (const Error& e) { // the copy is bad, not the source connection
                throw OperationError(e.what());
            }
            if (!problems.empty()) throw OperationError(what + ": the copy failed its check:\n" + problems);
            if (const int rc = sqlite3_close(dest_db.release()); rc != SQLITE_OK)
                throw OperationError(what + ": closing the copy failed: " + describe(rc));
        }
        if (by_pages && !options.verify_from_storage) {
            // Read back through the page cache, which holds the same bytes before the fsync as
            // after it: so the read-back runs while the fsync waits for the device. (One phase
            // name, of the length of the others: progress views lay phases out in columns.)
            reporter.set_phase("verifying");
            temp.sync_while([&] { checksums.verify(temp.fd(), temp.path(), what); });
        } else {
            reporter.set_phase("syncing");
            temp.sync();
            if (by_pages) {
                reporter.set_phase("verifying");
                // Read back from storage, not from the page cache that still holds what was written.
                temp.drop_cached_pages();
                checksums.verify(temp.fd(), temp.path(), what);
            }
        }
        if (reporter.stop_requested()) return; // last chance to cancel before the file appears
        temp.publish();
    } catch (const io::Error& e) {
        throw OperationError(what + ": " + e.what());
    }
}

} // namespace detail

/// Returns a job that copies the leased connection's main database to a new file at `dest`,
/// with SQLite's online backup API, safe while other connections write. Progress is in the
/// database's pages (restarts counted apart). The copy is written to a locked temp file (mode
/// 0600) beside `dest`, verified (BackupOptions::verify), fsynced and published under its final
/// name, never replacing a file unless BackupOptions::overwrite; a failed or cancelled backup
/// leaves neither, and stale temp files of killed backups to `dest` are removed first. Refuses
/// SQLite's companion files (-wal, -shm, -journal) as destinations. Throws
/// std::invalid_argument at once for invalid options.
[[nodiscard]] inline Job<Connection> backup_to(std::filesystem::path dest, BackupOptions options = {}) {
    detail::check_step_options(options.pages_per_step, options.pause, options.busy_limit,
                               "connpool::sqlite::BackupOptions");
    if (dest.empty()) throw std::invalid_argument("connpool::sqlite::backup_to: the destination path is empty");
    std::string name = dest.filename().string();
    return Job<Connection>{std::move(name), JobKind::backup,
                           [dest = std::move(dest), options](Connection& connection, ProgressReporter& reporter) {
                               detail::run_backup(connection, dest, options, reporter);
                           }};
}

} // namespace connpool::sqlite
