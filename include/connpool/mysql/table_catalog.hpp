#pragma once

// What the table jobs ask the server about a table (information_schema): its columns, its
// engine, and its size for a progress estimate. Every question names the table as a string
// literal escaped for the session, so any name works.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../jobs.hpp" // OperationError
#include "connection.hpp"
#include "table.hpp"
#include "table_file.hpp" // ColumnInfo

namespace connpool::mysql::detail {

/// What information_schema.TABLES says about a table.
struct TableInfo {
    /// The connection's database (DATABASE()).
    std::string database;
    /// The storage engine ("InnoDB", "MyISAM", ...); empty for a view.
    std::string engine;
    /// DATA_LENGTH: bytes on disk (an estimate for InnoDB), for the progress total.
    std::uint64_t data_length = 0;
};

inline std::uint64_t to_u64(const Cell& cell) { return cell ? std::stoull(*cell) : 0; }

/// Returns the table's database, engine and size; throws OperationError (the connection is
/// fine) when the session has no database or the table is not in it, or is a view.
inline TableInfo table_info(Connection& c, const Table& table, const std::string& what) {
    // Both keys compared to constants, so the server opens this one table. A join on the schema
    // (from a derived table) made it open every table of every database, sys's views included:
    // 900 temporary tables, 160 of them Aria files, per database backup.
    Rows r = c.query("SELECT DATABASE(), TABLE_TYPE, ENGINE, DATA_LENGTH FROM information_schema.TABLES WHERE "
                     "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = " + c.quote_string(table.name));
    if (r.empty()) r = c.query("SELECT DATABASE(), NULL");
    if (r.empty() || !r[0][0]) throw OperationError(what + ": the connection has no database (ConnectOptions::database)");
    TableInfo info;
    info.database = *r[0][0];
    if (!r[0][1])
        throw OperationError(what + ": there is no table " + table.quoted() + " in database '" + info.database + "'");
    if (*r[0][1] != "BASE TABLE" && *r[0][1] != "SYSTEM VERSIONED")
        throw OperationError(what + ": " + table.quoted() + " in database '" + info.database + "' is a " + *r[0][1] +
                             ", not a table");
    info.engine = r[0][2].value_or("");
    info.data_length = to_u64(r[0][3]);
    return info;
}

/// Returns the table's stored columns in order (generated ones left out: the server computes them).
inline std::vector<ColumnInfo> table_columns(Connection& c, const Table& table) {
    const Rows r = c.query("SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                           "AND TABLE_NAME = " +
                           c.quote_string(table.name) + " AND EXTRA NOT LIKE '%GENERATED%' ORDER BY ORDINAL_POSITION");
    std::vector<ColumnInfo> columns;
    columns.reserve(r.size());
    for (const auto& row : r.rows) columns.push_back({row[0].value_or(""), row[1].value_or("")});
    return columns;
}

/// Returns "(a int, b text)" for messages.
inline std::string describe_columns(const std::vector<ColumnInfo>& columns) {
    std::string out;
    for (const auto& c : columns) out += (out.empty() ? "" : ", ") + quote_identifier(c.name) + " " + c.type;
    return "(" + out + ")";
}

} // namespace connpool::mysql::detail
