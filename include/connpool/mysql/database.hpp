#pragma once

// mysql::backup_database / restore_database: every table of the connection's database, one job
// per table, all reading one consistent snapshot, taken the way mydumper takes it.
//
// MySQL and MariaDB cannot hand a snapshot from one session to another (PostgreSQL's
// pg_export_snapshot has no counterpart), so the snapshot is K sessions that start their
// transactions at the same moment: the leader lease takes FLUSH TABLES WITH READ LOCK (no
// commit can happen while it is held), K snapshot leases each run START TRANSACTION WITH
// CONSISTENT SNAPSHOT, the schema is read, and the leader unlocks: writers waited for a few
// round trips. The K leases come from the runner's pool beside the leader (K = jobs, at most
// max_size - 1 and the runner's max_running, at most one per table; a pool of fewer than 2 is
// refused). Their transactions must stay open across tables, so the per-table jobs cannot take
// leases of their own: they run on an internal JobRunner whose pool hands out exactly those K
// sessions (SnapshotSessions), largest table first. Each is a real job with a JobHandle
// (DatabaseOperation::tables()) and reports through DatabaseBackupOptions::table_progress, so
// every table shows in the monitoring sinks; the user's runner does not list them. A failing
// table cancels the others (the set fails anyway).
//
// A large InnoDB table (DATA_LENGTH over DatabaseBackupOptions::chunk_bytes, 64 MiB by default)
// with a one-column integer primary key is split into key ranges of about that size, each its
// own job and file, as mydumper chunks; every chunk reads the same snapshot, and a restore loads
// them side by side, so one huge table does not serialise either. The ranges are cut evenly
// between the key's lowest and highest value: a table whose keys cluster gets uneven chunks.
// Tables with another key, or none, are one file.
//
// Tables without transactions (MyISAM, Aria, ...) have no snapshot: they are copied first, and
// the leader keeps the read lock until they are done (writers wait for that long), so they are
// consistent with the rest, as mydumper does without --trx-consistency-only. A database of
// InnoDB tables blocks writers only for the moment the snapshot is taken.
//
// Under the lock the leader also records the schema (schema.json): SHOW CREATE TABLE of every
// table, and of the database's views, triggers, stored procedures, functions and events, each
// with the sql_mode, character set and DEFINER it was created with (users and grants are not
// copied; a restore keeps the DEFINERs or, with Definers::current_user, gives every object to the
// restoring user), and
// the binary log position (metadata.json) for point-in-time recovery. The manifest is written
// last, only when every table succeeded.
//
// Restore: the manifest is checked (every file's size and checksum) and the target must have
// none of the set's tables, views, routines, triggers or events, before anything is touched; then the
// tables are created under loading names of their own ("#connpool-restore-<run>-NNNN"; foreign
// key checks off, so their order does not matter), loaded in parallel through the user's runner
// (one restore_table job per file, largest first, each in its own transaction), and, when every
// table succeeded, given their names by one RENAME TABLE (atomic: the database never shows some
// of them), and the routines, views, triggers and events are created (triggers and events last,
// so the loaded rows did not fire them and no event ran before its tables were whole). The
// objects cannot be created before the RENAME (a view needs its tables' names), so the RENAME
// also renames a journal table listing them from "-pending" to "-finish", dropped once they all
// exist: a restore killed in between is finished by the next restore into the database, before
// it does anything else (detail::recover_leftovers). The leader holds a user lock (GET_LOCK) for
// the database throughout: a second restore into it is refused, and the next restore drops the
// loading tables a crashed one left. A failing table fails the set, naming it; a failed or
// cancelled set drops every table and object it created (the target had none of them), so the
// database is as it was and the restore can run again.
//
// Layout of a set: schema.json, tables.json (name, size, engine and files of each table, with the
// rows each chunk holds), metadata.json, table-NNNN.tbl or table-NNNN.CCCC.tbl for chunks
// (table_file.hpp), manifest.json.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "../io/backup_set.hpp"
#include "../io/manifest.hpp"
#include "../jobs.hpp"
#include "../pool.hpp"
#include "connection.hpp"
#include "database_plan.hpp"
#include "database_schema.hpp"
#include "definer.hpp"
#include "restore_journal.hpp"
#include "error.hpp"
#include "factory.hpp"
#include "table.hpp"
#include "table_backup.hpp"
#include "table_restore.hpp"

