#pragma once

// postgres::backup_database / restore_database: every table of a database as one job per table
// through a JobRunner, all reading one consistent snapshot, as pg_dump -j takes it.
//
// Backup: a leader lease (from the runner's pool, beside the table jobs' leases: a pool of N+1
// runs N tables at once; a pool of fewer than 2 is refused) opens a REPEATABLE READ transaction,
// exports its snapshot (pg_export_snapshot()), takes ACCESS SHARE on every table (so no DDL can
// change them meanwhile; NOWAIT by default, like pg_dump, so a table locked by someone else fails
// the set at once) and holds all of it until the last table job ends. Sequences' values are
// recorded; the tables are submitted largest first, each importing the snapshot; meanwhile
// pg_dump --schema-only --snapshot writes the DDL (pre-data: tables, types, functions;
// post-data: indexes, constraints, triggers), both sections at once (a failure cancels the
// tables and fails the set); the manifest is written last, only when everything succeeded.
//
// Restore: the manifest is checked (every file's size and checksum) before anything is touched;
// then the pre-data SQL runs and the tables load in parallel (restore_table). As each table's
// job commits, its indexes and key constraints (the post-data objects that need only that table;
// post_data.hpp) are submitted as one more job through the runner, so they are built while the
// other tables load, as pg_restore -j does, with the pool still bounding the connections; that
// job ends with RESET ALL, so pg_dump's session SETs do not stay in the pool (a failed one is
// discarded). When every table and those jobs succeeded: the key constraints and indexes no one
// table claimed, on the leader and every connection the pool has idle, each in its own
// transaction; then the rest (foreign keys, triggers, ...) and the sequences in one. The leader
// and those helpers ran pg_dump's SET commands, so they are discarded afterwards. A failing
// piece fails the set, naming it. The whole is all-or-nothing through an undo journal the
// pre-data transaction commits and the last post-data one drops (restore_undo.hpp): a failed or
// cancelled set drops what it created; a killed one is undone by the next restore.
//
// Layout of a set: pre-data.sql, post-data.sql, tables.json (schema, name, file of each table),
// sequences.json, table-NNNN.copy (table_file.hpp), manifest.json.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../io/backup_set.hpp"
#include "../io/durable_file.hpp"
#include "../io/manifest.hpp"
#include "../jobs.hpp"
#include "../lease.hpp"
#include "catalog.hpp"
#include "connection.hpp"
#include "error.hpp"
#include "pg_dump.hpp"
#include "post_data.hpp"
#include "restore_undo.hpp"
#include "table.hpp"
#include "table_backup.hpp"
#include "table_restore.hpp"

