#pragma once

// What a MySQL database set records besides the rows (database.hpp): SHOW CREATE of its tables
// and of the database's views, triggers, procedures, functions and events, each with the sql_mode
// and character set it was created in (an event also with its time zone, which its schedule is
// read in) (schema.json), and the binary log position (metadata.json);
// and how a restore runs those statements again, its tables loading under names of their own.

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "connection.hpp"
#include "definer.hpp"
#include "error.hpp"
#include "table.hpp"

namespace connpool::mysql::detail {

/// Returns the rows of `sql` as one JSON object per row (column name -> value; NULL as null).
inline nlohmann::json rows_json(Connection& c, const std::string& sql) {
    const Rows r = c.query(sql);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& row : r.rows) {
        nlohmann::json o = nlohmann::json::object();
        for (std::size_t i = 0; i < r.columns.size(); ++i) o[r.columns[i]] = row[i] ? nlohmann::json(*row[i]) : nlohmann::json();
        out.push_back(std::move(o));
    }
    return out;
}

/// Returns one schema object from SHOW CREATE <kind>: its name, the statement (column
/// `statement_column`) and the session it needs (sql_mode, character set, collation; time zone
/// for an event).
inline nlohmann::json show_create(Connection& c, const std::string& kind, const std::string& name,
                                  const char* statement_column) {
    const Rows r = c.query("SHOW CREATE " + kind + " " + quote_identifier(name));
    if (r.empty()) throw Error("SHOW CREATE " + kind + " " + quote_identifier(name) + " returned nothing", 0, "");
    nlohmann::json o = {{"name", name}};
    for (std::size_t i = 0; i < r.columns.size(); ++i) {
        const Cell& v = r[0][i];
        if (r.columns[i] == statement_column) {
            if (!v)
                throw Error("SHOW CREATE " + kind + " " + quote_identifier(name) +
                                " returned no statement: the backup's user may not read it (a routine needs "
                                "SELECT on mysql.proc, or SHOW_ROUTINE, or to own it; an event the EVENT privilege)",
                            0, "");
            o["sql"] = *v;
        } else if (r.columns[i] == "sql_mode" || r.columns[i] == "character_set_client" ||
                   r.columns[i] == "collation_connection" || r.columns[i] == "time_zone") {
            o[r.columns[i]] = v.value_or("");
        }
    }
    return o;
}

/// The schema.json format version written: 2 added the events. A reader of version 1 refuses a
/// version 2 set (naming the version) instead of restoring it without its events.
inline constexpr int schema_version = 2;

/// Reads the schema of the set's tables and the database's views, triggers, routines and events.
inline nlohmann::json read_schema(Connection& c, const std::vector<Table>& tables) {
    nlohmann::json schema = {{"format", "connpool-mysql-set"}, {"version", schema_version}};
    nlohmann::json list = nlohmann::json::array();
    for (const auto& t : tables) list.push_back(show_create(c, "TABLE", t.name, "Create Table"));
    schema["tables"] = std::move(list);
    nlohmann::json views = nlohmann::json::array();
    for (const auto& v : rows_json(c, "SELECT TABLE_NAME AS n FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() "
                                      "ORDER BY TABLE_NAME"))
        views.push_back(show_create(c, "VIEW", v.at("n").get<std::string>(), "Create View"));
    schema["views"] = std::move(views);
    nlohmann::json routines = nlohmann::json::array();
    for (const auto& v : rows_json(c, "SELECT ROUTINE_TYPE AS k, ROUTINE_NAME AS n FROM information_schema.ROUTINES WHERE "
                                      "ROUTINE_SCHEMA = DATABASE() ORDER BY ROUTINE_TYPE, ROUTINE_NAME")) {
        const std::string kind = v.at("k").get<std::string>(); // PROCEDURE, FUNCTION (MariaDB: also PACKAGE...)
        if (kind != "PROCEDURE" && kind != "FUNCTION") continue;
        auto o = show_create(c, kind, v.at("n").get<std::string>(), kind == "PROCEDURE" ? "Create Procedure" : "Create Function");
        o["kind"] = kind;
        routines.push_back(std::move(o));
    }
    schema["routines"] = std::move(routines);
    nlohmann::json triggers = nlohmann::json::array();
    // A trigger lives in its table's database; the server looks triggers up by the table's
    // (EVENT_OBJECT_SCHEMA) and reads every database's for TRIGGER_SCHEMA alone.
    for (const auto& v : rows_json(c, "SELECT TRIGGER_NAME AS n FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
                                      "DATABASE() ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER"))
        triggers.push_back(show_create(c, "TRIGGER", v.at("n").get<std::string>(), "SQL Original Statement"));
    schema["triggers"] = std::move(triggers);
    nlohmann::json events = nlohmann::json::array();
    for (const auto& v : rows_json(c, "SELECT EVENT_NAME AS n FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() "
                                      "ORDER BY EVENT_NAME"))
        events.push_back(show_create(c, "EVENT", v.at("n").get<std::string>(), "Create Event"));
    schema["events"] = std::move(events);
    return schema;
}

/// Returns where the binary log was when the snapshot was taken (for point-in-time recovery), or
/// nothing when the server writes none or the user may not ask.
inline nlohmann::json binlog_position(Connection& c) {
    try {
        const Rows r = c.query("SHOW MASTER STATUS");
        if (r.empty()) return nullptr;
        nlohmann::json o = {{"file", r[0][0].value_or("")}, {"position", r[0][1].value_or("")}};
        if (c.is_mariadb())
            o["gtid_binlog_pos"] = c.query_value("SELECT @@GLOBAL.gtid_binlog_pos").value_or("");
        return o;
    } catch (const Error&) {
        return nullptr;
    }
}

