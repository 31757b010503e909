#pragma once

// Checks a restored database against the backup it came from: integrity, schema, and every
// table's rows and values (an order-independent checksum).

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <sqlite3.h>

#include <connpool/monitor/terminal.hpp> // format_count
#include <connpool/sqlite.hpp>

#include "demo_data.hpp" // Statement

namespace demo {

/// What a database holds: its schema and, per table, the row count and an order-independent
/// checksum of every value (a sum of per-row hashes).
struct Contents {
    std::string schema;
    struct Table {
        std::string name;
        std::int64_t rows = 0;
        std::uint64_t checksum = 0;
        bool operator==(const Table&) const = default;
    };
    std::vector<Table> tables;
    bool operator==(const Contents&) const = default;
};

/// FNV-1a, 64 bit: enough to notice any changed value, and short enough to write here.
inline std::uint64_t fnv1a(std::uint64_t hash, const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
    return hash;
}

inline Contents read_contents(sqlite3* db) {
    Contents contents;
    std::vector<std::string> names;
    {
        Statement schema(db, "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name");
        while (schema.step()) {
            for (int col = 0; col < 3; ++col)
                contents.schema += reinterpret_cast<const char*>(sqlite3_column_text(schema.get(), col)) + std::string("\n");
            const std::string_view type = reinterpret_cast<const char*>(sqlite3_column_text(schema.get(), 0));
            const std::string name = reinterpret_cast<const char*>(sqlite3_column_text(schema.get(), 1));
            if (type == "table" && !name.starts_with("sqlite_")) names.push_back(name);
        }
    }
    for (const auto& name : names) {
        Contents::Table table{name};
        std::string quoted = "\"";
        for (char ch : name) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
        const std::string sql = "SELECT * FROM " + quoted + "\"";
        Statement rows(db, sql.c_str());
        const int columns = sqlite3_column_count(rows.get());
        while (rows.step()) {
            std::uint64_t row = 0xcbf29ce484222325ULL;
            for (int col = 0; col < columns; ++col) {
                const int type = sqlite3_column_type(rows.get(), col);
                row = fnv1a(row, &type, sizeof type); // so 1 and '1' differ
                const void* bytes = sqlite3_column_blob(rows.get(), col);
                row = fnv1a(row, bytes, static_cast<std::size_t>(sqlite3_column_bytes(rows.get(), col)));
            }
            table.checksum += row; // a sum: the same rows in any order give the same checksum
            ++table.rows;
        }
        contents.tables.push_back(std::move(table));
    }
    return contents;
}

struct Verification {
    bool ok = false;
    std::string text;
};

/// Checks `restored` against the backup it came from: integrity, schema, rows and values.
inline Verification verify_restore(const fs::path& restored, const fs::path& backup) {
    const sqlite::FactoryOptions read_only{.open_flags = SQLITE_OPEN_READONLY};
    sqlite::Connection r = sqlite::Factory{restored, read_only}.create();
    sqlite::Connection b = sqlite::Factory{backup, read_only}.create();
    if (auto problems = sqlite::check_problems(r.handle(), sqlite::Check::integrity, "integrity check of the restore");
        !problems.empty())
        return {false, "integrity check failed:\n" + problems};
    const Contents got = read_contents(r.handle());
    const Contents want = read_contents(b.handle());
    if (got.schema != want.schema) return {false, "the schema differs from the backup's"};
    if (got.tables != want.tables) {
        std::string text = "contents differ from the backup:";
        for (std::size_t i = 0; i < std::max(got.tables.size(), want.tables.size()); ++i) {
            const auto* g = i < got.tables.size() ? &got.tables[i] : nullptr;
            const auto* w = i < want.tables.size() ? &want.tables[i] : nullptr;
            if (g && w && *g == *w) continue;
            const std::string& name = g ? g->name : w->name;
            if (!g || !w) {
                text += "\n  table " + name + (g ? " is not in the backup" : " is missing");
            } else if (g->rows != w->rows) {
                text += "\n  " + name + ": " + std::to_string(g->rows) + " rows, the backup has " + std::to_string(w->rows);
            } else {
                text += "\n  " + name + ": the same " + std::to_string(g->rows) + " rows, but different values";
            }
        }
        return {false, text};
    }
    std::int64_t rows = 0;
    for (const auto& t : got.tables) rows += t.rows;
    return {true, "integrity ok, " + std::to_string(got.tables.size()) + " tables, " +
                      connpool::monitor::format_count(static_cast<std::uint64_t>(rows)) + " rows match the backup"};
}

} // namespace demo
