#pragma once

// How a MySQL restore_database names what it creates, so that what a crashed or killed one left
// is found and dealt with by the next: the loading names its tables have until one RENAME gives
// them theirs, the user lock that keeps a second restore out meanwhile, and the journal of the
// routines, views, triggers and events still to create after that RENAME (database.hpp).

#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "connection.hpp"
#include "database_schema.hpp"
#include "error.hpp"

namespace connpool::mysql::detail {

/// What the name of every table a restore is loading starts with.
inline constexpr const char* loading_prefix = "#connpool-restore-";

/// Returns a new restore's id for its loading names: 8 random hex digits.
inline std::string loading_run_id() {
    std::random_device random;
    char id[16];
    std::snprintf(id, sizeof id, "%08x", static_cast<unsigned>(random()));
    return id;
}

/// Returns the name the set's `index`th table has while it loads: short whatever the table's
/// own name (64 characters at most), and found again by its prefix after a crash.
inline std::string loading_name(const std::string& run, std::size_t index) {
    char name[64];
    std::snprintf(name, sizeof name, "%s%s-%04zu", loading_prefix, run.c_str(), index);
    return name;
}

/// Returns the name of the user lock a restore into `database` holds (GET_LOCK takes 64
/// characters at most, a database name alone may have 64).
inline std::string restore_lock_name(const std::string& database) {
    char name[64];
    std::snprintf(name, sizeof name, "connpool-restore-%016zx", std::hash<std::string>{}(database));
    return name;
}

/// Returns the name of a restore's journal: "-pending" while its tables load, "-finish" once the
/// RENAME that gives them their names has renamed it too (see create_set_objects).
inline std::string journal_name(const std::string& run, const char* stage) {
    return std::string(loading_prefix) + run + "-" + stage;
}

/// Writes the journal table `name`: the set's routines, views, triggers and events (`objects`,
/// one JSON document), which a restore interrupted after its RENAME has still to create.
inline void write_journal(Connection& c, const std::string& name, const nlohmann::json& objects) {
    c.exec("CREATE TABLE " + quote_identifier(name) + " (objects LONGTEXT NOT NULL) ENGINE=InnoDB CHARACTER SET utf8mb4");
    c.exec("INSERT INTO " + quote_identifier(name) + " VALUES (" + c.quote_string(objects.dump()) + ")");
}

/// Cleans up after restores into the connection's database that were interrupted (a crash, a
/// kill): one that got as far as its RENAME (a "-finish" journal) is finished, creating the
/// routines, views, triggers and events it had not created yet, so its database reaches the state
/// that restore set out to make; everything else under loading names (tables still loading, a
/// "-pending" journal, a definer probe) is dropped, leaving the state before it. The caller holds
/// restore_lock_name(), so none of them belongs to a restore still running. Throws Error when an
/// interrupted restore cannot be finished.
inline void recover_leftovers(Connection& c) {
    const Rows r = c.query("SELECT TABLE_NAME, TABLE_TYPE = 'VIEW' FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                           "DATABASE() AND LEFT(TABLE_NAME, " + std::to_string(std::char_traits<char>::length(loading_prefix)) +
                           ") = " + c.quote_string(loading_prefix) + " ORDER BY TABLE_NAME");
    if (r.empty()) return;
    constexpr std::string_view finish = "-finish";
    for (const auto& row : r.rows) {
        const std::string name = row[0].value_or("");
        if (row[1] == "1" || name.size() < finish.size() || name.compare(name.size() - finish.size(), finish.size(), finish) != 0)
            continue;
        const auto objects = nlohmann::json::parse(c.query_value("SELECT objects FROM " + quote_identifier(name)).value_or(""),
                                                   nullptr, false);
        try {
            if (objects.is_discarded()) throw Error("its journal cannot be read", 0, "");
            create_set_objects(c, objects, /*skip_existing=*/true, [](const std::string&) {});
        } catch (const Error& e) {
            throw Error("a restore into this database was interrupted after its tables got their names, and creating "
                        "the routines, views, triggers and events it had left failed (its journal is kept in " +
                            quote_identifier(name) + "): " + e.what(),
                        e.code(), e.sqlstate());
        }
        c.exec("DROP TABLE " + quote_identifier(name));
    }
    c.exec("SET SESSION foreign_key_checks = 0");
    for (const auto& row : r.rows) {
        const std::string name = row[0].value_or("");
        if (row[1] != "1" && name.size() >= finish.size() && name.compare(name.size() - finish.size(), finish.size(), finish) == 0)
            continue; // finished and dropped above
        c.exec(std::string(row[1] == "1" ? "DROP VIEW IF EXISTS " : "DROP TABLE IF EXISTS ") + quote_identifier(name));
    }
    c.exec("SET SESSION foreign_key_checks = 1");
}

/// Returns SHOW CREATE TABLE's statement `sql` for table `name` creating `new_name` instead.
inline std::string rename_create_table(const std::string& sql, const std::string& name, const std::string& new_name) {
    const std::string head = "CREATE TABLE " + quote_identifier(name) + " ";
    if (sql.compare(0, head.size(), head) != 0)
        throw Error("the statement of table " + quote_identifier(name) + " in schema.json does not start with '" + head +
                        "'",
                    0, "");
    return "CREATE TABLE " + quote_identifier(new_name) + " " + sql.substr(head.size());
}

} // namespace connpool::mysql::detail