namespace connpool::mysql {

/// How backup_database() copies. Every field has a default.
struct DatabaseBackupOptions {
    /// The tables to copy; a name that is not a table of the database fails backup_database before
    /// anything is written. Default: every table of the connection's database. With a subset,
    /// the views that read only chosen tables (or such views) and the chosen tables' triggers are
    /// copied, the others listed in schema.json's "left_out" (they could not be restored); the
    /// routines and events are copied either way.
    std::vector<Table> tables{};
    /// Compression, verification and lock timeout of each table's file (overwrite is set by the
    /// backup). Default: TableBackupOptions' defaults.
    TableBackupOptions table{};
    /// How many snapshot sessions copy tables at once. Default 0 = as many as the pool and the
    /// runner allow beside the leader (max_size - 1, at most max_running); never more than tables.
    std::size_t jobs = 0;
    /// How long FLUSH TABLES WITH READ LOCK may wait (lock_wait_timeout, whole seconds, 1 to
    /// 31536000): it waits for running statements and for tables another session has locked.
    /// Default 1 s, so a locked table or a long statement fails the backup at once, saying so.
    std::chrono::seconds lock_timeout{1};
    /// A table larger than this on disk (DATA_LENGTH) with a one-column integer primary key is
    /// split into key ranges of about this size, each its own job and file, so one huge table does
    /// not serialise the backup or the restore (mydumper's chunks). 0 = never split. Default 64 MiB.
    std::uint64_t chunk_bytes = std::uint64_t{64} << 20;
    /// Called once per table (or chunk) job, before it is submitted; what it returns is that
    /// job's progress callback (e.g. `[&](const Table&) { return hub.track(); }`, so every
    /// table's events reach the monitoring sinks). Default none.
    std::function<ProgressCallback(const Table&)> table_progress{};
};

/// Whose rights the restored views, triggers, routines and events run with.
enum class Definers {
    /// As the set says (DEFINER=`user`@`host` of the source). Naming another account than the
    /// restoring user's needs SET USER (or SUPER): without it the restore is refused before any
    /// table is touched, saying so.
    keep,
    /// The restoring user's (the DEFINER clauses are dropped, as myloader --skip-definer does):
    /// for a restore as another user or onto another server. SQL SECURITY stays as it was.
    current_user,
};

/// How restore_database() loads. Every field has a default.
struct DatabaseRestoreOptions {
    /// Passed to each table's restore (TableRestoreOptions::lock_timeout). Default 1 s.
    std::chrono::seconds lock_timeout{1};
    /// Whose rights the set's views, triggers, routines and events get. Default Definers::keep.
    Definers definers = Definers::keep;
    /// As DatabaseBackupOptions::table_progress, for each table's restore job. Default none.
    std::function<ProgressCallback(const Table&)> table_progress{};
};

using io::DatabaseOperation; // the set in flight: wait(), error(), cancel(), progress(), tables()
using io::DatabaseProgress;  // bytes done/total over the tables, tables done, ETA

namespace detail {

inline constexpr const char* schema_file = "schema.json";
inline constexpr const char* tables_file = "tables.json";
inline constexpr const char* metadata_file = "metadata.json";

/// A snapshot session lent to the internal runner: one of the set's K leases, in its transaction.
struct SnapshotSession {
    Connection* connection = nullptr;
};

/// The internal pool's factory: hands out the K snapshot sessions, each once. A session whose
/// transaction is gone (an error rolled it back) is not handed out again: its snapshot is lost.
class SnapshotSessions {
public:
    /// Lends `sessions` (owned by the set's leases, which outlive the internal pool).
    explicit SnapshotSessions(std::vector<Connection*> sessions) : shared_(std::make_shared<Shared>()) {
        shared_->free = std::move(sessions);
    }

    /// Returns a session not lent yet; throws when none is left (the pool retries, and the set
    /// cancels its queued tables once one failed).
    SnapshotSession create() {
        std::lock_guard lock(shared_->mu);
        if (shared_->free.empty()) throw std::runtime_error("every snapshot session of the database backup is in use or lost");
        Connection* c = shared_->free.back();
        shared_->free.pop_back();
        return SnapshotSession{c};
    }

