#pragma once

// postgres::restore_table: a table backup file checked whole (header, checksum, counts, columns
// against the table) before anything is touched, then, in one transaction, TRUNCATE + COPY FROM
// STDIN, so the table's contents become the backup's or (any error, a cancel, a file that
// changed meanwhile) stay what they were: the COPY is ended with an error and rolled back.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <poll.h> // POLLIN, POLLOUT

#include <libpq-fe.h>

#include "../io/manifest.hpp" // FileIdentity
#include "../jobs.hpp"
#include "catalog.hpp"
#include "connection.hpp"
#include "copy_stream.hpp"
#include "error.hpp"
#include "table.hpp"
#include "table_file.hpp"

namespace connpool::postgres {

using io::FileIdentity;  // device, inode, size and mtime: the same before and after a read
using io::file_identity; // a path's FileIdentity now, or nothing

/// How restore_table() loads. Every field has a default.
struct TableRestoreOptions {
    /// How long to wait for the table's ACCESS EXCLUSIVE lock (TRUNCATE needs it). Default 0 =
    /// fail at once when another session uses the table, naming the lock.
    std::chrono::milliseconds lock_timeout{0};
    /// The file's identity when a caller read it whole and checked it against a size and checksum
    /// recorded when it was published (restore_database's manifest check). While the file still
    /// has it, the check pass before the transaction is skipped (the file is not read twice); the
    /// COPY pass checks the checksum and the counts anyway and any mismatch rolls the restore
    /// back. Default none: the file is checked whole first.
    std::optional<FileIdentity> checked{};
};

namespace detail {

inline std::string describe_columns(const std::vector<ColumnInfo>& columns) {
    std::string out;
    for (const auto& c : columns) out += (out.empty() ? "" : ", ") + c.name + " " + c.type;
    return "(" + out + ")";
}

/// Bytes per CopyData message a restore sends. Each is sent whole before the next is queued.
inline constexpr std::size_t copy_message_bytes = std::size_t{64} << 10;

/// Sends what libpq has queued, waiting for the socket as needed and reading what the server
/// says meanwhile (so neither side waits on the other); returns false when stopped.
inline bool flush_all(PGconn* conn, const std::function<bool()>& stop, const std::string& what) {
    for (;;) {
        const int rc = PQflush(conn);
        if (rc == 0) return true;
        if (rc < 0) throw_result(conn, nullptr, "sending COPY data failed");
        if (!wait_socket(conn, POLLOUT | POLLIN, stop, what)) return false;
        if (PQconsumeInput(conn) == 0) throw_result(conn, nullptr, "sending COPY data failed");
    }
}

/// Sends `size` bytes of COPY data in nonblocking mode, waiting for the socket as needed; returns
/// false when stopped. In nonblocking mode libpq queues whatever it is given, growing its output
/// buffer without bound while the server reads slower than the file is read, and moves what is
/// left of that buffer to its start after every partial send: queued whole, a 33 MB file took
/// 28 MB of memory and the moves more client CPU than everything else. So each message is sent
/// before the next is queued.
inline bool put_copy_data(PGconn* conn, const char* data, std::size_t size, ProgressReporter& reporter,
                          const std::string& what) {
    const std::function<bool()> stop = [&] { return reporter.stop_requested(); };
    while (size > 0) {
        const int chunk = static_cast<int>(std::min(size, copy_message_bytes));
        const int rc = PQputCopyData(conn, data, chunk);
        if (rc < 0) throw_result(conn, nullptr, "sending COPY data failed");
        if (rc == 0) { // libpq could not queue it: wait until the server takes more
            if (!wait_socket(conn, POLLOUT, stop, what)) return false;
            if (PQflush(conn) < 0) throw_result(conn, nullptr, "sending COPY data failed");
            continue;
        }
        data += chunk;
        size -= static_cast<std::size_t>(chunk);
        if (!flush_all(conn, stop, what)) return false;
    }
    return true;
}

/// Ends a COPY FROM STDIN with an error, so the server discards it; the transaction is then
/// rolled back by settle().
inline void abort_copy_in(PGconn* conn, const char* why) noexcept {
    PQsetnonblocking(conn, 0);
    PQputCopyEnd(conn, why);
    drain_results(conn);
}

inline void run_table_restore(Connection& c, const Table& table, const std::filesystem::path& src,
                              const TableRestoreOptions& options, ProgressReporter& reporter) {
    const std::string what = "restore of table " + table.display() + " from " + file_quoted(src);
    PGconn* conn = c.handle();
    run_settled(conn, what, [&] {
        reporter.set_phase("checking the file");
        std::optional<TableFileReader> opened;
        if (!io::opened_as_checked(src, options.checked, [&] { opened.emplace(src); }) &&
            !opened->read_data([&](const char*, std::size_t) { return !reporter.stop_requested(); }))
            return;
        TableFileReader& reader = *opened;
        const TableFileHeader& header = reader.header();
        reporter.set_total(reader.data_bytes(), "bytes");

        // One round trip: the transaction, the file's encoding (unless the session has it) and the lock.
        c.exec("BEGIN; " +
               (header.encoding == pg_encoding_to_char(PQclientEncoding(conn))
                    ? std::string()
                    : "SET LOCAL client_encoding = " + quote_literal(conn, header.encoding) + "; ") +
               lock_table_sql(conn, table, "ACCESS EXCLUSIVE", options.lock_timeout));
        const auto columns = table_columns(c, table);
        if (columns != header.columns)
            throw OperationError(what + ": the table's columns " + describe_columns(columns) +
                                 " differ from the backup's " + describe_columns(header.columns) +
                                 "; nothing was changed");
        c.exec("TRUNCATE ONLY " + qualified(conn, table));
        const std::string sql = "COPY " + qualified(conn, table) +
                                (columns.empty() ? std::string() : " " + column_list(conn, columns)) + " FROM STDIN" +
                                (header.format == CopyFormat::binary ? " (FORMAT binary)" : "");
        if (PQsendQuery(conn, sql.c_str()) != 1) throw_result(conn, nullptr, "cannot start the COPY");
        {
            const ResultPtr started = first_result(conn, reporter, what);
            if (!started) return settle_or_throw(conn, what);
            if (PQresultStatus(started.get()) != PGRES_COPY_IN) throw_result(conn, started.get(), "COPY failed");
        }
        reporter.set_phase("copying");
        PQsetnonblocking(conn, 1);
        bool stopped = false;
        try {
            reader.read_data([&](const char* p, std::size_t n) {
                if (reporter.stop_requested() || !put_copy_data(conn, p, n, reporter, what)) {
                    stopped = true;
                    return false;
                }
                reporter.advance(n);
                return true;
            });
        } catch (const std::exception&) {
            // The file changed since it was checked, or the link failed: the COPY must not end well.
            abort_copy_in(conn, "connpool: the backup file failed while it was read");
            throw;
        }
        if (stopped) {
            abort_copy_in(conn, "connpool: restore cancelled");
            return settle_or_throw(conn, what);
        }
        for (;;) {
            const int rc = PQputCopyEnd(conn, nullptr);
            if (rc < 0) throw_result(conn, nullptr, "ending the COPY failed");
            if (rc == 1) break;
            if (!wait_socket(conn, POLLOUT, [] { return false; }, what)) break;
        }
        for (int rc; (rc = PQflush(conn)) != 0;) {
            if (rc < 0) throw_result(conn, nullptr, "ending the COPY failed");
            wait_socket(conn, POLLOUT, [] { return false; }, what);
        }
        PQsetnonblocking(conn, 0);
        {
            // The server may still be busy with the rows (triggers, indexes): a stop now cancels it.
            const ResultPtr end = first_result(conn, reporter, what);
            if (!end) return settle_or_throw(conn, what);
            if (!end || PQresultStatus(end.get()) != PGRES_COMMAND_OK) throw_result(conn, end.get(), "COPY failed");
            const char* n = PQcmdTuples(end.get());
            if (n != nullptr && *n != '\0' && std::stoull(n) != reader.rows())
                throw OperationError(what + ": the server took " + std::string(n) + " rows; the backup has " +
                                     std::to_string(reader.rows()));
        }
        drain_results(conn);
        if (reporter.stop_requested()) return settle_or_throw(conn, what); // last chance: roll back
        c.exec("COMMIT");
        reporter.set_phase("done: " + std::to_string(reader.rows()) + " rows");
    });
}

} // namespace detail

/// Returns a job that makes `table`'s contents equal those of the table backup at `src`: the file
/// is checked first (magic, header, checksum, data size and row count, the columns against the
/// table's), then one transaction truncates the table and loads the rows with COPY FROM STDIN.
/// Any failure or a cancel ends the COPY with an error and rolls back, leaving the table as it
/// was. Progress is in bytes of COPY data (exact). Throws std::invalid_argument for bad options.
[[nodiscard]] inline Job<Connection> restore_table(Table table, std::filesystem::path src,
                                                   TableRestoreOptions options = {}) {
    if (src.empty()) throw std::invalid_argument("connpool::postgres::restore_table: the source path is empty");
    detail::check_lock_timeout(options.lock_timeout, "TableRestoreOptions");
    std::string name = table.display();
    return Job<Connection>{std::move(name), JobKind::restore,
                           [table = std::move(table), src = std::move(src),
                            options](Connection& c, ProgressReporter& reporter) {
                               detail::run_table_restore(c, table, src, options, reporter);
                           }};
}

} // namespace connpool::postgres
