#pragma once

// mysql::backup_table: one table's rows streamed with mysql_use_result (one row in memory at a
// time, however large the table) inside START TRANSACTION WITH CONSISTENT SNAPSHOT, encoded in
// LOAD DATA's text format (load_data.hpp) into a table backup file (table_file.hpp) that appears
// under its final name only when it is complete, durable and read back whole. A stop kills the
// SELECT on the server (CancelOnStop: KILL QUERY from a second connection).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <mysql.h>
#include <zstd.h>

#include "../io/durable_file.hpp"
#include "../io/table_file.hpp"
#include "../jobs.hpp"
#include "cancel.hpp"
#include "connection.hpp"
#include "error.hpp"
#include "factory.hpp"
#include "load_data.hpp"
#include "table.hpp"
#include "table_catalog.hpp"
#include "table_file.hpp"

namespace connpool::mysql {

/// How backup_table() copies. Every field has a default.
struct TableBackupOptions {
    /// Compression of the data. Default zstd (see zstd_level).
    Compression compression = Compression::zstd;
    /// zstd level (1..19; negative = faster). Default 1, as for PostgreSQL: the text shrinks
    /// several times at a cost the row streaming hides.
    int zstd_level = 1;
    /// Replace an existing file at the destination (atomically, once the new one is complete).
    /// Default false: an existing destination fails the job.
    bool overwrite = false;
    /// How long the SELECT waits for the table's metadata lock when another session holds it
    /// exclusively (ALTER TABLE, LOCK TABLES ... WRITE): lock_wait_timeout, whole seconds, 1 to
    /// 31536000. Default 1 s (MySQL's smallest), so a locked table fails fast, saying so.
    std::chrono::seconds lock_timeout{1};
    /// Read the finished file back (checksum, decompression, counts) before publishing it.
    /// Default true.
    bool verify = true;
};

namespace detail {

/// Throws std::invalid_argument for a lock timeout MySQL does not take (lock_wait_timeout).
inline void check_lock_timeout(std::chrono::seconds timeout, const char* options) {
    if (timeout.count() < 1 || timeout.count() > 31536000)
        throw std::invalid_argument(std::string("connpool::mysql::") + options +
                                    ": lock_timeout must be between 1 and 31536000 s, got " +
                                    std::to_string(timeout.count()));
}

/// The session settings a table job changes, read before and put back after, so a pooled
/// connection leaves the job as it came (reset() would too, unless reset_connection is off).
struct SavedSession {
    std::string assignments; // "time_zone = '...', ..." for SET SESSION

    /// Reads the current values of `variables` (names such as "time_zone") on `c`.
    static SavedSession read(Connection& c, std::initializer_list<const char*> variables) {
        std::string sql = "SELECT ";
        for (const char* v : variables) sql += std::string(sql.size() > 7 ? ", " : "") + "@@session." + v;
        const Rows r = c.query(sql);
        SavedSession saved;
        std::size_t i = 0;
        for (const char* v : variables) {
            const Cell& value = r[0][i++];
            // Numeric variables refuse a string ('1'), so digits go back as they came.
            const bool number = value && !value->empty() &&
                                value->find_first_not_of("0123456789.") == std::string::npos;
            saved.assignments += std::string(saved.assignments.empty() ? "" : ", ") + v + " = " +
                                 (!value ? std::string("DEFAULT") : number ? *value : c.quote_string(*value));
        }
        return saved;
    }

