#pragma once

// How a database file is checked: SQLite's quick_check and integrity_check.

#include <string>
#include <string_view>

#include <sqlite3.h>

#include "error.hpp"

namespace connpool::sqlite {

/// How thoroughly a database file is checked: not at all, `PRAGMA quick_check` (every page's
/// structure, O(N); not indexes against tables), `PRAGMA integrity_check` (also indexes against
/// tables; several times slower), or, for backups only, `pages`: every page's checksum as
/// written compared with the file read back, and the schema read (see BackupOptions::verify).
enum class Check { none, quick, integrity, pages };

/// Returns nothing if `db`'s main database passes `check`, else the problems SQLite lists
/// (at most 10, one per line). For Check::pages this is the part SQLite does: the file opens as a
/// database and its whole schema parses (the page checksums are the backup's own part).
inline std::string check_problems(sqlite3* db, Check check, std::string_view context) {
    if (check == Check::none) return {};
    if (check == Check::pages) {
        (void)detail::column_texts(db, "SELECT count(*) FROM main.sqlite_master", context);
        return {};
    }
    const char* sql = check == Check::integrity ? "PRAGMA main.integrity_check(10)" : "PRAGMA main.quick_check(10)";
    const auto rows = detail::column_texts(db, sql, context);
    if (rows.size() == 1 && rows.front() == "ok") return {};
    std::string problems;
    for (const auto& row : rows) problems += (problems.empty() ? "" : "\n") + row;
    return problems.empty() ? "the check returned nothing" : problems;
}

} // namespace connpool::sqlite
