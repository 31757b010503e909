#pragma once

// How a MySQL database backup divides its work (database.hpp): the tables to copy, in which
// order, and which of them are split into primary-key ranges (chunks), each its own job and
// file. Every chunk reads the same snapshot, so a chunk's bounds need not be read in it: the
// ranges cover every key whatever the table holds by then.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "../io/manifest.hpp" // FileIdentity
#include "connection.hpp"
#include "error.hpp"
#include "table.hpp"
#include "table_catalog.hpp"

namespace connpool::mysql::detail {

/// One file of a set: a whole table, or one primary-key range of a large one (a chunk).
struct SetPiece {
    std::string file;
    /// The rows of the chunk (a WHERE condition); empty for the whole table.
    std::string where;
    /// Bytes expected: the table's or chunk's share of DATA_LENGTH (backup), the file's data (restore).
    std::uint64_t estimate = 0;
    /// Restore: the file's identity while the manifest check read it (ManifestEntry::checked).
    std::optional<io::FileIdentity> checked{};
};

/// A table of the set: its size on disk when the backup started, its engine, its files.
struct SetTable {
    Table table;
    std::uint64_t size = 0;
    std::string engine;
    std::vector<SetPiece> pieces{};
    /// Whether the engine has transactions, so the table is read in the snapshot (InnoDB).
    [[nodiscard]] bool transactional() const { return engine == "InnoDB"; }
};

/// A piece's place in the set: tables[table].pieces[piece].
struct PieceRef {
    std::size_t table = 0, piece = 0;
};

/// Returns every piece of `tables`, those of tables without transactions first (as the tables
/// are ordered), then the largest first, so the longest copy starts at once.
inline std::vector<PieceRef> job_order(const std::vector<SetTable>& tables) {
    std::vector<PieceRef> out;
    for (std::size_t t = 0; t < tables.size(); ++t)
        for (std::size_t p = 0; p < tables[t].pieces.size(); ++p) out.push_back({t, p});
    std::stable_sort(out.begin(), out.end(), [&](const PieceRef& a, const PieceRef& b) {
        const SetTable& ta = tables[a.table];
        const SetTable& tb = tables[b.table];
        if (ta.transactional() != tb.transactional()) return !ta.transactional();
        if (!ta.transactional()) return false; // copied while the read lock holds: keep the tables' order
        return ta.pieces[a.piece].estimate > tb.pieces[b.piece].estimate;
    });
    return out;
}

/// Returns the name of a piece's job: the quoted table, and which chunk of how many.
inline std::string piece_name(const SetTable& t, std::size_t piece) {
    if (t.pieces.size() == 1) return t.table.quoted();
    return t.table.quoted() + " chunk " + std::to_string(piece + 1) + "/" + std::to_string(t.pieces.size());
}

/// Lists the tables to copy (every base table of the database, or the chosen ones, all checked
/// to exist): those without transactions first, then the largest first by their data on disk
/// (DATA_LENGTH). Their pieces are planned by plan_pieces().
inline std::vector<SetTable> list_tables(Connection& c, const std::vector<Table>& chosen, const std::string& what) {
    const Rows r = c.query("SELECT TABLE_NAME, ENGINE, DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                           "DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')");
    std::vector<SetTable> all;
    for (const auto& row : r.rows) all.push_back({Table{row[0].value_or("")}, to_u64(row[2]), row[1].value_or("")});
    std::vector<SetTable> out;
    if (chosen.empty()) {
        out = std::move(all);
    } else {
        std::string missing;
        for (const auto& t : chosen) {
            const auto it = std::find_if(all.begin(), all.end(), [&](const SetTable& s) { return s.table == t; });
            if (it == all.end())
                missing += (missing.empty() ? "" : ", ") + t.quoted();
            else if (std::none_of(out.begin(), out.end(), [&](const SetTable& s) { return s.table == t; }))
                out.push_back(*it);
        }
        if (!missing.empty())
            throw OperationError(what + ": DatabaseBackupOptions::tables names what is not a table of the database: " + missing);
    }
    // Tables without transactions first (the read lock is held until they are copied), then the
    // largest first, so the longest copy starts at once.
    std::stable_sort(out.begin(), out.end(), [](const SetTable& a, const SetTable& b) {
        if (a.transactional() != b.transactional()) return !a.transactional();
        return a.size > b.size;
    });
    return out;
}

/// The integer primary key a large table is chunked by.
struct ChunkKey {
    std::string column;
    bool is_unsigned = false;
};

/// Returns the table's primary key when it is one integer column (the only keys chunked, as
/// mydumper's integer chunking does), else nothing.
inline std::optional<ChunkKey> chunk_key(Connection& c, const Table& table) {
    // Each side's keys compared to constants: joined on them alone, the server read the columns
    // of every table of every database.
    const std::string name = c.quote_string(table.name);
    const Rows r = c.query("SELECT k.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE FROM information_schema.KEY_COLUMN_USAGE k "
                           "JOIN information_schema.COLUMNS c ON c.COLUMN_NAME = k.COLUMN_NAME WHERE k.TABLE_SCHEMA = "
                           "DATABASE() AND k.TABLE_NAME = " + name + " AND c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = " +
                           name + " AND k.CONSTRAINT_NAME = 'PRIMARY'");
    if (r.size() != 1) return std::nullopt;
    const std::string type = r[0][1].value_or("");
    if (type != "tinyint" && type != "smallint" && type != "mediumint" && type != "int" && type != "bigint")
        return std::nullopt;
    return ChunkKey{r[0][0].value_or(""), r[0][2].value_or("").find("unsigned") != std::string::npos};
}

__extension__ using Int128 = __int128; // spans of BIGINT UNSIGNED keys (up to 2^64) and their products

inline std::string int128_text(Int128 v) {
    if (v == 0) return "0";
    const bool negative = v < 0;
    std::string digits;
    for (; v != 0; v /= 10) digits += static_cast<char>('0' + static_cast<int>(negative ? -(v % 10) : v % 10));
    if (negative) digits += '-';
    return {digits.rbegin(), digits.rend()};
}

inline Int128 parse_int128(const std::string& text, bool is_unsigned) {
    return is_unsigned ? static_cast<Int128>(std::stoull(text)) : static_cast<Int128>(std::stoll(text));
}

/// Names the table's files and, for an InnoDB table larger than `chunk_bytes` with an integer
/// primary key, splits it into about size / chunk_bytes ranges of the key between its lowest and
/// highest value (the first and last ranges open-ended, so every row is in exactly one chunk
/// whatever the key's values are by the time the snapshot reads them). `index` numbers the file.
inline void plan_pieces(Connection& c, SetTable& t, std::size_t index, std::uint64_t chunk_bytes) {
    char name[48];
    std::snprintf(name, sizeof name, "table-%04zu.tbl", index);
    t.pieces = {SetPiece{name, "", t.size}};
    if (!t.transactional() || chunk_bytes == 0 || t.size <= chunk_bytes) return;
    const auto key = chunk_key(c, t.table);
    if (!key) return;
    const std::string column = quote_identifier(key->column);
    const Rows r = c.query("SELECT MIN(" + column + "), MAX(" + column + ") FROM " + t.table.quoted());
    if (r.empty() || !r[0][0] || !r[0][1]) return;
    const Int128 low = parse_int128(*r[0][0], key->is_unsigned), high = parse_int128(*r[0][1], key->is_unsigned);
    const Int128 span = high - low + 1;
    Int128 n = static_cast<Int128>((t.size + chunk_bytes - 1) / chunk_bytes);
    n = std::min<Int128>({n, span, 10000});
    if (n < 2) return;
    t.pieces.clear();
    std::string lower;
    for (Int128 i = 1; i <= n; ++i) {
        std::snprintf(name, sizeof name, "table-%04zu.%04d.tbl", index, static_cast<int>(i));
        std::string where = lower.empty() ? "" : column + " >= " + lower;
        if (i < n) {
            const std::string upper = int128_text(low + span * i / n);
            where += (where.empty() ? "" : " AND ") + column + " < " + upper;
            lower = upper;
        }
        t.pieces.push_back({name, std::move(where), t.size / static_cast<std::uint64_t>(n)});
    }
}


} // namespace connpool::mysql::detail
