#pragma once

// postgres::backup_table: one table's rows streamed with COPY ... TO STDOUT (asynchronous, so a
// stop cancels the COPY on the server at once) into a table backup file (table_file.hpp) that
// appears under its final name only when it is complete, durable and read back whole.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <zstd.h>

#include <libpq-fe.h>

#include "../io/durable_file.hpp"
#include "../jobs.hpp"
#include "catalog.hpp"
#include "connection.hpp"
#include "copy_stream.hpp"
#include "error.hpp"
#include "table.hpp"
#include "table_file.hpp"

namespace connpool::postgres {

/// How backup_table() copies. Every field has a default.
struct TableBackupOptions {
    /// COPY format. Default text: portable across server versions and architectures; binary is
    /// opt-in and recorded in the file.
    CopyFormat format = CopyFormat::text;
    /// Compression of the data. Default zstd (see zstd_level).
    Compression compression = Compression::zstd;
    /// zstd level (1..19; negative = faster). Default 1: the README's measurement found it cuts
    /// COPY text about 3-4x at a cost the COPY itself hides; higher levels cost CPU for little.
    int zstd_level = 1;
    /// Replace an existing file at the destination (atomically, once the new one is complete).
    /// Default false: an existing destination fails the job.
    bool overwrite = false;
    /// Read in the snapshot exported by another session (pg_export_snapshot()), so several
    /// tables are read as of one moment; backup_database sets it. Default none: the job's own.
    std::string snapshot{};
    /// How long to wait for the table's ACCESS SHARE lock when someone holds it exclusively.
    /// Default 0 = fail at once (pg_dump's NOWAIT), so a locked table fails fast, naming the lock.
    std::chrono::milliseconds lock_timeout{0};
    /// Read the finished file back (checksum, decompression, counts) before publishing it.
    /// Default true.
    bool verify = true;
};

namespace detail {

/// Throws OperationError for a destination that must not be written, before anything is read.
inline void check_backup_destination(const std::filesystem::path& dest, bool overwrite, const std::string& what) {
    namespace fs = std::filesystem;
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    std::error_code ec;
    const auto dir_status = fs::status(dir, ec);
    if (!fs::exists(dir_status)) throw OperationError(what + ": directory " + file_quoted(dir) + " does not exist");
    if (!fs::is_directory(dir_status)) throw OperationError(what + ": " + file_quoted(dir) + " is not a directory");
    const auto status = fs::status(dest, ec);
    if (!fs::exists(status)) return;
    if (fs::is_directory(status)) throw OperationError(what + ": " + file_quoted(dest) + " is a directory");
    if (!overwrite)
        throw OperationError(what + ": " + file_quoted(dest) +
                             " exists (set TableBackupOptions::overwrite to replace it)");
}

/// Backs `table` up on `c`; returns the published file's digest (for a set's manifest), or nothing
/// when the job was stopped.
inline std::optional<io::FileDigest> run_table_backup(Connection& c, const Table& table, const std::filesystem::path& dest,
                                                      const TableBackupOptions& options, ProgressReporter& reporter) {
    const std::string what = "backup of table " + table.display() + " to " + file_quoted(dest);
    PGconn* conn = c.handle();
    std::optional<io::FileDigest> digest;
    run_settled(conn, what, [&] {
        check_backup_destination(dest, options.overwrite, what);
        io::remove_stale_temps(dest);
        io::TempFile temp(dest, options.overwrite ? io::Publish::replace : io::Publish::no_replace);

        // A tiny table's backup is mostly round trips, so it takes two: the transaction's start,
        // its snapshot, its lock and the catalog question in one simple query (the server runs
        // them in order and stops at the first error), then the COPY and the COMMIT in another.
        // The server's version and encoding cost none (describe_server).
        TableFileHeader header;
        header.schema = table.schema;
        header.table = table.name;
        header.format = options.format;
        header.compression = options.compression;
        describe_server(c, header);
        // The data must come in the database's encoding; libpq's default already is it, unless
        // the conninfo or PGCLIENTENCODING asked for another.
        const bool other_encoding = header.encoding != pg_encoding_to_char(PQclientEncoding(conn));
        const std::uint64_t size = read_backup_catalog(
            c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; " +
                   (options.snapshot.empty() ? std::string() : "SET TRANSACTION SNAPSHOT " + quote_literal(conn, options.snapshot) + "; ") +
                   (other_encoding ? "SET LOCAL client_encoding = " + quote_literal(conn, header.encoding) + "; " : std::string()) +
                   lock_table_sql(conn, table, "ACCESS SHARE", options.lock_timeout) + "; " + backup_catalog_sql(conn, table)),
            header);
        reporter.set_total(size, "bytes");
        reporter.set_phase("copying (total estimated from the table's size on disk)");

        TableFileWriter writer(temp.fd(), temp.path(), header, options.zstd_level);
        // The column list is the one the header records, so the data matches it even if the
        // table changed between the exported snapshot and the lock.
        const std::string sql = "COPY " + qualified(conn, table) +
                                (header.columns.empty() ? std::string() : " " + column_list(conn, header.columns)) +
                                " TO STDOUT" + (options.format == CopyFormat::binary ? " (FORMAT binary)" : "") +
                                "; COMMIT";
        if (PQsendQuery(conn, sql.c_str()) != 1) throw_result(conn, nullptr, "cannot start the COPY");
        {
            const ResultPtr started = first_result(conn, reporter, what);
            if (!started) return settle_or_throw(conn, what);
            if (PQresultStatus(started.get()) != PGRES_COPY_OUT) throw_result(conn, started.get(), "COPY failed");
        }
        std::uint64_t rows = 0, messages = 0;
        std::uint64_t unreported = 0; // progress goes out every 256 messages (a lock each), not every row
        const auto stop = [&] { return reporter.stop_requested(); };
        for (;;) {
            char* buffer = nullptr;
            const int n = PQgetCopyData(conn, &buffer, 1);
            if (n > 0) {
                struct Free {
                    char* p;
                    ~Free() { PQfreemem(p); }
                } free_buffer{buffer};
                writer.data(buffer, static_cast<std::size_t>(n));
                unreported += static_cast<std::uint64_t>(n);
                if ((++messages & 255) == 0) {
                    reporter.advance(std::exchange(unreported, 0));
                    if (reporter.stop_requested()) return settle_or_throw(conn, what);
                }
            } else if (n == 0) {
                if (unreported > 0) reporter.advance(std::exchange(unreported, 0)); // before waiting: stays current
                if (!wait_socket(conn, POLLIN, stop, what)) return settle_or_throw(conn, what);
                if (PQconsumeInput(conn) == 0) throw_result(conn, nullptr, "COPY failed");
            } else if (n == -1) {
                if (unreported > 0) reporter.advance(std::exchange(unreported, 0));
                break;
            } else {
                throw_result(conn, nullptr, "COPY failed");
            }
        }
        {
            const ResultPtr end(PQgetResult(conn));
            if (!end || PQresultStatus(end.get()) != PGRES_COMMAND_OK) throw_result(conn, end.get(), "COPY failed");
            // The server's count ("COPY n"): in binary format the data messages are not one per row.
            if (const char* n = PQcmdTuples(end.get()); n != nullptr && *n != '\0') rows = std::stoull(n);
        }
        {
            const ResultPtr commit(PQgetResult(conn));
            if (!commit || PQresultStatus(commit.get()) != PGRES_COMMAND_OK) throw_result(conn, commit.get(), "COMMIT failed");
        }
        if (const std::string error = drain_results(conn); !error.empty()) throw Error("COMMIT failed: " + error, "");
        if (PQtransactionStatus(conn) != PQTRANS_IDLE) throw Error("the transaction is still open after its COMMIT", "");

        writer.finish(rows);
        reporter.set_phase(options.verify ? "syncing and verifying" : "syncing");
        io::sync_table_file(temp, writer.data_bytes(), options.verify, [&] {
            TableFileReader reader(temp.path());
            reader.read_data([](const char*, std::size_t) { return true; });
        });
        if (reporter.stop_requested()) return; // last chance to cancel before the file appears
        temp.publish();
        reporter.set_total(writer.data_bytes(), "bytes"); // the exact size: 100 %
        reporter.set_phase("done: " + std::to_string(rows) + " rows");
        digest = writer.file_digest();
    });
    return digest;
}

} // namespace detail

