#pragma once

// What the table jobs ask the server's catalog: a table's columns (as COPY sees them) and its
// size, and the server's version and encoding for a backup's header.

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "connection.hpp"
#include "table.hpp"
#include "table_file.hpp"

namespace connpool::postgres::detail {

/// Returns the columns COPY copies (not dropped, not generated), in order; throws Error (42P01
/// when the table does not exist).
inline std::vector<ColumnInfo> table_columns(Connection& c, const Table& table) {
    const std::string name = qualified(c.handle(), table);
    const Result r = c.query("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                             "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                             "AND a.attgenerated = '' ORDER BY a.attnum",
                             {name});
    std::vector<ColumnInfo> columns;
    for (int i = 0; i < r.rows(); ++i) columns.push_back({r.get(i, 0), r.get(i, 1)});
    return columns;
}

/// Returns the column list for COPY: ("a", "b", ...) quoted by libpq.
inline std::string column_list(PGconn* conn, const std::vector<ColumnInfo>& columns) {
    std::string out = "(";
    for (std::size_t i = 0; i < columns.size(); ++i) {
        if (i > 0) out += ", ";
        out += quote_identifier(conn, columns[i].name);
    }
    return out + ")";
}

/// Returns the table's size on disk in bytes (heap, TOAST; pg_table_size), an estimate of its
/// COPY size.
inline std::uint64_t table_size(Connection& c, const Table& table) {
    const auto v = c.query_value("SELECT pg_table_size($1::regclass)", {qualified(c.handle(), table)});
    return v ? std::stoull(*v) : 0;
}

/// Fills the server fields of a header: version, version number, encoding. They come from what
/// the server reported when the session started (ParameterStatus: server_version and
/// server_encoding, the database's encoding, are sent to every client), so no round trip is
/// spent on them; a server that did not report them is asked.
inline void describe_server(Connection& c, TableFileHeader& h) {
    PGconn* conn = c.handle();
    const char* version = PQparameterStatus(conn, "server_version");
    const char* encoding = PQparameterStatus(conn, "server_encoding");
    if (version != nullptr && encoding != nullptr && PQserverVersion(conn) > 0) {
        h.server_version = version;
        h.server_version_num = PQserverVersion(conn);
        h.encoding = encoding;
        return;
    }
    const Result r = c.exec("SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                            "pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()");
    h.server_version = r.get(0, 0);
    h.server_version_num = std::stoi(r.get(0, 1));
    h.encoding = r.get(0, 2);
}

/// Returns one statement that gives the table's size on disk (pg_table_size) in every row and
/// its COPY columns (not dropped, not generated) in order, one row each: a table without columns
/// gives one row with NULL names. The name goes in as a quoted literal, so the statement can
/// share a simple query (one round trip) with the transaction's start and its lock. Fails with
/// 42P01 when the table does not exist.
inline std::string backup_catalog_sql(PGconn* conn, const Table& table) {
    return "SELECT pg_table_size(t.oid), a.attname, format_type(a.atttypid, a.atttypmod) FROM (SELECT " +
           quote_literal(conn, qualified(conn, table)) +
           "::regclass AS oid) t LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 "
           "AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum";
}

/// Fills a backup header's columns from backup_catalog_sql's result and returns the size it gives.
inline std::uint64_t read_backup_catalog(const Result& r, TableFileHeader& h) {
    if (r.rows() == 0 || r.columns() != 3) throw Error("the catalog query gave no row for the table", "");
    h.columns.clear();
    for (int i = 0; i < r.rows(); ++i)
        if (!r.is_null(i, 1)) h.columns.push_back({r.get(i, 1), r.get(i, 2)});
    return r.is_null(0, 0) ? 0 : std::stoull(r.get(0, 0));
}

/// Returns the SQL that takes `mode` on the table in the open transaction: NOWAIT when
/// lock_timeout is 0, else after a SET LOCAL lock_timeout (one string: one round trip).
inline std::string lock_table_sql(PGconn* conn, const Table& table, const char* mode, std::chrono::milliseconds lock_timeout) {
    const std::string lock = "LOCK TABLE " + qualified(conn, table) + " IN " + mode + " MODE";
    if (lock_timeout.count() > 0) return "SET LOCAL lock_timeout = " + std::to_string(lock_timeout.count()) + "; " + lock;
    return lock + " NOWAIT";
}

/// Throws std::invalid_argument naming `options_name` for a negative lock timeout.
inline void check_lock_timeout(std::chrono::milliseconds lock_timeout, const char* options_name) {
    if (lock_timeout.count() < 0)
        throw std::invalid_argument(std::string("connpool::postgres::") + options_name +
                                    ": lock_timeout must be >= 0 ms, got " + std::to_string(lock_timeout.count()));
}

/// Takes `mode` on the table in the open transaction, failing fast (NOWAIT) when lock_timeout is
/// 0 and otherwise waiting at most that long; throws Error with 55P03 when someone else holds it.
inline void lock_table(Connection& c, const Table& table, const char* mode, std::chrono::milliseconds lock_timeout) {
    c.exec(lock_table_sql(c.handle(), table, mode, lock_timeout));
}

} // namespace connpool::postgres::detail