namespace connpool::postgres {

/// How backup_database() copies. Every field has a default.
struct DatabaseBackupOptions {
    /// The tables to copy (their DDL is taken with pg_dump --table, their schemas are created if
    /// missing, and only the sequences they own are recorded); a name that does not exist fails
    /// backup_database before anything is written. Default: every ordinary table outside the
    /// system schemas and extensions.
    std::vector<Table> tables{};
    /// Format, compression and verification of each table's file (overwrite and snapshot are set
    /// by the backup). Default: TableBackupOptions' defaults.
    TableBackupOptions table{};
    /// How long the leader waits for each table's lock. Default 0 = fail at once when a table is
    /// locked exclusively by someone else (pg_dump's NOWAIT behaviour). pg_dump, whose locks come
    /// after the leader's, waits this long but at least 10 s (detail::pg_dump_lock_wait_floor).
    std::chrono::milliseconds lock_timeout{0};
    /// The pg_dump to run. Default: Debian's for the server's major version, else pg_dump on PATH.
    std::filesystem::path pg_dump{};
    /// Called once per table job, before it is submitted; what it returns is that job's progress
    /// callback (e.g. `[&](const Table&) { return hub.track(); }`, so every table's events reach
    /// the monitoring sinks). Default none.
    std::function<ProgressCallback(const Table&)> table_progress{};
};

/// How restore_database() loads. Every field has a default.
struct DatabaseRestoreOptions {
    /// Passed to each table's restore (TableRestoreOptions::lock_timeout). Default 0.
    std::chrono::milliseconds lock_timeout{0};
    /// As DatabaseBackupOptions::table_progress: each table job's progress callback, asked again
    /// (from the set's own thread) for the table's "<table> (indexes)" job. Default none.
    std::function<ProgressCallback(const Table&)> table_progress{};
};

using io::DatabaseOperation; // the set in flight: wait(), error(), cancel(), progress(), tables()
using io::DatabaseProgress; // bytes done/total over the tables, tables done, ETA

namespace detail {

using io::detail::finish_set;
using io::detail::read_set_file;
using io::detail::wait_tables;
using io::detail::write_set_file;

inline void require_leader_and_one(std::size_t max_size, const char* function) {
    io::detail::require_leader_and_one(max_size, std::string("connpool::postgres::") + function);
}

inline constexpr const char* pre_data_file = "pre-data.sql";
inline constexpr const char* post_data_file = "post-data.sql";
inline constexpr const char* tables_file = "tables.json";
inline constexpr const char* sequences_file = "sequences.json";

/// Returns pg_dump's plain SQL without the psql meta-commands recent releases put around it
/// (`\\restrict KEY` first, `\\unrestrict KEY` last: guards for psql, which libpq does not parse).
/// Only that pair is removed (the key must match), so a line of a function body is never touched.
inline std::string without_restrict(const std::string& sql) {
    const std::size_t start = sql.find("\n\\restrict ");
    const std::size_t begin = start == std::string::npos ? (sql.rfind("\\restrict ", 0) == 0 ? 0 : std::string::npos)
                                                         : start + 1;
    if (begin == std::string::npos) return sql;
    const std::size_t end_of_line = sql.find('\n', begin);
    if (end_of_line == std::string::npos) return sql;
    const std::string key = sql.substr(begin + 10, end_of_line - begin - 10);
    const std::string closing = "\\unrestrict " + key;
    const std::size_t close = sql.rfind("\n" + closing);
    if (key.empty() || close == std::string::npos) return sql;
    std::string out = sql.substr(0, begin) + sql.substr(end_of_line + 1, close + 1 - (end_of_line + 1));
    const std::size_t after = sql.find('\n', close + 1);
    if (after != std::string::npos) out += sql.substr(after + 1);
    return out;
}

/// A table of the set, with its file and its size when the backup started.
struct SetTable {
    Table table;
    std::string file;
    std::uint64_t size = 0;
};

/// Lists the ordinary tables to copy (system schemas and extensions' tables left out), takes
/// ACCESS SHARE on each (see lock_table: a table someone holds exclusively fails fast), then
/// sorts them largest first by their size on disk (which needs the lock, hence after it).
inline std::vector<SetTable> list_and_lock_tables(Connection& c, const std::vector<Table>& chosen,
                                                  std::chrono::milliseconds lock_timeout) {
    std::vector<SetTable> out;
    if (!chosen.empty()) {
        // Named tables are checked all at once, so the message lists every missing one.
        std::string missing;
        for (const auto& t : chosen) {
            if (c.query_value("SELECT to_regclass($1) IS NULL", {qualified(c.handle(), t)}) == "t")
                missing += (missing.empty() ? "" : ", ") + t.display();
            out.push_back({t, "", 0});
        }
        if (!missing.empty())
            throw Error("DatabaseBackupOptions::tables names what does not exist in " + c.where() + ": " + missing, "42P01");
    } else {
        const Result r = c.exec(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND "
            "n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND NOT EXISTS (SELECT 1 FROM "
            "pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')");
        for (int i = 0; i < r.rows(); ++i) out.push_back({Table{r.get(i, 0), r.get(i, 1)}, "", 0});
    }
    for (auto& t : out) {
        lock_table(c, t.table, "ACCESS SHARE", lock_timeout);
        t.size = table_size(c, t.table);
    }
    std::stable_sort(out.begin(), out.end(), [](const SetTable& a, const SetTable& b) { return a.size > b.size; });
    char name[32];
    for (std::size_t i = 0; i < out.size(); ++i) {
        std::snprintf(name, sizeof name, "table-%04zu.copy", i + 1);
        out[i].file = name;
    }
    return out;
}

/// Returns the sequences' state as JSON: every sequence outside system schemas and extensions,
/// or, when tables were chosen, the ones those tables own (serial and identity columns: what
/// pg_dump --table puts in the pre-data, so restore's setval finds them). Read on the leader in
/// its snapshot's transaction, as pg_dump does; sequences are not MVCC, so this is the value now,
/// at or past what the snapshot's rows used: nextval after a restore never collides with them.
inline nlohmann::json sequence_values(Connection& c, const std::vector<SetTable>& tables, bool chosen) {
    nlohmann::json out = nlohmann::json::array();
    std::string sql =
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = "
        "'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (SELECT 1 FROM pg_depend d "
        "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')";
    if (chosen) {
        std::string owners;
        for (const auto& t : tables)
            owners += (owners.empty() ? "" : ", ") + quote_literal(c.handle(), qualified(c.handle(), t.table)) + "::regclass";
        sql += " AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND "
               "d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjid IN (" + owners + "))";
    }
    const Result r = c.exec(sql);
    for (int i = 0; i < r.rows(); ++i) {
        const Table seq{r.get(i, 0), r.get(i, 1)};
        const Result v = c.exec("SELECT last_value, is_called FROM " + qualified(c.handle(), seq));
        out.push_back({{"schema", seq.schema}, {"name", seq.name}, {"last_value", v.get(0, 0)}, {"is_called", v.get(0, 1) == "t"}});
    }
    return out;
}

/// The least --lock-wait-timeout pg_dump gets. pg_dump makes it a statement_timeout around its
/// LOCK statements, so a small one cancels a LOCK that merely ran slowly (1 ms, meant as NOWAIT,
/// did under load while the table jobs ran). Its locks cannot meet the conflict lock_timeout is
/// about: the leader already holds ACCESS SHARE on every table (taken with lock_timeout), so they
/// can wait only behind a request queued since, and the bound keeps that from hanging the set.
inline constexpr std::chrono::milliseconds pg_dump_lock_wait_floor{10'000};

/// Runs pg_dump --schema-only for `section` in `snapshot` into dir/file.
inline void dump_section(const std::filesystem::path& pg_dump, PGconn* login, const std::string& snapshot,
                         const std::string& section, const std::vector<SetTable>& tables, bool chosen,
                         std::chrono::milliseconds lock_timeout, const std::filesystem::path& dir,
                         const std::string& file) {
    std::vector<std::string> argv{pg_dump.string(), "--schema-only", "--section=" + section, "--snapshot=" + snapshot,
                                  "--no-password",
                                  "--lock-wait-timeout=" +
                                      std::to_string(std::max(pg_dump_lock_wait_floor, lock_timeout).count())};
    std::string schemas;
    if (chosen) {
        for (const auto& t : tables) {
            argv.push_back("--table=" + t.table.display());
            // pg_dump --table leaves the tables' schemas out: create them, so an empty database takes the set.
            const std::string create = "CREATE SCHEMA IF NOT EXISTS " + quote_identifier(login, t.table.schema) + ";\n";
            if (section == "pre-data" && schemas.find(create) == std::string::npos) schemas += create;
        }
    }
    io::TempFile temp(dir / file, io::Publish::no_replace);
    for (std::size_t written = 0; written < schemas.size();) { // before pg_dump's output (same file offset)
        const ssize_t n = ::write(temp.fd(), schemas.data() + written, schemas.size() - written);
        if (n < 0 && errno != EINTR) io::detail::throw_errno("cannot write " + file_quoted(temp.path()), errno);
        if (n > 0) written += static_cast<std::size_t>(n);
    }
    run_tool(argv, login, temp.fd(), "pg_dump of the " + section + " schema");
    temp.sync();
    temp.publish();
}

/// Which table jobs of a restore have ended, told by their final callbacks, for the finisher.
class LoadedTables {
public:
    /// Records that table `table`'s job ended in `end`. Called from its final callback.
    void ended(std::size_t table, JobState end) {
        {
            std::lock_guard lock(mu_);
            ++ended_;
            if (end == JobState::succeeded) {
                committed_.push_back(table);
            } else {
                trouble_ = true;
            }
        }
        cv_.notify_all();
    }

    /// Waits (up to 100 ms) until a table committed or all of `handles` ended; returns the tables
    /// committed since the last call (none once a table failed or was cancelled: the set fails
    /// anyway) and whether every table job has ended (asked of the handles too, so a final
    /// callback that never told us cannot hang the set).
    std::pair<std::vector<std::size_t>, bool> take(const std::vector<JobHandle>& handles) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(100),
                     [&] { return !committed_.empty() || ended_ == handles.size(); });
        std::vector<std::size_t> out;
        if (!trouble_) out.swap(committed_);
        committed_.clear();
        bool all = ended_ == handles.size();
        lock.unlock();
        if (!all)
            all = std::all_of(handles.begin(), handles.end(),
                              [](const JobHandle& h) { return h.wait_for(std::chrono::milliseconds(0)); });
        return {std::move(out), all};
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::size_t> committed_;
    std::size_t ended_ = 0;
    bool trouble_ = false;
};

/// Returns the job that runs one table's post-data `pieces` (of `post`), each in its own
/// transaction, then RESET ALL so pg_dump's session SETs do not stay with the pooled connection
/// (a failure throws a non-OperationError: the runner discards that connection).
inline Job<Connection> table_post_data_job(const Table& table, std::shared_ptr<const PostData> post,
                                           std::vector<const PostDataPiece*> pieces) {
    return Job<Connection>{table.display() + " (indexes)", JobKind::restore,
                           [post = std::move(post), pieces = std::move(pieces)](Connection& c, ProgressReporter& r) {
                               r.set_total(pieces.size(), "objects");
                               r.set_phase("building indexes and keys");
                               c.exec(post->preamble);
                               for (const PostDataPiece* p : pieces) {
                                   if (r.stop_requested()) break;
                                   c.exec(p->sql);
                                   r.advance(1);
                               }
                               c.exec("RESET ALL");
                           }};
}

} // namespace detail

/// Backs up every table of the runner's database (or DatabaseBackupOptions::tables) into the new
/// directory `dest_dir` (it must not exist, or be empty), one job per table through `runner`,
/// all reading one snapshot, schema included (pg_dump), manifest written last; see the file
/// comment. Returns at once with the table jobs submitted. Throws, before any job runs, when the
/// pool cannot give the leader and a table job a connection each (std::invalid_argument), when
/// the directory is unusable or pg_dump is missing (io::Error / Error), or when a table is locked.
template <class Runner>
[[nodiscard]] DatabaseOperation backup_database(Runner& runner, std::filesystem::path dest_dir,
                                                DatabaseBackupOptions options = {}) {
    namespace fs = std::filesystem;
    auto& pool = runner.pool();
    detail::require_leader_and_one(pool.stats().max_size, "backup_database");
    io::detail::require_new_directory(dest_dir);
    std::error_code ec;

    auto leader = std::make_shared<decltype(pool.acquire())>(pool.acquire());
    Connection& c = **leader;
    const std::string what = "backup of " + c.where() + " to " + detail::file_quoted(dest_dir);
    std::vector<detail::SetTable> tables;
    std::string snapshot;
    fs::path pg_dump_path;
    try {
        c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        snapshot = *c.query_value("SELECT pg_export_snapshot()");
        tables = detail::list_and_lock_tables(c, options.tables, options.lock_timeout);
        // Only now, with every table found and locked, does the set's directory appear.
        fs::create_directories(dest_dir, ec);
        if (ec) throw io::Error("cannot create " + detail::file_quoted(dest_dir) + ": " + ec.message(), ec.value());
        ::chmod(dest_dir.c_str(), 0700);
        const int major = std::stoi(*c.query_value("SELECT current_setting('server_version_num')")) / 10000;
        const fs::path pg_dump = detail::find_pg_dump(options.pg_dump, major);
        if (const int tool = detail::pg_dump_major(pg_dump, c.handle()); tool < major)
            throw Error("pg_dump at '" + pg_dump.string() + "' is version " + std::to_string(tool) +
                            ", older than the server's " + std::to_string(major) + " (it cannot dump it)",
                        "");
        pg_dump_path = pg_dump;
        detail::write_set_file(dest_dir, detail::sequences_file,
                               detail::sequence_values(c, tables, !options.tables.empty()).dump(2) + "\n");
        nlohmann::json list = nlohmann::json::array();
        for (const auto& t : tables)
            list.push_back({{"schema", t.table.schema}, {"name", t.table.name}, {"file", t.file}, {"size", t.size}});
        detail::write_set_file(dest_dir, detail::tables_file, list.dump(2) + "\n");
    } catch (const Error& e) {
        leader->discard(); // its transaction may be anywhere
        if (e.sqlstate() == "55P03")
            throw Error(what + ": a table is locked by another session (lock_not_available; set lock_timeout to wait): " +
                            e.what(),
                        e.sqlstate());
        throw Error(what + ": " + e.what(), e.sqlstate());
    }

    auto state = std::make_shared<DatabaseOperation::State>();
    TableBackupOptions table_options = options.table;
    table_options.snapshot = snapshot;
    table_options.overwrite = false;
    table_options.lock_timeout = options.lock_timeout;
    // Each job leaves its file's digest in its slot, so the manifest needs no second read of
    // the set; the finisher reads them after every job has ended.
    auto digests = std::make_shared<std::vector<std::optional<io::FileDigest>>>(tables.size());
    for (std::size_t i = 0; i < tables.size(); ++i) {
        const auto& t = tables[i];
        Job<Connection> job = backup_table(t.table, dest_dir / t.file, table_options); // checks the options
        job.run = [digests, i, table = t.table, dest = dest_dir / t.file, table_options](Connection& c,
                                                                                      ProgressReporter& r) {
            (*digests)[i] = detail::run_table_backup(c, table, dest, table_options, r);
        };
        state->expected.push_back(t.size); // what backup_table's estimate will say, before it runs
        state->handles.push_back(runner.submit(std::move(job),
                                               options.table_progress ? options.table_progress(t.table) : ProgressCallback{}));
    }
    state->finisher = std::thread([state_ptr = state.get(), leader, tables, digests, dest_dir, what, pg_dump_path, snapshot,
                                   chosen = !options.tables.empty(), lock_timeout = options.lock_timeout] {
        // The schema is dumped while the tables are copied (pg_dump makes its own connections,
        // into the leader's snapshot, which lives until the COMMIT below): its two runs take
        // no time from the data. A failure cancels the table jobs.
        std::string schema_error;
        try {
            std::exception_ptr pre_error;
            std::thread pre([&] {
                try {
                    detail::dump_section(pg_dump_path, (*leader)->handle(), snapshot, "pre-data", tables, chosen,
                                         lock_timeout, dest_dir, detail::pre_data_file);
                } catch (...) {
                    pre_error = std::current_exception();
                }
            });
            try {
                detail::dump_section(pg_dump_path, (*leader)->handle(), snapshot, "post-data", tables, chosen,
                                     lock_timeout, dest_dir, detail::post_data_file);
            } catch (...) {
                pre.join();
                throw;
            }
            pre.join();
            if (pre_error) std::rethrow_exception(pre_error);
        } catch (const std::exception& e) {
            schema_error = what + ": " + e.what();
            for (const auto& h : state_ptr->handles) h.cancel();
        }
        auto [end, error] = detail::wait_tables(state_ptr->handles);
        if (!schema_error.empty()) {
            end = JobState::failed;
            error = schema_error;
        }
        if (end == JobState::succeeded) {
            try {
                io::Manifest manifest;
                for (const char* name : {detail::pre_data_file, detail::post_data_file, detail::sequences_file,
                                         detail::tables_file})
                    manifest.files.push_back(io::manifest_entry(dest_dir, name));
                for (std::size_t i = 0; i < tables.size(); ++i) {
                    if (!(*digests)[i]) throw std::logic_error("table " + tables[i].table.display() + " succeeded without a file");
                    manifest.files.push_back({tables[i].file, *(*digests)[i]});
                }
                io::write_manifest(dest_dir, manifest);
                (*leader)->exec("COMMIT");
            } catch (const std::exception& e) {
                end = JobState::failed;
                error = what + ": " + e.what();
            }
        }
        if (end != JobState::succeeded) leader->discard();
        leader->release();
        detail::finish_set(*state_ptr, end, std::move(error));
    });
    return DatabaseOperation(std::move(state));
}

/// Restores the backup set in `src_dir` into the runner's database: the manifest is checked
/// first, then pre-data schema, the tables in parallel (one restore_table job each, largest first),
/// then post-data and sequences; see the file comment. Into an empty database it recreates the
/// schema and the data. Returns at once with the table jobs submitted; throws, before touching the
/// database, when the set is incomplete or changed (io::Error naming the file), and when the
/// pre-data schema fails (Error, nothing of it kept: it runs in one transaction).
template <class Runner>
[[nodiscard]] DatabaseOperation restore_database(Runner& runner, std::filesystem::path src_dir,
                                                 DatabaseRestoreOptions options = {}) {
    auto& pool = runner.pool();
    detail::require_leader_and_one(pool.stats().max_size, "restore_database");
    detail::check_lock_timeout(options.lock_timeout, "DatabaseRestoreOptions");
    const io::Manifest manifest = io::verify_manifest(src_dir);
    const auto list = nlohmann::json::parse(detail::read_set_file(src_dir / detail::tables_file), nullptr, false);
    const auto sequences =
        nlohmann::json::parse(detail::read_set_file(src_dir / detail::sequences_file), nullptr, false);
    if (!list.is_array() || !sequences.is_array())
        throw io::Error("backup set " + detail::file_quoted(src_dir) + " has a malformed tables.json or sequences.json", EINVAL);
    std::vector<detail::SetTable> tables;
    for (const auto& t : list) tables.push_back({Table{t.at("schema").get<std::string>(), t.at("name").get<std::string>()},
                                                 t.at("file").get<std::string>(), t.at("size").get<std::uint64_t>()});
    const std::string pre = detail::without_restrict(detail::read_set_file(src_dir / detail::pre_data_file));
    const std::string post = detail::without_restrict(detail::read_set_file(src_dir / detail::post_data_file));

    auto leader = std::make_shared<decltype(pool.acquire())>(pool.acquire());
    Connection& c = **leader;
    const std::string what = "restore of " + detail::file_quoted(src_dir) + " into " + c.where();
    const std::string journal = detail::undo_schema_name(); // restore_undo.hpp: what makes it all-or-nothing
    try {
        if (!detail::take_restore_lock(c))
            throw Error(what + ": another restore_database into this database is running; nothing was changed", "55P03");
        detail::undo_killed_restores(c);
    } catch (const Error& e) {
        leader->discard();
        if (e.sqlstate() == "55P03") throw;
        throw Error(what + ": " + e.what() + "; nothing was changed", e.sqlstate());
    }
    try {
        c.exec("BEGIN");
        const detail::CatalogBefore before = detail::catalog_before(c);
        c.exec(pre);
        detail::write_undo_journal(c, journal, detail::undo_statements(c, before));
        c.exec("COMMIT");
    } catch (const Error& e) {
        leader->discard();
        throw Error(what + ": the pre-data schema failed (nothing of it was kept): " + e.what(), e.sqlstate());
    }
    // Each table's indexes and key constraints need only that table: they are submitted as a
    // job of their own as soon as its data job has succeeded, so they are built while the other
    // tables load (pg_restore -j's order), through the same runner and pool.
    const auto post_data = std::make_shared<const detail::PostData>(detail::split_post_data(post));
    std::vector<std::string> names; // as pg_dump writes them, to find each piece's table
    try {
        for (const auto& t : tables)
            names.push_back(*c.query_value("SELECT pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2)",
                                           {t.table.schema, t.table.name}));
    } catch (const Error& e) {
        leader->discard();
        throw Error(what + ": " + e.what(), e.sqlstate());
    }
    auto by_table = std::make_shared<const detail::TablePostData>(detail::split_by_table(*post_data, names));
    auto loaded = std::make_shared<detail::LoadedTables>();
    auto state = std::make_shared<DatabaseOperation::State>();
    TableRestoreOptions table_options;
    table_options.lock_timeout = options.lock_timeout;
    for (std::size_t i = 0; i < tables.size(); ++i) {
        ProgressCallback user =
            options.table_progress ? options.table_progress(tables[i].table) : ProgressCallback{};
        TableRestoreOptions this_table = table_options;
        // The manifest check read the file whole: while it keeps the identity it had then, its
        // table restore need not read it a second time.
        if (const io::ManifestEntry* entry = manifest.entry(tables[i].file)) this_table.checked = entry->checked;
        state->expected.push_back(detail::TableFileReader(src_dir / tables[i].file).data_bytes()); // checked: it opens
        state->handles.push_back(runner.submit(restore_table(tables[i].table, src_dir / tables[i].file, this_table),
                                               [loaded, i, user = std::move(user)](const Progress& p) {
                                                   if (is_final(p.state)) loaded->ended(i, p.state); // first: user may throw
                                                   if (user) user(p);
                                               }));
    }
    state->finisher = std::thread([state_ptr = state.get(), &runner, &pool, leader, post_data, by_table, loaded,
                                   tables, sequences, what, journal, table_progress = options.table_progress] {
        // Until every table has ended: submit the indexes of each one that committed.
        std::vector<bool> submitted(tables.size(), false);
        const auto submit_post = [&](std::size_t i) {
            submitted[i] = true;
            if (by_table->per_table[i].empty()) return;
            auto job = detail::table_post_data_job(tables[i].table, post_data, by_table->per_table[i]);
            JobHandle h = runner.submit(std::move(job), table_progress ? table_progress(tables[i].table) : ProgressCallback{});
            std::lock_guard lock(state_ptr->mu);
            if (state_ptr->cancel_requested) h.cancel(); // cancel() ran before it was listed
            state_ptr->schema_jobs.push_back(std::move(h));
        };
        for (;;) {
            const auto [committed, all_ended] = loaded->take(state_ptr->handles);
            for (const std::size_t i : committed)
                if (!submitted[i]) submit_post(i);
            if (all_ended) break;
        }
        auto [end, error] = detail::wait_tables(state_ptr->handles);
        if (end == JobState::succeeded) // a table whose final callback never reached us still gets its indexes
            for (std::size_t i = 0; i < tables.size(); ++i)
                if (!submitted[i]) submit_post(i);
        std::vector<JobHandle> schema_jobs;
        {
            std::lock_guard lock(state_ptr->mu);
            schema_jobs = state_ptr->schema_jobs;
        }
        const std::string post_failed = what + ": post-data schema or sequences failed: ";
        for (const auto& h : schema_jobs) {
            const JobState s = h.wait();
            if (end == JobState::succeeded && s == JobState::failed) {
                end = JobState::failed;
                error = post_failed + h.progress().name + ": " + h.error();
            } else if (end == JobState::succeeded && s == JobState::cancelled) {
                end = JobState::cancelled;
                error = h.progress().name + " was cancelled";
            }
        }
        if (end == JobState::succeeded) {
            try {
                Connection& conn = **leader;
                // What no single table claimed, on as many of the pool's connections as it has
                // idle now; they get pg_dump's session SETs, so, like the leader, they are
                // discarded afterwards.
                std::vector<std::remove_cvref_t<decltype(pool.acquire())>> helpers;
                struct DiscardHelpers {
                    decltype(helpers)& leases;
                    ~DiscardHelpers() {
                        for (auto& l : leases) l.discard();
                    }
                } discard_helpers{helpers};
                std::vector<Connection*> connections{&conn};
                for (std::size_t i = 1; i < pool.stats().max_size && i < by_table->unassigned.size(); ++i) {
                    auto lease = pool.try_acquire();
                    if (!lease) break;
                    connections.push_back(&**lease);
                    helpers.push_back(std::move(*lease));
                }
                detail::run_parallel_post_data(*post_data, by_table->unassigned, connections);
                // The rest (foreign keys, triggers, ...) in pg_dump's order, in one transaction.
                conn.exec("BEGIN");
                for (const auto& piece : post_data->pieces)
                    if (!detail::runs_in_parallel(piece)) conn.exec(piece.sql);
                for (const auto& s : sequences)
                    conn.query("SELECT pg_catalog.setval($1::regclass, $2::bigint, $3::bool)",
                               {detail::qualified(conn.handle(), Table{s.at("schema").get<std::string>(),
                                                                       s.at("name").get<std::string>()}),
                                s.at("last_value").get<std::string>(),
                                std::string(s.at("is_called").get<bool>() ? "true" : "false")});
                conn.exec(detail::drop_undo_journal(conn, journal)); // commits the restore's success
                conn.exec("COMMIT");
            } catch (const std::exception& e) {
                end = JobState::failed;
                error = post_failed + e.what();
            }
        }
        if (end != JobState::succeeded) {
            // Everything the set created goes again, in one transaction: the database is as it was.
            Connection& conn = **leader;
            std::string outcome = "; everything it created was dropped again: the database is as it was";
            try {
                if (conn.in_transaction()) conn.exec("ROLLBACK");
                detail::run_undo_journal(conn, journal);
            } catch (const std::exception& e) {
                outcome = std::string("; dropping what it created failed too (the next restore_database into this database "
                                      "drops it): ") + e.what();
            }
            if (end == JobState::failed) error += outcome;
        }
        leader->discard(); // the session ran pg_dump's SET commands: not for reuse
        detail::finish_set(*state_ptr, end, std::move(error));
    });
    return DatabaseOperation(std::move(state));
}

} // namespace connpool::postgres