    /// Keeps a session for the next table only while its snapshot transaction is open.
    bool reset(SnapshotSession& s) { return s.connection->in_transaction(); }

private:
    struct Shared {
        std::mutex mu;
        std::vector<Connection*> free;
    };
    std::shared_ptr<Shared> shared_;
};

using SnapshotPool = Pool<SnapshotSession, SnapshotSessions>;
using SnapshotRunner = JobRunner<SnapshotPool>;

/// Lets the leader go: back to the pool when its session is as it was, else discarded.
template <class LeaseT>
void release_leader(LeaseT& leader, bool clean) {
    if (!clean) leader.discard();
    leader.release();
}

} // namespace detail

/// Backs up every table of the connection's database (or DatabaseBackupOptions::tables), its
/// views, triggers, routines and events into the new directory `dest_dir` (it must not exist, or be
/// empty), one job per table or chunk, all reading one consistent snapshot taken as mydumper takes it;
/// see the file comment. Returns at once with the table jobs submitted (their handles in
/// tables()). Throws, before any table is read, when the pool cannot give the leader and a
/// snapshot session a connection each (std::invalid_argument), when the directory is unusable
/// (io::Error), when a chosen table does not exist, or when the read lock cannot be taken in
/// lock_timeout (Error saying who holds it up).
template <class Runner>
[[nodiscard]] DatabaseOperation backup_database(Runner& runner, std::filesystem::path dest_dir,
                                                DatabaseBackupOptions options = {}) {
    namespace fs = std::filesystem;
    auto& pool = runner.pool();
    const std::size_t max_size = pool.stats().max_size;
    io::detail::require_leader_and_one(max_size, "connpool::mysql::backup_database");
    detail::check_lock_timeout(options.lock_timeout, "DatabaseBackupOptions");
    detail::check_lock_timeout(options.table.lock_timeout, "DatabaseBackupOptions::table");
    io::detail::require_new_directory(dest_dir);
    const Factory& factory = pool.factory();

    using LeaseT = decltype(pool.acquire());
    auto leader = std::make_shared<LeaseT>(pool.acquire());
    Connection& c = **leader;
    const std::string what = "backup of " + c.where() + " to " + detail::file_quoted(dest_dir);
    std::vector<detail::SetTable> tables;
    std::vector<detail::PieceRef> order;
    try {
        tables = detail::list_tables(c, options.tables, what);
        TableBackupOptions table_options = options.table;
        table_options.overwrite = false;
        for (std::size_t i = 0; i < tables.size(); ++i) {
            // Made and dropped: bad options and names throw before anything is locked.
            (void)backup_table(factory, tables[i].table, dest_dir / "check", table_options);
            // The chunks' bounds need not be the snapshot's: the ranges cover every key.
            detail::plan_pieces(c, tables[i], i + 1, options.chunk_bytes);
        }
        order = detail::job_order(tables);
    } catch (...) {
        detail::release_leader(*leader, !c.in_transaction());
        throw;
    }

    // The snapshot sessions are leased before the lock, so no connection is made while writers wait.
    std::size_t k = options.jobs == 0 ? max_size - 1 : std::min(options.jobs, max_size - 1);
    k = std::min({k, runner.max_running(), std::max<std::size_t>(order.size(), 1)});
    auto sessions = std::make_shared<std::vector<LeaseT>>();
    for (std::size_t i = 0; i < k; ++i) sessions->push_back(pool.acquire());
    std::vector<detail::SavedSession> saved;

    nlohmann::json schema, metadata;
    bool locked = false;
    try {
        for (auto& s : *sessions) saved.push_back(detail::SavedSession::read(*s, {"time_zone", "lock_wait_timeout"}));
        c.exec("SET SESSION lock_wait_timeout = " + std::to_string(options.lock_timeout.count()));
        try {
            c.exec("FLUSH TABLES WITH READ LOCK");
        } catch (const Error& e) {
            if (e.code() == errc::lock_wait_timeout)
                throw Error(what + ": FLUSH TABLES WITH READ LOCK waited " + std::to_string(options.lock_timeout.count()) +
                                " s (lock_timeout) for another session: a table is locked (LOCK TABLES, ALTER TABLE) or a "
                                "long statement is running; set DatabaseBackupOptions::lock_timeout to wait longer: " +
                                e.what(),
                            e.code(), e.sqlstate());
            if (e.code() == 1227) // ER_SPECIFIC_ACCESS_DENIED_ERROR
                throw Error(what + ": a consistent snapshot across tables needs FLUSH TABLES WITH READ LOCK, which needs "
                                   "the RELOAD privilege: " + e.what(),
                            e.code(), e.sqlstate());
            throw;
        }
        locked = true;
        for (auto& s : *sessions)
            s->exec(detail::snapshot_session_sql(options.table.lock_timeout) +
                    "; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY");
        std::vector<Table> names;
        for (const auto& t : tables) names.push_back(t.table);
        schema = detail::read_schema(c, names);
        metadata = {{"database", *c.query_value("SELECT DATABASE()")},
                    {"server_version", c.server_version()},
                    {"binlog", detail::binlog_position(c)}};
        if (std::all_of(tables.begin(), tables.end(), [](const auto& t) { return t.transactional(); })) {
            c.exec("UNLOCK TABLES");
            locked = false;
        }
        // Only now, with every table found and the snapshot taken, does the set's directory appear.
        std::error_code ec;
        fs::create_directories(dest_dir, ec);
        if (ec) throw io::Error("cannot create " + detail::file_quoted(dest_dir) + ": " + ec.message(), ec.value());
        ::chmod(dest_dir.c_str(), 0700);
        nlohmann::json list = nlohmann::json::array();
        for (const auto& t : tables) {
            nlohmann::json files = nlohmann::json::array();
            for (const auto& piece : t.pieces) files.push_back({{"file", piece.file}, {"rows", piece.where}});
            list.push_back({{"name", t.table.name}, {"size", t.size}, {"engine", t.engine}, {"files", std::move(files)}});
        }
        io::detail::write_set_file(dest_dir, detail::tables_file, list.dump(2) + "\n");
        io::detail::write_set_file(dest_dir, detail::schema_file, schema.dump(2) + "\n");
        io::detail::write_set_file(dest_dir, detail::metadata_file, metadata.dump(2) + "\n");
    } catch (...) {
        // The leader's lock and the sessions' transactions go with their connections.
        for (auto& s : *sessions) s.discard();
        leader->discard();
        throw;
    }

    auto state = std::make_shared<DatabaseOperation::State>();
    std::vector<Connection*> lent;
    for (auto& s : *sessions) lent.push_back(&*s);
    PoolOptions inner;
    inner.max_size = sessions->size();
    inner.acquire_timeout = std::chrono::milliseconds::max(); // a queued table waits for its turn however long
    inner.idle_timeout = std::chrono::milliseconds{0};
    inner.max_lifetime = std::chrono::milliseconds{0};
    inner.maintenance_interval = std::chrono::milliseconds{0};
    inner.name = what;
    auto inner_pool = std::make_shared<detail::SnapshotPool>(detail::SnapshotSessions(std::move(lent)), inner);
    RunnerOptions inner_runner_options;
    inner_runner_options.first_id = runner.reserve_ids(order.size()); // the sinks see one id per job
    auto inner_runner = std::make_shared<detail::SnapshotRunner>(*inner_pool, std::move(inner_runner_options));
    auto failed = std::make_shared<std::atomic<bool>>(false);

    TableBackupOptions table_options = options.table;
    table_options.overwrite = false;
    std::vector<bool> piece_transactional;
    // Each job leaves its file's digest in its slot, so the manifest needs no second read of
    // the set; the finisher reads them after every job has ended.
    auto digests = std::make_shared<std::vector<std::vector<std::optional<io::FileDigest>>>>();
    for (const auto& t : tables) digests->emplace_back(t.pieces.size());
    for (const auto& ref : order) {
        const detail::SetTable& t = tables[ref.table];
        const detail::SetPiece& piece = t.pieces[ref.piece];
        std::optional<detail::TableSlice> slice;
        if (!piece.where.empty()) slice = detail::TableSlice{piece.where, piece.estimate};
        auto run = [factory_ptr = &factory, table = t.table, dest = dest_dir / piece.file, table_options, slice,
                    digest = &(*digests)[ref.table][ref.piece]](detail::SnapshotSession& s, ProgressReporter& r) {
            *digest = detail::run_table_backup(*factory_ptr, *s.connection, table, dest, table_options, r,
                                               /*in_snapshot=*/true, slice);
        };
        ProgressCallback user = options.table_progress ? options.table_progress(t.table) : ProgressCallback{};
        state->expected.push_back(piece.estimate);
        piece_transactional.push_back(t.transactional());
        state->handles.push_back(inner_runner->submit(
            Job<detail::SnapshotSession>{detail::piece_name(t, ref.piece), JobKind::backup, std::move(run)},
            [failed, user = std::move(user)](const Progress& p) {
                if (p.state == JobState::failed) failed->store(true);
                if (user) user(p);
            }));
    }
    state->finisher = std::thread([state_ptr = state.get(), leader, sessions, saved = std::move(saved), inner_pool,
                                   inner_runner, failed, tables, digests, piece_transactional, dest_dir, what,
                                   locked]() mutable {
        std::string error;
        JobState end = JobState::succeeded;
        const auto cancel_all = [&] {
            for (const auto& h : state_ptr->handles) h.cancel();
        };
        // Wait for every table, cancelling the rest once one failed; the tables without
        // transactions come first, and the read lock goes once they are copied.
        bool leader_clean = true;
        for (std::size_t i = 0; i < state_ptr->handles.size(); ++i) {
            while (!state_ptr->handles[i].wait_for(std::chrono::milliseconds(20)))
                if (failed->load()) cancel_all();
            if (locked && (i + 1 == piece_transactional.size() || piece_transactional[i + 1])) {
                try {
                    (*leader)->exec("UNLOCK TABLES");
                } catch (const std::exception& e) {
                    leader_clean = false;
                    cancel_all();
                    end = JobState::failed;
                    error = what + ": UNLOCK TABLES failed: " + e.what();
                }
                locked = false;
            }
        }
        if (failed->load()) cancel_all();
        auto [tables_end, tables_error] = io::detail::wait_tables(state_ptr->handles);
        if (end == JobState::succeeded) {
            end = tables_end;
            error = std::move(tables_error);
        }
        inner_runner.reset(); // every job has ended: nothing runs on the sessions any more
        inner_pool.reset();
        for (std::size_t i = 0; i < sessions->size(); ++i) {
            auto& s = (*sessions)[i];
            try {
                s->exec("COMMIT; " + saved[i].restore_sql());
            } catch (const std::exception&) {
                s.discard();
            }
            s.release();
        }
        if (end == JobState::succeeded) {
            try {
                io::Manifest manifest;
                for (const char* name : {detail::schema_file, detail::tables_file, detail::metadata_file})
                    manifest.files.push_back(io::manifest_entry(dest_dir, name));
                for (std::size_t i = 0; i < tables.size(); ++i)
                    for (std::size_t j = 0; j < tables[i].pieces.size(); ++j) {
                        const auto& digest = (*digests)[i][j];
                        if (!digest) throw std::logic_error("table " + tables[i].table.quoted() + " succeeded without a file");
                        manifest.files.push_back({tables[i].pieces[j].file, *digest});
                    }
                io::write_manifest(dest_dir, manifest);
            } catch (const std::exception& e) {
                end = JobState::failed;
                error = what + ": " + e.what();
            }
        }
        if (locked) leader_clean = false; // never unlocked: the lock goes with the connection
        detail::release_leader(*leader, leader_clean);
        io::detail::finish_set(*state_ptr, end, std::move(error));
    });
    return DatabaseOperation(std::move(state));
}

/// Restores the backup set in `src_dir` into the runner's database (the connection's): the
/// manifest is checked first and the database must have none of the set's tables, views,
/// routines, triggers or events; then
/// the tables are created, loaded in parallel (one restore_table job per file through `runner`,
/// largest first) and the routines, views, triggers and events created; see the file comment. Returns at
/// once with the table jobs submitted; throws, before touching the database, when the set is
/// incomplete or changed (io::Error naming the file) or the target has one of its tables (Error),
/// and when creating a table fails (Error; the tables created before it are dropped again).
template <class Runner>
[[nodiscard]] DatabaseOperation restore_database(Runner& runner, std::filesystem::path src_dir,
                                                 DatabaseRestoreOptions options = {}) {
    auto& pool = runner.pool();
    io::detail::require_leader_and_one(pool.stats().max_size, "connpool::mysql::restore_database");
    detail::check_lock_timeout(options.lock_timeout, "DatabaseRestoreOptions");
    const Factory& factory = pool.factory();

    const io::Manifest manifest = io::verify_manifest(src_dir);
    const auto list = nlohmann::json::parse(io::detail::read_set_file(src_dir / detail::tables_file), nullptr, false);
    auto schema = nlohmann::json::parse(io::detail::read_set_file(src_dir / detail::schema_file), nullptr, false);
    const int version = schema.is_object() && schema.contains("version") && schema.at("version").is_number_integer()
                            ? schema.at("version").get<int>()
                            : 0;
    if (schema.is_object() && schema.value("format", "") == "connpool-mysql-set" && version != 1 &&
        version != detail::schema_version)
        throw io::Error("backup set " + detail::file_quoted(src_dir) + " has schema.json format version " +
                            std::to_string(version) + "; this library reads 1 and " +
                            std::to_string(detail::schema_version),
                        EINVAL);
    if (version == 1 && schema.is_object() && !schema.contains("events"))
        schema["events"] = nlohmann::json::array(); // version 1 sets did not copy events
    if (!list.is_array() || !schema.is_object() || schema.value("format", "") != "connpool-mysql-set" ||
        !schema.contains("tables") || schema.at("tables").size() != list.size())
        throw io::Error("backup set " + detail::file_quoted(src_dir) + " has a malformed tables.json or schema.json",
                        EINVAL);
    std::vector<detail::SetTable> tables;
    try {
        for (const char* section : {"tables", "views", "routines", "triggers", "events"})
            for (const auto& o : schema.at(section))
                if (!o.at("name").is_string() || !o.at("sql").is_string())
                    throw std::invalid_argument(std::string("an object in \"") + section + "\" without a name or statement");
        for (const auto& t : list) {
            detail::SetTable table{Table{t.at("name").get<std::string>()}, t.at("size").get<std::uint64_t>(),
                                   t.at("engine").get<std::string>()};
            for (const auto& f : t.at("files")) table.pieces.push_back({f.at("file").get<std::string>(), "", 0});
            if (table.pieces.empty()) throw std::invalid_argument("a table without files");
            tables.push_back(std::move(table));
        }
    } catch (const std::exception& e) {
        throw io::Error("backup set " + detail::file_quoted(src_dir) + " has a malformed tables.json or schema.json: " +
                            e.what(),
                        EINVAL);
    }
    for (auto& t : tables) {
        for (auto& piece : t.pieces) {
            // A name from the set stays inside it, and the manifest vouches for it.
            const io::ManifestEntry* entry = manifest.entry(piece.file);
            if (piece.file.empty() || piece.file.find('/') != std::string::npos || piece.file == "." || piece.file == ".." ||
                entry == nullptr)
                throw io::Error("backup set " + detail::file_quoted(src_dir) + ": the manifest does not list " +
                                    detail::file_quoted(src_dir / piece.file) + ", a file of table " + t.table.quoted(),
                                EINVAL);
            piece.estimate = detail::TableFileReader(src_dir / piece.file).data().data_bytes(); // checked: it opens
            piece.checked = entry->checked; // read whole by the manifest check: the restore need not read it twice
        }
    }
    if (options.definers == Definers::current_user)
        for (const char* section : {"views", "routines", "triggers", "events"})
            for (auto& o : schema.at(section)) o["sql"] = detail::without_definer(o.at("sql").get<std::string>());
    for (std::size_t i = 0; i < tables.size(); ++i)
        if (schema.at("tables")[i].at("name").get<std::string>() != tables[i].table.name)
            throw io::Error("backup set " + detail::file_quoted(src_dir) +
                                ": tables.json and schema.json list different tables (at " + tables[i].table.quoted() + ")",
                            EINVAL);
    const std::vector<detail::PieceRef> order = detail::job_order(tables);

    using LeaseT = decltype(pool.acquire());
    auto leader = std::make_shared<LeaseT>(pool.acquire());
    Connection& c = **leader;
    const std::string what = "restore of " + detail::file_quoted(src_dir) + " into " + c.where();
    std::vector<std::string> loading; // the tables' names while they load (detail::loading_name)
    const std::string run = detail::loading_run_id();
    // One restore into a database at a time: the lock goes with the leader's connection, so a
    // restore that crashed has released it, and the tables it was loading are its leftovers. The
    // server frees a closed connection's lock a moment after the close, hence the short wait;
    // the sets here release theirs before their leader goes.
    std::string lock_sql;
    try {
        const std::string lock = detail::restore_lock_name(c.query_value("SELECT DATABASE()").value_or(""));
        lock_sql = c.quote_string(lock);
        if (c.query_value("SELECT GET_LOCK(" + lock_sql + ", 2)") != "1")
            throw Error(what + ": another restore_database into this database is running (it holds the lock '" + lock +
                            "'); nothing was changed",
                        0, "");
    } catch (...) {
        leader->discard();
        throw;
    }
    const auto unlock = [lock_sql](Connection& conn) {
        try {
            conn.exec("DO RELEASE_LOCK(" + lock_sql + ")");
        } catch (const std::exception&) {
            // the lock goes with the connection, which is discarded next
        }
    };
    try {
        detail::recover_leftovers(c);
        // Every object the set creates must be new: one already there would fail the set half-way.
        const auto names_of = [&](const char* section) {
            std::string names;
            for (const auto& o : schema.at(section)) names += (names.empty() ? "" : ", ") + c.quote_string(o.at("name").get<std::string>());
            return names.empty() ? std::string("NULL") : names;
        };
        const std::string relations = names_of("tables") + ", " + names_of("views");
        const Rows r = c.query(
            "SELECT CONCAT(IF(TABLE_TYPE = 'VIEW', 'view ', 'table '), TABLE_NAME) FROM information_schema.TABLES WHERE "
            "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (" + relations + ") UNION ALL SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', "
            "ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME IN (" +
            names_of("routines") + ") UNION ALL SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND TRIGGER_NAME IN (" + names_of("triggers") + ") UNION ALL SELECT "
            "CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() AND EVENT_NAME IN (" +
            names_of("events") + ") ORDER BY 1");
        if (!r.empty()) {
            std::string there;
            for (const auto& row : r.rows) {
                const std::string v = row[0].value_or("");
                const auto space = v.find(' ');
                there += (there.empty() ? "" : ", ") + v.substr(0, space + 1) + quote_identifier(v.substr(space + 1));
            }
            throw Error(what + ": the database already has " + there +
                            "; a set is restored into a database without its tables, views, routines, triggers and "
                            "events (drop them, or use another database); nothing was changed",
                        1050, "42S01");
        }
        if (options.definers == Definers::keep) detail::check_definers(c, schema, detail::loading_name(run, 0), what);
        // The tables load under names of their own and take their real names together at the end
        // (one RENAME TABLE, atomic), so until then the database has none of them, even after a crash.
        c.exec("SET SESSION foreign_key_checks = 0");
        for (std::size_t i = 0; i < tables.size(); ++i) {
            nlohmann::json object = schema.at("tables")[i];
            const std::string name = detail::loading_name(run, i + 1);
            object["sql"] = detail::rename_create_table(object.at("sql").get<std::string>(), tables[i].table.name, name);
            detail::create_object(c, object);
            loading.push_back(name);
        }
        c.exec("SET SESSION foreign_key_checks = 1");
    } catch (const std::exception& e) {
        // A table that could not be created leaves the database as it was: the others go again.
        for (const auto& name : loading) {
            try {
                c.exec("DROP TABLE IF EXISTS " + quote_identifier(name));
            } catch (const std::exception&) {
            }
        }
        unlock(c);
        leader->discard();
        // Refusals that name what is wrong with the target (its objects, the definers) go as they are.
        if (const auto* my = dynamic_cast<const Error*>(&e); my != nullptr && (my->code() == 1050 || my->code() == 1227))
            throw;
        throw Error(what + ": creating the tables failed (none was kept): " + e.what(), 0, "");
    }

    auto state = std::make_shared<DatabaseOperation::State>();
    TableRestoreOptions table_options;
    table_options.lock_timeout = options.lock_timeout;
    for (const auto& ref : order) {
        const detail::SetTable& t = tables[ref.table];
        const detail::SetPiece& piece = t.pieces[ref.piece];
        TableRestoreOptions piece_options = table_options;
        piece_options.checked = piece.checked;
        auto run = [factory = factory, table = Table{loading[ref.table]}, src = src_dir / piece.file,
                    table_options = piece_options, chunked = t.pieces.size() > 1](Connection& conn, ProgressReporter& r) {
            detail::run_table_restore(factory, conn, table, src, table_options, r, /*created_by_set=*/true,
                                      /*beside_other_chunks=*/chunked);
        };
        state->expected.push_back(piece.estimate);
        state->handles.push_back(runner.submit(Job<Connection>{detail::piece_name(t, ref.piece), JobKind::restore, std::move(run)},
                                               options.table_progress ? options.table_progress(t.table) : ProgressCallback{}));
    }
    nlohmann::json objects = nlohmann::json::object(); // what the journal keeps (detail::recover_leftovers)
    for (const char* section : {"routines", "views", "triggers", "events"}) objects[section] = schema.at(section);
    state->finisher = std::thread([state_ptr = state.get(), leader, objects = std::move(objects), what, tables,
                                   loading = std::move(loading), run, unlock] {
        auto [end, error] = io::detail::wait_tables(state_ptr->handles);
        Connection& conn = **leader;
        std::vector<std::string> undo; // DROP statements for what the set created, newest first
        for (const auto& name : loading) undo.insert(undo.begin(), "DROP TABLE IF EXISTS " + quote_identifier(name));
        if (end == JobState::succeeded) {
            const char* step = "giving the tables their names";
            // The objects come after the RENAME (views need the tables' names), so the journal
            // of what is left to create takes the RENAME with it: a restore interrupted after it
            // is finished by the next one (detail::recover_leftovers), never left half-way.
            const std::string pending = detail::journal_name(run, "pending"), finish = detail::journal_name(run, "finish");
            try {
                undo.insert(undo.begin(), "DROP TABLE IF EXISTS " + quote_identifier(pending));
                detail::write_journal(conn, pending, objects);
                std::string rename;
                for (std::size_t i = 0; i < tables.size(); ++i)
                    rename += (rename.empty() ? "RENAME TABLE " : ", ") + quote_identifier(loading[i]) + " TO " +
                              tables[i].table.quoted();
                rename += (rename.empty() ? "RENAME TABLE " : ", ") + quote_identifier(pending) + " TO " + quote_identifier(finish);
                conn.exec(rename);
                undo.clear();
                for (const auto& t : tables) undo.insert(undo.begin(), "DROP TABLE IF EXISTS " + t.table.quoted());
                undo.insert(undo.begin(), "DROP TABLE IF EXISTS " + quote_identifier(finish));
                step = "creating the routines, views, triggers and events";
                detail::create_set_objects(conn, objects, /*skip_existing=*/false,
                                           [&](std::string drop) { undo.insert(undo.begin(), std::move(drop)); });
                try {
                    conn.exec("DROP TABLE " + quote_identifier(finish)); // the database is whole: nothing left to do
                } catch (const std::exception&) {
                    // Every object exists, so the next restore finds nothing to finish and drops it.
                }
            } catch (const std::exception& e) {
                end = JobState::failed;
                error = what + ": " + step + " failed: " + e.what();
                if (const auto* my = dynamic_cast<const Error*>(&e); my != nullptr && my->code() == 1227)
                    error += " (the set's objects keep their DEFINER: restore as a user with SET USER or SUPER, or "
                             "with DatabaseRestoreOptions::definers = Definers::current_user)";
            }
        }
        if (end != JobState::succeeded) {
            // The target had none of the set's objects (restore_database checked): dropping what
            // it created leaves the database as it was, so the restore can simply be run again.
            std::string undo_error;
            try {
                conn.exec("SET SESSION foreign_key_checks = 0");
                for (const auto& sql : undo) conn.exec(sql);
            } catch (const std::exception& e) {
                undo_error = e.what();
            }
            const std::string outcome =
                undo_error.empty() ? "; the tables and objects it created were dropped again: the database is as it was"
                                   : "; dropping the tables and objects it created failed too (drop them by hand before "
                                     "restoring again): " + undo_error;
            if (end == JobState::failed) error += outcome;
        }
        unlock(conn);
        leader->discard(); // its session took the objects' sql_mode and character sets: not for reuse
        io::detail::finish_set(*state_ptr, end, std::move(error));
    });
    return DatabaseOperation(std::move(state));
}

} // namespace connpool::mysql
