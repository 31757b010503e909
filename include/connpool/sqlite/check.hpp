#pragma once

// How a database file is checked: SQLite's quick_check and integrity_check.

#include <string>
#include <string_view>

#include <sqlite3.h>

#include "error.hpp"

namespace connpool::sqlite {

/// How thoroughly a database file is checked: not at all, `PRAGMA quick_check` (every page's
/// structure, O(N); not indexes against tables), or `PRAGMA integrity_check` (also indexes
/// against tables; several times slower). A backup's `pages` verification adds a checksum
/// comparison of every page to quick_check (see BackupOptions::verify).
enum class Check { none, quick, integrity, pages };

/// Returns nothing if `db`'s main database passes `check`, else the problems SQLite lists
/// (at most 10, one per line). Check::pages runs quick_check here (the page checksums are the
/// backup's own part).
inline std::string check_problems(sqlite3* db, Check check, std::string_view context) {
    if (check == Check::none) return {};
    const char* sql = check == Check::integrity ? "PRAGMA main.integrity_check(10)" : "PRAGMA main.quick_check(10)";
    const auto rows = detail::column_texts(db, sql, context);
    if (rows.size() == 1 && rows.front() == "ok") return {};
    std::string problems;
    for (const auto& row : rows) problems += (problems.empty() ? "" : "\n") + row;
    return problems.empty() ? "the check returned nothing" : problems;
}

} // namespace connpool::sqlite