/// Runs one schema object's statement in the session it was created in.
inline void create_object(Connection& c, const nlohmann::json& o) {
    std::string session;
    for (const char* v : {"sql_mode", "character_set_client", "collation_connection", "time_zone"})
        if (o.contains(v) && !o.at(v).get<std::string>().empty())
            session += std::string(session.empty() ? "SET SESSION " : ", ") + v + " = " +
                       c.quote_string(o.at(v).get<std::string>());
    if (!session.empty()) c.exec(session);
    c.exec(o.at("sql").get<std::string>());
}

/// Creates the views, telling `created` each one's name; one that reads another view not created
/// yet fails and is tried again after the others (the set does not know their order), until a
/// round creates none.
inline void create_views(Connection& c, const nlohmann::json& views, const std::function<void(const std::string&)>& created) {
    std::vector<const nlohmann::json*> left;
    for (const auto& v : views) left.push_back(&v);
    while (!left.empty()) {
        std::vector<const nlohmann::json*> again;
        std::string last_error;
        for (const auto* v : left) {
            try {
                create_object(c, *v);
                created(v->at("name").get<std::string>());
            } catch (const Error& e) {
                if (e.code() != 1146) throw; // ER_NO_SUCH_TABLE: a view it reads comes later
                again.push_back(v);
                last_error = e.what();
            }
        }
        if (again.size() == left.size()) throw Error("creating the views failed: " + last_error, 1146, "42S02");
        left = std::move(again);
    }
}


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

/// Returns whether the connection's database has the object `o` of `section` (by its name).
inline bool object_exists(Connection& c, const std::string& section, const nlohmann::json& o) {
    const std::string name = c.quote_string(o.at("name").get<std::string>());
    std::string sql;
    if (section == "routines")
        sql = "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = " +
              c.quote_string(o.value("kind", "PROCEDURE")) + " AND ROUTINE_NAME = " + name;
    else if (section == "views")
        sql = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = " + name;
    else if (section == "triggers")
        sql = "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND TRIGGER_NAME = " + name;
    else
        sql = "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() AND EVENT_NAME = " + name;
    return c.query_value(sql) != "0";
}

/// Creates the set's routines, views (in an order that works), triggers and events, from
/// `objects` (routines, views, triggers, events as schema.json has them), telling `created` the
/// DROP statement of each; with `skip_existing`, one the database already has is left as it is
/// (finishing an interrupted restore, which may have created some).
inline void create_set_objects(Connection& c, const nlohmann::json& objects, bool skip_existing,
                               const std::function<void(std::string)>& created) {
    const auto missing = [&](const char* section) {
        nlohmann::json left = nlohmann::json::array();
        for (const auto& o : objects.at(section))
            if (!skip_existing || !object_exists(c, section, o)) left.push_back(o);
        return left;
    };
    for (const auto& r : missing("routines")) {
        create_object(c, r);
        created("DROP " + r.at("kind").get<std::string>() + " IF EXISTS " + quote_identifier(r.at("name").get<std::string>()));
    }
    create_views(c, missing("views"), [&](const std::string& name) { created("DROP VIEW IF EXISTS " + quote_identifier(name)); });
    for (const auto& t : missing("triggers")) {
        create_object(c, t);
        created("DROP TRIGGER IF EXISTS " + quote_identifier(t.at("name").get<std::string>()));
    }
    for (const auto& e : missing("events")) {
        create_object(c, e);
        created("DROP EVENT IF EXISTS " + quote_identifier(e.at("name").get<std::string>()));
    }
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

/// Refuses, before anything is restored, a set whose views, triggers, routines or events name a
/// DEFINER the connection's user may not give (another account, without SET USER or SUPER): they
/// would fail only after every table was loaded. The server decides, through a probe view named
/// `probe` created with that definer and dropped at once; a probe refused for another reason (no
/// CREATE VIEW privilege, say) decides nothing, and the objects' own creation will tell.
inline void check_definers(Connection& c, const nlohmann::json& schema, const std::string& probe, const std::string& what) {
    const std::string me = c.query_value("SELECT CURRENT_USER()").value_or("");
    std::vector<std::string> tried;
    for (const char* section : {"views", "routines", "triggers", "events"}) {
        for (const auto& o : schema.at(section)) {
            const std::string sql = o.at("sql").get<std::string>();
            const auto clause = find_definer(sql);
            if (!clause || clause->account == "CURRENT_USER" || clause->account == me) continue;
            const std::string definer = sql.substr(clause->begin, clause->end - clause->begin);
            if (std::find(tried.begin(), tried.end(), definer) != tried.end()) continue;
            tried.push_back(definer);
            try {
                c.exec("CREATE " + definer + " SQL SECURITY INVOKER VIEW " + quote_identifier(probe) + " AS SELECT 1");
                c.exec("DROP VIEW " + quote_identifier(probe));
            } catch (const Error& e) {
                if (e.code() != 1227) continue; // ER_SPECIFIC_ACCESS_DENIED_ERROR: "you need SET USER or SUPER"
                std::string kind = section == std::string("routines") ? o.value("kind", "routine") : section;
                if (kind.back() == 's') kind.pop_back();
                for (auto& ch : kind) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                throw Error(what + ": the set's " + kind + " " + quote_identifier(o.at("name").get<std::string>()) +
                                " has " + definer + ", and " + me +
                                " may not create objects for another account (it needs SET USER or SUPER); restore "
                                "with DatabaseRestoreOptions::definers = Definers::current_user to make the restoring "
                                "user their definer, or as a user who may; nothing was changed",
                            1227, "42000");
            }
        }
    }
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
