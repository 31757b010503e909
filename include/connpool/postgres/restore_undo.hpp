#pragma once

// How a PostgreSQL restore_database is all-or-nothing although its tables load in parallel,
// each in its own committed transaction (database.hpp). The pre-data transaction records, in
// the same commit, an undo journal: the DROP statements for every schema, relation, type,
// routine and extension it created (found in the catalogs: rows that did not exist before it and
// that it wrote), kept in a schema of its own ("#connpool-restore-<run>".undo). The final
// post-data transaction drops the journal, so the restore's success commits with it; a failed or
// cancelled restore runs the journal and drops it in one transaction (the database is as it was),
// and one that was killed leaves it for the next restore_database into that database, which runs
// it before anything else. A session advisory lock keeps a second restore out of the database
// meanwhile (it goes with the session, so a killed one's goes too).
//
// What pre-data does to objects that were there before (say a COMMENT ON SCHEMA public) is not
// undone; neither are objects of kinds other than those above that it creates in a schema that
// was there before (operators, collations, casts, text search objects: pg_dump writes few).

#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "connection.hpp"
#include "error.hpp"

namespace connpool::postgres::detail {

/// What the name of a restore's journal schema starts with.
inline constexpr const char* undo_prefix = "#connpool-restore-";

/// The advisory lock one restore into a database holds (advisory locks are per database).
inline constexpr const char* restore_lock_key = "7165041953408630124"; // "connpool" hashed to a bigint

/// Returns a new restore's journal schema name: the prefix and 8 random hex digits.
inline std::string undo_schema_name() {
    std::random_device random;
    char id[16];
    std::snprintf(id, sizeof id, "%08x", static_cast<unsigned>(random()));
    return std::string(undo_prefix) + id;
}

/// The catalogs' OIDs before pre-data ran (each an oid[] literal), so that what it created can be
/// told from what it only changed.
struct CatalogBefore {
    std::string namespaces, relations, routines, types, extensions;
};

/// Returns the OIDs of the database's schemas, relations, routines, types and extensions.
inline CatalogBefore catalog_before(Connection& c) {
    const Result r = c.exec(
        "SELECT (SELECT coalesce(array_agg(oid), '{}') FROM pg_catalog.pg_namespace)::text, (SELECT coalesce(array_agg(oid), "
        "'{}') FROM pg_catalog.pg_class)::text, (SELECT coalesce(array_agg(oid), '{}') FROM pg_catalog.pg_proc)::text, "
        "(SELECT coalesce(array_agg(oid), '{}') FROM pg_catalog.pg_type)::text, (SELECT coalesce(array_agg(oid), '{}') FROM "
        "pg_catalog.pg_extension)::text");
    return {r.get(0, 0), r.get(0, 1), r.get(0, 2), r.get(0, 3), r.get(0, 4)};
}

/// Returns, inside the transaction that ran pre-data, the statements that drop what it created:
/// relations, types and routines outside the schemas it created, those schemas, then its
/// extensions (an extension's own objects go with it). Every name is schema-qualified.
inline std::vector<std::string> undo_statements(Connection& c, const CatalogBefore& before) {
    // A row this transaction wrote has its xid as xmin; one that existed before has an OID in
    // `before`, so an object pre-data only altered is not taken for one it created.
    static const std::string sql = R"SQL(
WITH me AS (SELECT pg_catalog.pg_current_xact_id()::xid AS xid),
ns AS (SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n, me
       WHERE n.xmin = me.xid AND NOT n.oid = ANY ($1::oid[])),
ext AS (SELECT d.classid, d.objid FROM pg_catalog.pg_depend d WHERE d.deptype = 'e')
SELECT 0 AS ord, 'DROP ' || CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
       WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END || ' IF EXISTS ' ||
       CASE c.relkind WHEN 'c' THEN c.reltype::pg_catalog.regtype::text ELSE c.oid::pg_catalog.regclass::text END || ' CASCADE'
  FROM pg_catalog.pg_class c, me
 WHERE c.xmin = me.xid AND NOT c.oid = ANY ($2::oid[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
   AND NOT c.relispartition AND c.relnamespace NOT IN (SELECT oid FROM ns)
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND ext.objid = c.oid)
UNION ALL
SELECT 1, 'DROP ' || CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END ||
       ' IF EXISTS ' || p.oid::pg_catalog.regprocedure::text || ' CASCADE'
  FROM pg_catalog.pg_proc p, me
 WHERE p.xmin = me.xid AND NOT p.oid = ANY ($3::oid[]) AND p.pronamespace NOT IN (SELECT oid FROM ns)
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND ext.objid = p.oid)
UNION ALL
SELECT 2, 'DROP TYPE IF EXISTS ' || t.oid::pg_catalog.regtype::text || ' CASCADE'
  FROM pg_catalog.pg_type t, me
 WHERE t.xmin = me.xid AND NOT t.oid = ANY ($4::oid[]) AND t.typnamespace NOT IN (SELECT oid FROM ns) AND t.typrelid = 0
   AND (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'b' AND t.typelem = 0 AND t.typcategory <> 'A'))
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND ext.objid = t.oid)
UNION ALL
SELECT 3, 'DROP SCHEMA IF EXISTS ' || pg_catalog.quote_ident(ns.nspname) || ' CASCADE' FROM ns
UNION ALL
SELECT 4, 'DROP EXTENSION IF EXISTS ' || pg_catalog.quote_ident(e.extname) || ' CASCADE'
  FROM pg_catalog.pg_extension e, me
 WHERE e.xmin = me.xid AND NOT e.oid = ANY ($5::oid[])