/// Returns a job that copies `table`'s rows (COPY TO STDOUT, in one REPEATABLE READ transaction)
/// into a new table backup file at `dest` (format in table_file.hpp: header with the columns,
/// server version and encoding; checksum; zstd unless the options say otherwise). Progress is in
/// bytes of COPY data, against a total estimated from the table's size on disk until the end.
/// The file is written to a locked temp file (0600) beside `dest`, read back, fsynced and
/// published, never replacing a file unless TableBackupOptions::overwrite; a failed or cancelled
/// backup leaves neither. A stop cancels the COPY on the server within stop_poll_ms. Throws
/// std::invalid_argument at once for invalid options.
[[nodiscard]] inline Job<Connection> backup_table(Table table, std::filesystem::path dest,
                                                  TableBackupOptions options = {}) {
    if (dest.empty()) throw std::invalid_argument("connpool::postgres::backup_table: the destination path is empty");
    if (options.compression == Compression::zstd &&
        (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel() || options.zstd_level == 0))
        throw std::invalid_argument("connpool::postgres::TableBackupOptions: zstd_level must be in " +
                                    std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel()) +
                                    " and not 0, got " + std::to_string(options.zstd_level));
    detail::check_lock_timeout(options.lock_timeout, "TableBackupOptions");
    std::string name = table.display();
    return Job<Connection>{std::move(name), JobKind::backup,
                           [table = std::move(table), dest = std::move(dest),
                            options = std::move(options)](Connection& c, ProgressReporter& reporter) {
                               (void)detail::run_table_backup(c, table, dest, options, reporter);
                           }};
}

} // namespace connpool::postgres
