#pragma once

// mysql::restore_table: a table backup file checked whole (header, checksum, counts, columns
// against the table) before anything is touched, then, in one InnoDB transaction, DELETE FROM +
// LOAD DATA LOCAL INFILE fed from the file (load_data.hpp), so the table's contents become the
// backup's or (any error, a warning, a cancel, a file that changed meanwhile) stay what they
// were: the transaction is rolled back. Not TRUNCATE: it commits implicitly in MySQL.

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <mysql.h>

#include "../io/manifest.hpp" // FileIdentity
#include "../io/table_file.hpp"
#include "../jobs.hpp"
#include "cancel.hpp"
#include "connection.hpp"
#include "error.hpp"
#include "factory.hpp"
#include "load_data.hpp"
#include "table.hpp"
#include "table_backup.hpp" // SavedSession, check_lock_timeout
#include "table_catalog.hpp"
#include "table_file.hpp"

namespace connpool::mysql {

/// How restore_table() loads. Every field has a default.
struct TableRestoreOptions {
    /// How long to wait for the table's locks when another session holds them (the metadata lock,
    /// lock_wait_timeout, and InnoDB row locks, innodb_lock_wait_timeout), whole seconds, 1 to
    /// 31536000 (MySQL's smallest is 1). Default 1 s: a table in use fails fast, saying so.
    std::chrono::seconds lock_timeout{1};
    /// The file's identity when a caller read it whole and checked it against a size and checksum
    /// recorded when it was published (restore_database's manifest check, ManifestEntry::checked).
    /// While the file still has it, the check pass before the transaction is skipped (the file is
    /// not read twice); the load checks the checksum and the counts anyway, and any mismatch
    /// rolls the restore back. Default none: the file is checked whole first.
    std::optional<io::FileIdentity> checked{};
};

namespace detail {

/// Returns the server's warnings for the last statement, "Level Code Message; ...", at most five.
inline std::string warnings_text(Connection& c) {
    std::string out;
    const Rows r = c.query("SHOW WARNINGS LIMIT 5");
    for (const auto& row : r.rows)
        out += (out.empty() ? "" : "; ") + row[0].value_or("") + " " + row[1].value_or("") + ": " + row[2].value_or("");
    return out;
}

/// Restores `table` on `c`. `created_by_set`: a database restore created the table a moment ago
/// (empty, nobody else's yet), so one with an engine without transactions (MyISAM, Aria) may be
/// loaded too (a failure leaves it partly filled, and the set, failing, says so), and the rows are
/// added to it without deleting first (its chunks load side by side, each from its own file).
/// `beside_other_chunks`: other chunks of the table load at the same time, so unique checks stay
/// on: with them and foreign key checks off, MariaDB 10.6+ loads into an empty table in bulk under
/// a table lock (MDEV-24621), and the other chunks waited for it until lock_timeout failed them.
inline void run_table_restore(const Factory& factory, Connection& c, const Table& table,
                              const std::filesystem::path& src, const TableRestoreOptions& options,
                              ProgressReporter& reporter, bool created_by_set = false,
                              bool beside_other_chunks = false) {
    const std::string what = "restore of table " + table.quoted() + " from " + file_quoted(src);
    reporter.set_phase("checking the file");
    // A file that cannot be used says so (naming it); the connection is untouched and goes back.
    std::optional<TableFileReader> opened;
    try {
        if (!io::opened_as_checked(src, options.checked, [&] { opened.emplace(src); }) &&
            !opened->data().read_data([&](const char*, std::size_t) { return !reporter.stop_requested(); }))
            return;
    } catch (const io::Error& e) {
        throw OperationError(e.what());
    }
    TableFileReader& file = *opened;
    const TableFileHeader& header = file.header();
    const std::uint64_t rows = file.data().rows();

    const TableInfo info = table_info(c, table, what);
    if (info.engine != "InnoDB" && !created_by_set)
        throw OperationError(what + ": " + table.quoted() + " in database '" + info.database + "' uses the " +
                             info.engine + " engine; a restore needs InnoDB's transactions to be all-or-nothing");
    const auto columns = table_columns(c, table);
    if (columns != header.columns)
        throw OperationError(what + ": the table's columns " + describe_columns(columns) + " differ from the backup's " +
                             describe_columns(header.columns) + "; nothing was changed");
    reporter.set_total(file.data().data_bytes(), "bytes");

    const SavedSession saved = SavedSession::read(
        c, {"time_zone", "foreign_key_checks", "unique_checks", "sql_mode", "lock_wait_timeout", "innodb_lock_wait_timeout"});
    // As myloader loads: no foreign key or unique checks row by row (the rows were consistent when
    // they were read). TIMESTAMPs were written in UTC. NO_AUTO_VALUE_ON_ZERO keeps an
    // AUTO_INCREMENT 0 a 0; strict mode makes a value that does not fit an error, not a warning.
    const std::string timeout = std::to_string(options.lock_timeout.count());
    c.exec(std::string("SET SESSION time_zone = '+00:00', foreign_key_checks = 0, unique_checks = ") +
           (beside_other_chunks ? "1" : "0") +
           ", sql_mode = 'NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', lock_wait_timeout = " +
           timeout + ", innodb_lock_wait_timeout = " + timeout + "; START TRANSACTION");
    bool committed = false;
    auto put_back = [&](bool commit) {
        c.exec(std::string(commit ? "COMMIT; " : "ROLLBACK; ") + saved.restore_sql());
        committed = commit;
    };
    MYSQL* mysql = c.handle();
    try {
        // A table the set created is empty, and its chunks load beside each other in their own
        // transactions: a DELETE would take the rows another chunk committed.
        if (!created_by_set) {
            reporter.set_phase("deleting the old rows");
            {
                CancelOnStop guard{factory, c, reporter}; // a DELETE of many rows takes a while
                c.exec("DELETE FROM " + table.quoted());
            }
            if (reporter.stop_requested()) return put_back(false);
        }

        reporter.set_phase("loading");
        const std::string sql = load_data_sql(table.quoted(), header.columns);
        std::uint64_t loaded = 0;
        int query_rc = 0;
        bool stopped = false;
        std::exception_ptr failure;
        {
            LocalInfileSource source(mysql, file.data(), [&](std::size_t n) {
                if (reporter.stop_requested()) return false;
                reporter.advance(n);
                return true;
            });
            // After the last byte the server may still be busy with the rows (indexes): a stop
            // then kills the statement.
            CancelOnStop guard{factory, c, reporter};
            query_rc = mysql_real_query(mysql, sql.data(), sql.size());
            stopped = source.stopped();
            failure = source.failure();
        }
        if (stopped || (query_rc != 0 && mysql_errno(mysql) == errc::query_interrupted && reporter.stop_requested()))
            return put_back(false);
        if (failure) {
            // The file changed since it was checked: the statement ended with an error, so roll
            // back and say what the file's check found.
            try {
                std::rethrow_exception(failure);
            } catch (const io::Error& e) {
                throw OperationError(std::string(e.what()) + " (while " + what + "); the table was left unchanged");
            }
        }
        if (query_rc != 0) {
            const unsigned int code = mysql_errno(mysql);
            // ER_NOT_ALLOWED_COMMAND (MariaDB), ER_CLIENT_LOCAL_FILES_DISABLED (MySQL 8), CR_LOAD_DATA_LOCAL_INFILE_REJECTED
            if (code == 1148 || code == 3948 || code == 2068)
                detail::throw_last(mysql, what + " failed: LOAD DATA LOCAL INFILE is disabled (turn on the server's "
                                                 "local_infile and keep FactoryOptions::local_infile)",
                                   factory.connect_options().password);
            detail::throw_last(mysql, what + " failed", factory.connect_options().password);
        }
        loaded = c.affected_rows();
        // With LOCAL the server turns data errors into warnings (it cannot stop the client's
        // stream): any warning means a row did not load as it was backed up.
        if (mysql_warning_count(mysql) != 0)
            throw OperationError(what + ": the server warned while loading (" + warnings_text(c) +
                                 "); the table was left unchanged");
        if (loaded != rows)
            throw OperationError(what + ": the server took " + std::to_string(loaded) + " rows; the backup has " +
                                 std::to_string(rows) + "; the table was left unchanged");
        if (reporter.stop_requested()) return put_back(false); // last chance: roll back
        put_back(true);
    } catch (const OperationError&) {
        // The connection is fine: roll back here so the pool gets it back clean.
        if (!committed) put_back(false);
        throw;
    } catch (const Error& e) {
        if (e.code() != errc::lock_wait_timeout) throw;
        throw Error(what + " failed: another session holds a lock on the table or its rows (LOCK TABLES, ALTER "
                           "TABLE, a transaction that changed them); waited TableRestoreOptions::lock_timeout = " +
                        timeout + " s: " + e.what(),
                    e.code(), e.sqlstate());
    }
    reporter.set_phase("done: " + std::to_string(rows) + " rows");
}

} // namespace detail

/// Returns a job that makes `table`'s contents (in the connection's database) equal those of the
/// table backup at `src`: the file is checked first (magic, header, checksum, data size and row
/// count, the columns and their types against the table's, an InnoDB table), then one
/// transaction deletes the table's rows and loads the backup's with LOAD DATA LOCAL INFILE
/// streamed from the file (foreign key and unique checks off for the session, as myloader does,
/// and put back afterwards). Any failure, a warning from the load, a row count that differs or a
/// cancel rolls back, leaving the table as it was. Progress is in bytes of text (exact). A stop
/// during a long statement kills it on the server (KILL QUERY over a connection `factory`
/// opens). Throws std::invalid_argument for bad options.
[[nodiscard]] inline Job<Connection> restore_table(Factory factory, Table table, std::filesystem::path src,
                                                   TableRestoreOptions options = {}) {
    if (src.empty()) throw std::invalid_argument("connpool::mysql::restore_table: the source path is empty");
    detail::check_lock_timeout(options.lock_timeout, "TableRestoreOptions");
    std::string name = table.quoted();
    return Job<Connection>{std::move(name), JobKind::restore,
                           [factory = std::move(factory), table = std::move(table), src = std::move(src),
                            options](Connection& c, ProgressReporter& reporter) {
                               detail::run_table_restore(factory, c, table, src, options, reporter);
                           }};
}

} // namespace connpool::mysql