ORDER BY 1, 2)SQL";
    const Result r =
        c.query(sql, {before.namespaces, before.relations, before.routines, before.types, before.extensions});
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(r.get(i, 1));
    return out;
}

/// Creates the journal schema `schema` holding `statements` (inside the pre-data transaction, so
/// it commits with what it undoes).
inline void write_undo_journal(Connection& c, const std::string& schema, const std::vector<std::string>& statements) {
    const std::string q = *c.query_value("SELECT pg_catalog.quote_ident($1)", {schema});
    c.exec("CREATE SCHEMA " + q + "; CREATE TABLE " + q + ".undo (seq int PRIMARY KEY, statement text NOT NULL)");
    for (std::size_t i = 0; i < statements.size(); ++i)
        c.query("INSERT INTO " + q + ".undo VALUES ($1::int, $2)", {std::to_string(i), statements[i]});
}

/// Returns the SQL that drops the journal schema `schema` (the commit point of a restore).
inline std::string drop_undo_journal(Connection& c, const std::string& schema) {
    return "DROP SCHEMA " + *c.query_value("SELECT pg_catalog.quote_ident($1)", {schema}) + " CASCADE";
}

/// Runs the journal in `schema` and drops it, in one transaction: what its restore created goes.
/// Throws Error (the transaction rolled back, the journal kept) when a statement fails.
inline void run_undo_journal(Connection& c, const std::string& schema) {
    const std::string q = *c.query_value("SELECT pg_catalog.quote_ident($1)", {schema});
    c.exec("BEGIN");
    try {
        const Result r = c.exec("SELECT statement FROM " + q + ".undo ORDER BY seq");
        for (int i = 0; i < r.rows(); ++i) c.exec(r.get(i, 0));
        c.exec("DROP SCHEMA " + q + " CASCADE");
        c.exec("COMMIT");
    } catch (...) {
        try {
            c.exec("ROLLBACK");
        } catch (const Error&) {
        }
        throw;
    }
}

/// Takes the restore lock of the connection's database for its session; returns false when
/// another session (a restore running) holds it for 2 s. (A killed restore's session ends when
/// the server notices the closed socket, usually at once, at worst after its current statement.)
inline bool take_restore_lock(Connection& c) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{2};
    for (;;) {
        if (c.query_value("SELECT pg_catalog.pg_try_advisory_lock($1::bigint)", {std::string(restore_lock_key)}) == "t")
            return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
}

/// Undoes the restores into the connection's database that were killed before they ended (their
/// journals are still there); the caller holds the restore lock, so none of them is running.
/// Throws Error naming the journal when one cannot be run.
inline void undo_killed_restores(Connection& c) {
    const Result r = c.query("SELECT nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.left(nspname, $2::int) = $1 "
                             "ORDER BY nspname",
                             {std::string(undo_prefix), std::to_string(std::char_traits<char>::length(undo_prefix))});
    for (int i = 0; i < r.rows(); ++i) {
        const std::string schema = r.get(i, 0);
        try {
            run_undo_journal(c, schema);
        } catch (const Error& e) {
            throw Error("a restore into this database was killed before it ended, and dropping what it had created "
                        "failed (its journal is kept in schema \"" + schema + "\"): " + e.what(),
                        e.sqlstate());
        }
    }
}

} // namespace connpool::postgres::detail