    /// Returns the statement that puts them back.
    [[nodiscard]] std::string restore_sql() const { return "SET SESSION " + assignments; }
};

/// The session a backup reads in (UTC TIMESTAMPs, REPEATABLE READ, the metadata-lock wait), before
/// its START TRANSACTION WITH CONSISTENT SNAPSHOT.
inline std::string snapshot_session_sql(std::chrono::seconds lock_timeout) {
    return "SET SESSION time_zone = '+00:00', lock_wait_timeout = " + std::to_string(lock_timeout.count()) +
           "; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ";
}

/// A part of a table for a database backup's chunk: the rows `where` selects (a primary key
/// range), about `estimate` bytes on disk.
struct TableSlice {
    std::string where;
    std::uint64_t estimate = 0;
};

/// Backs `table` up on `c`. `in_snapshot`: `c` is one of a database backup's snapshot sessions,
/// already in its consistent-snapshot transaction with the session set up (database.hpp): the
/// rows are read in that transaction, which stays open for the set's next table. `slice`: only
/// those rows (a chunk of the table), its estimate as the progress total. Returns the published
/// file's digest (for a set's manifest), or nothing when the job was stopped.
inline std::optional<io::FileDigest> run_table_backup(const Factory& factory, Connection& c, const Table& table,
                             const std::filesystem::path& dest, const TableBackupOptions& options,
                             ProgressReporter& reporter, bool in_snapshot = false,
                             const std::optional<TableSlice>& slice = std::nullopt) {
    const std::string what = "backup of table " + table.quoted() + " to " + file_quoted(dest);
    if (const std::string problem = io::destination_problem(dest, options.overwrite); !problem.empty())
        throw OperationError(what + ": " + problem);
    std::optional<io::TempFile> temp_file;
    try {
        io::remove_stale_temps(dest);
        temp_file.emplace(dest, options.overwrite ? io::Publish::replace : io::Publish::no_replace);
    } catch (const io::Error& e) { // nothing was asked of the server yet: the connection is fine
        throw OperationError(what + ": " + e.what());
    }
    io::TempFile& temp = *temp_file;

    const TableInfo info = table_info(c, table, what);
    TableFileHeader header;
    header.database = info.database;
    header.table = table.name;
    header.columns = table_columns(c, table);
    header.server_version = c.server_version();
    header.server_version_num = c.server_version_number();
    header.compression = options.compression;
    const SavedSession saved = in_snapshot ? SavedSession{} : SavedSession::read(c, {"time_zone", "lock_wait_timeout"});

    // TIMESTAMP values are converted to the session's time zone on the way out: UTC makes them
    // exact and lets them come back the same wherever they are restored. The snapshot is the
    // one InnoDB takes at START TRANSACTION WITH CONSISTENT SNAPSHOT (REPEATABLE READ only).
    if (!in_snapshot)
        c.exec(snapshot_session_sql(options.lock_timeout) +
               "; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY");
    reporter.set_total(slice ? slice->estimate : info.data_length, "bytes");
    reporter.set_phase("copying (total estimated from the table's size on disk)");

    io::TableFileWriter writer = table_file_writer(temp.fd(), temp.path(), header, options.zstd_level);
    std::string select = "SELECT ";
    for (std::size_t i = 0; i < header.columns.size(); ++i)
        select += (i > 0 ? "," : "") + quote_identifier(header.columns[i].name);
    select += " FROM " + table.quoted();
    if (slice) select += " WHERE " + slice->where;

    MYSQL* mysql = c.handle();
    std::uint64_t rows = 0;
    bool stopped = false;
    {
        // A stop from here on kills the SELECT on the server: the fetch loop then ends with
        // ER_QUERY_INTERRUPTED instead of reading the rest of the table.
        CancelOnStop guard{factory, c, reporter};
        // A statement killed at our request (ER_QUERY_INTERRUPTED after a stop) is a cancel;
        // anything else that fails is the job's failure.
        auto fail = [&](const char* during) {
            if (mysql_errno(mysql) == errc::query_interrupted && reporter.stop_requested()) return true;
            if (mysql_errno(mysql) == errc::lock_wait_timeout)
                detail::throw_last(mysql,
                                   what + " failed: another session holds a lock on the table (LOCK TABLES, ALTER "
                                          "TABLE, a long transaction's DDL); waited TableBackupOptions::lock_timeout = " +
                                       std::to_string(options.lock_timeout.count()) + " s",
                                   factory.connect_options().password);
            detail::throw_last(mysql, what + " failed" + during, factory.connect_options().password);
        };
        ResultPtr result;
        if (mysql_real_query(mysql, select.data(), select.size()) != 0 ||
            !(result = ResultPtr(mysql_use_result(mysql)))) {
            stopped = fail("");
        } else {
            const unsigned int n = mysql_num_fields(result.get());
            std::string buffer;
            buffer.reserve((1 << 20) + (1 << 16));
            while (MYSQL_ROW row = mysql_fetch_row(result.get())) {
                if (stopped) continue; // read what is in flight until the KILL ends the stream
                append_load_data_row(buffer, row, mysql_fetch_lengths(result.get()), n);
                ++rows;
                if (buffer.size() >= (1 << 20)) {
                    writer.data(buffer.data(), buffer.size());
                    reporter.advance(buffer.size());
                    buffer.clear();
                    stopped = reporter.stop_requested();
                }
            }
            if (mysql_errno(mysql) != 0 && !stopped) stopped = fail(" while reading rows");
            if (!stopped) {
                writer.data(buffer.data(), buffer.size());
                reporter.advance(buffer.size());
            }
        }
    }
    if (!in_snapshot) c.exec("COMMIT; " + saved.restore_sql());
    if (stopped) return std::nullopt; // cancelled: the temp file goes with `temp`

    writer.finish(rows);
    reporter.set_phase(options.verify ? "syncing and verifying" : "syncing");
    io::sync_table_file(temp, writer.data_bytes(), options.verify, [&] {
        TableFileReader check(temp.path());
        check.data().read_data([](const char*, std::size_t) { return true; });
    });
    if (reporter.stop_requested()) return std::nullopt; // last chance to cancel before the file appears
    temp.publish();
    reporter.set_total(writer.data_bytes(), "bytes"); // the exact size: 100 %
    reporter.set_phase("done: " + std::to_string(rows) + " rows");
    return writer.file_digest();
}

} // namespace detail

/// Returns a job that copies `table`'s rows (from the connection's database) into a new table
/// backup file at `dest`: one SELECT streamed row by row (mysql_use_result: memory stays flat)
/// in a consistent snapshot (START TRANSACTION WITH CONSISTENT SNAPSHOT, REPEATABLE READ; it
/// does not block writers), TIMESTAMPs read in UTC, encoded in LOAD DATA's text format (lossless
/// for every byte, NULL distinct from ''), header with the columns and their types, the server
/// version and utf8mb4; checksum; zstd unless the options say otherwise. Progress is in bytes of
/// text, against a total estimated from information_schema.TABLES.DATA_LENGTH until the end.
/// The file is written to a locked temp file (0600) beside `dest`, read back, fsynced and
/// published, never replacing a file unless TableBackupOptions::overwrite; a failed or cancelled
/// backup leaves neither. A stop kills the SELECT on the server (KILL QUERY over a connection
/// `factory` opens, see CancelOnStop). Throws std::invalid_argument at once for invalid options.
[[nodiscard]] inline Job<Connection> backup_table(Factory factory, Table table, std::filesystem::path dest,
                                                  TableBackupOptions options = {}) {
    if (dest.empty()) throw std::invalid_argument("connpool::mysql::backup_table: the destination path is empty");
    if (options.compression == Compression::zstd &&
        (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel() || options.zstd_level == 0))
        throw std::invalid_argument("connpool::mysql::TableBackupOptions: zstd_level must be in " +
                                    std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel()) +
                                    " and not 0, got " + std::to_string(options.zstd_level));
    detail::check_lock_timeout(options.lock_timeout, "TableBackupOptions");
    std::string name = table.quoted(); // throws std::invalid_argument for a name MySQL cannot have
    return Job<Connection>{std::move(name), JobKind::backup,
                           [factory = std::move(factory), table = std::move(table), dest = std::move(dest),
                            options](Connection& c, ProgressReporter& reporter) {
                               (void)detail::run_table_backup(factory, c, table, dest, options, reporter);
                           }};
}

} // namespace connpool::mysql
