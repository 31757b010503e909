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

/// Fills the server fields of a header: version, version number, encoding.
inline void describe_server(Connection& c, TableFileHeader& h) {
    const Result r = c.exec("SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
                            "pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()");
    h.server_version = r.get(0, 0);
    h.server_version_num = std::stoi(r.get(0, 1));
    h.encoding = r.get(0, 2);
}

/// Fills a backup header's columns and server fields and returns the table's size on disk, in
/// one round trip (what table_columns, describe_server and table_size ask, in one query: a tiny
/// table's backup is mostly round trips). Throws Error (42P01 when the table does not exist).
inline std::uint64_t describe_for_backup(Connection& c, const Table& table, TableFileHeader& h) {
    // A LEFT JOIN from pg_database, so a table without columns still gives the server's row.
    const Result r = c.query(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), current_setting('server_version'), "
        "current_setting('server_version_num')::int, pg_encoding_to_char(d.encoding), pg_table_size($1::regclass) "
        "FROM pg_database d LEFT JOIN pg_attribute a ON a.attrelid = $1::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped AND a.attgenerated = '' WHERE d.datname = current_database() ORDER BY a.attnum",
        {qualified(c.handle(), table)});
    if (r.rows() == 0) throw Error("the current database is missing from pg_database", "");
    h.columns.clear();
    for (int i = 0; i < r.rows(); ++i)
        if (!r.is_null(i, 0)) h.columns.push_back({r.get(i, 0), r.get(i, 1)});
    h.server_version = r.get(0, 2);
    h.server_version_num = std::stoi(r.get(0, 3));
    h.encoding = r.get(0, 4);
    return r.is_null(0, 5) ? 0 : std::stoull(r.get(0, 5));
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
