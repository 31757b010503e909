#pragma once

// What a MySQL database set records besides the rows (database.hpp): SHOW CREATE of its tables
// and of the database's views, triggers, procedures, functions and events, each with the sql_mode
// and character set it was created in (an event also with its time zone, which its schedule is
// read in) (schema.json), and the binary log position (metadata.json);
// and how a restore runs those statements again.

#include <algorithm>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "connection.hpp"
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

/// Returns the names of `database`'s relations that the view definition `definition` reads: the
/// server writes each table a view reads as `database`.`name` (information_schema.VIEWS, MariaDB
/// and MySQL alike), columns by their table's alias. Only names in `relations` count (an alias
/// that happens to be the database's name is not a relation).
inline std::set<std::string> view_reads(std::string_view definition, const std::string& database,
                                        const std::set<std::string>& relations) {
    std::set<std::string> out;
    const std::string needle = quote_identifier(database) + ".";
    for (std::size_t at = definition.find(needle); at != std::string_view::npos; at = definition.find(needle, at + 1)) {
        std::size_t pos = at + needle.size();
        if (pos >= definition.size() || definition[pos] != '`') continue;
        std::string name;
        for (++pos; pos < definition.size(); ++pos) {
            if (definition[pos] == '`') {
                if (pos + 1 < definition.size() && definition[pos + 1] == '`') {
                    name += '`';
                    ++pos;
                } else {
                    break;
                }
            } else {
                name += definition[pos];
            }
        }
        if (relations.count(name) != 0) out.insert(std::move(name));
    }
    return out;
}

/// Reads the schema of the set's tables and the database's views, triggers, routines and events.
/// A view is copied when every relation of the database it reads is one of `tables` or a copied
/// view, a trigger when its table is one of `tables`: with a chosen subset, the others could not
/// be created on restore. They are listed in "left_out". Routines and events are always copied
/// (their bodies are read only when they run).
inline nlohmann::json read_schema(Connection& c, const std::vector<Table>& tables) {
    nlohmann::json schema = {{"format", "connpool-mysql-set"}, {"version", schema_version}};
    nlohmann::json list = nlohmann::json::array();
    std::set<std::string> have; // what the restored database will have to read from
    for (const auto& t : tables) {
        list.push_back(show_create(c, "TABLE", t.name, "Create Table"));
        have.insert(t.name);
    }
    schema["tables"] = std::move(list);
    nlohmann::json left_out = nlohmann::json::array();
    const std::string database = c.query_value("SELECT DATABASE()").value_or("");
    std::set<std::string> relations;
    for (const auto& r : c.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").rows)
        relations.insert(r[0].value_or(""));
    std::vector<std::pair<std::string, std::set<std::string>>> pending;
    for (const auto& v : rows_json(c, "SELECT TABLE_NAME AS n, VIEW_DEFINITION AS d FROM information_schema.VIEWS WHERE "
                                      "TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")) {
        const std::string name = v.at("n").get<std::string>();
        pending.emplace_back(name, view_reads(v.at("d").is_string() ? v.at("d").get<std::string>() : "", database, relations));
        pending.back().second.erase(name);
    }
    std::set<std::string> copied;
    for (bool more = true; more;) { // a view of a view: as many rounds as the chain is long
        more = false;
        for (auto& [name, reads] : pending) {
            if (name.empty() || !std::all_of(reads.begin(), reads.end(), [&](const std::string& r) { return have.count(r) != 0; }))
                continue;
            have.insert(name);
            copied.insert(name);
            name.clear();
            more = true;
        }
    }
    nlohmann::json views = nlohmann::json::array();
    for (const auto& [name, reads] : pending) {
        if (!name.empty()) {
            std::vector<std::string> missing;
            for (const auto& r : reads)
                if (have.count(r) == 0) missing.push_back(r);
            left_out.push_back({{"kind", "view"}, {"name", name}, {"reads", missing}});
        }
    }
    for (const auto& name : copied) views.push_back(show_create(c, "VIEW", name, "Create View"));
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
    for (const auto& v : rows_json(c, "SELECT TRIGGER_NAME AS n, EVENT_OBJECT_TABLE AS t FROM information_schema.TRIGGERS "
                                      "WHERE EVENT_OBJECT_SCHEMA = DATABASE() ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER")) {
        const std::string table = v.at("t").get<std::string>();
        if (std::none_of(tables.begin(), tables.end(), [&](const Table& t) { return t.name == table; }))
            left_out.push_back({{"kind", "trigger"}, {"name", v.at("n")}, {"table", table}});
        else
            triggers.push_back(show_create(c, "TRIGGER", v.at("n").get<std::string>(), "SQL Original Statement"));
    }
    schema["triggers"] = std::move(triggers);
    nlohmann::json events = nlohmann::json::array();
    for (const auto& v : rows_json(c, "SELECT EVENT_NAME AS n FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() "
                                      "ORDER BY EVENT_NAME"))
        events.push_back(show_create(c, "EVENT", v.at("n").get<std::string>(), "Create Event"));
    schema["events"] = std::move(events);
    schema["left_out"] = std::move(left_out);
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

} // namespace connpool::mysql::detail
