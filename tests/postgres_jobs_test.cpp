// The PostgreSQL table jobs against a real server: backup_table / restore_table round trips of
// awkward data in every format, hostile identifiers, files refused whole with the table left as
// it was, cancels in the middle of a COPY in both directions, lock conflicts that fail fast, and
// more jobs than connections.

#include <connpool/jobs.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/pool.hpp>
#include <connpool/postgres.hpp>

#include <gtest/gtest.h>

#include <signal.h>
#include <fcntl.h> // AT_FDCWD
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "eventually.hpp"
#include "file_tamper.hpp"
#include "sanitizers.hpp"
#include "pg_fixtures.hpp"
#include "pgbouncer.hpp"

namespace {

namespace fs = std::filesystem;
namespace pg = connpool::postgres;
using namespace std::chrono_literals;
using connpool::JobState;
using connpool::testing::PgBouncer;
using connpool::testing::PgPool;
using connpool::testing::PgRunner;
using connpool::testing::PgServer;
using connpool::testing::PgTest;
using connpool::testing::pg_pool_options;

/// The environment that makes this binary, re-executed, a child the parent kills: with a
/// conninfo and a destination it backs public.t up there (overwrite; the parent kills it in its
/// COPY), with a conninfo and a set directory it restores the set (restore_database, a pool of
/// 2; killed at a random moment). It exits 0 when it finished, 2 when its job did not succeed.
constexpr const char* kill_child_conninfo = "CONNPOOL_PG_KILL_CHILD_CONNINFO";
constexpr const char* kill_child_dest = "CONNPOOL_PG_KILL_CHILD_DEST";
constexpr const char* kill_child_restore = "CONNPOOL_PG_KILL_CHILD_RESTORE";

[[noreturn]] void kill_child_main(const char* conninfo, const char* dest, const char* set) {
    int code = 0;
    try {
        PgPool pool(pg::Factory(conninfo), pg_pool_options(set != nullptr ? 2 : 1));
        PgRunner runner(pool);
        pg::TableBackupOptions o;
        o.overwrite = true;
        const JobState end = set != nullptr ? pg::restore_database(runner, set).wait()
                                            : runner.submit(pg::backup_table({"t"}, dest, o)).wait();
        code = end == JobState::succeeded ? 0 : 2;
    } catch (const std::exception&) {
        code = 4;
    }
    std::_Exit(code);
}

/// Runs the child's work when this process is one (before main, so before GoogleTest).
const bool kill_child_started = [] {
    const char* conninfo = std::getenv(kill_child_conninfo);
    if (conninfo != nullptr) kill_child_main(conninfo, std::getenv(kill_child_dest), std::getenv(kill_child_restore));
    return false;
}();

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kManyRows = 100'000; // the 1M-row case, kept modest under sanitizers
#else
constexpr int kManyRows = 1'000'000;
#endif

/// A fixture with a pool of `pool_size` on the test's database, a runner, and a scratch directory.
class PostgresTableJobs : public PgTest {
protected:
    void SetUp() override {
        PgTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        dir_ = fs::temp_directory_path() / ("connpool-pgjobs-" + db_);
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        admin_.emplace(direct());
    }
    void TearDown() override {
        runner_.reset();
        pool_.reset();
        admin_.reset();
        if (!dir_.empty()) fs::remove_all(dir_);
        PgTest::TearDown();
    }

    PgRunner& runner(std::size_t pool_size = 2) {
        if (!runner_) {
            pool_.emplace(factory(), pg_pool_options(pool_size));
            runner_.emplace(*pool_);
        }
        return *runner_;
    }

    /// Runs `job` to its end; returns the end state (the error is in last_error_).
    JobState run(connpool::Job<pg::Connection> job) { return run_on(runner(), std::move(job)); }
    /// The same on runner `r`.
    JobState run_on(PgRunner& r, connpool::Job<pg::Connection> job) {
        auto handle = r.submit(std::move(job));
        const JobState end = handle.wait();
        last_error_ = handle.error();
        last_done_ = handle.progress().done;
        return end;
    }

    pg::Connection& sql() { return *admin_; }

    /// Creates table t, 2,000 rows of `row_bytes`, and the plain role `role` (LOGIN, `password`),
    /// which reads t at 20 ms a row through a policy (policies do not bind superusers): its COPY
    /// lasts 40 s unless stopped. Returns that role's conninfo.
    std::string slow_table_for_role(const std::string& role, const std::string& password, int row_bytes) {
        sql().exec("CREATE ROLE " + role + " LOGIN PASSWORD '" + password + "'");
        sql().exec("CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, repeat('x', " + std::to_string(row_bytes) +
                   ") FROM generate_series(1, 2000) i");
        sql().exec("CREATE FUNCTION slow_true() RETURNS bool LANGUAGE sql VOLATILE AS 'SELECT true FROM pg_sleep(0.02)'");
        sql().exec("ALTER TABLE t ENABLE ROW LEVEL SECURITY; CREATE POLICY slow ON t USING (slow_true()); "
                   "GRANT SELECT ON t TO " + role);
        return "host=127.0.0.1 port=" + std::to_string(server().port()) + " user=" + role + " password=" + password +
               " dbname=" + db_;
    }

    /// Returns a digest of the table's contents: row count and the md5 of its rows as text, sorted.
    std::string fingerprint(const std::string& qualified) {
        return *sql().query_value("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY "
                                  "t::text)), '') FROM " + qualified + " t");
    }

    /// Creates public.awkward with every kind of value the issue lists, `rows` rows of it.
    void create_awkward(int rows = 300) {
        sql().exec("CREATE TABLE awkward (id int PRIMARY KEY, t text, b bytea, n numeric, ts timestamptz, "
                   "j jsonb, a int[], ta text[], f float8, flag bool, u uuid)");
        sql().exec("INSERT INTO awkward VALUES (0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)");
        // Every byte value, in one bytea and across rows.
        sql().exec("INSERT INTO awkward (id, b) SELECT 1, string_agg(set_byte('\\x00'::bytea, 0, i), ''::bytea) "
                   "FROM generate_series(0, 255) i");
        sql().query("INSERT INTO awkward (id, t, ta, j) VALUES (2, $1, ARRAY[$1, NULL, ''], jsonb_build_object('k', $1))",
                    {std::string("tab\there\nnewline\r\\backslash \\N \\. ünïcødé 日本語 🎉 \"quote\" 'apos' ,;|")});
        sql().exec("INSERT INTO awkward (id, t) VALUES (3, ''), (4, '\\N'), (5, E'\\\\.')");
        sql().exec("INSERT INTO awkward SELECT i, repeat(md5(i::text), 1 + i % 5), decode(md5(i::text), 'hex'), "
                   "(i * 1.000000000000000001)::numeric / 7, '2001-02-03 04:05:06.789+00'::timestamptz + i * '1 "
                   "hour 1.5 sec'::interval, jsonb_build_object('i', i, 'nested', jsonb_build_array(i, NULL, 'x')), "
                   "ARRAY[i, -i, NULL], ARRAY['a' || i, NULL], i / 3.0, i % 2 = 0, md5(i::text)::uuid "
                   "FROM generate_series(10, " + std::to_string(10 + rows) + ") i");
        sql().exec("INSERT INTO awkward (id, f, n) VALUES (6, 'NaN', 'NaN'), (7, 'Infinity', -0.0), (8, '-Infinity', 1e-30)");
    }

    fs::path dir_;
    std::optional<pg::Connection> admin_;
    std::optional<PgPool> pool_;
    std::optional<PgRunner> runner_;
    std::string last_error_;
    std::uint64_t last_done_ = 0; // the last job's progress: bytes loaded (a restore) before it ended
};

TEST_F(PostgresTableJobs, a_round_trip_restores_awkward_values_exactly_in_every_format) {
    create_awkward();
    const std::string before = fingerprint("awkward");
    struct Variant {
        pg::CopyFormat format;
        pg::Compression compression;
    };
    for (const auto v : {Variant{pg::CopyFormat::text, pg::Compression::zstd}, Variant{pg::CopyFormat::text, pg::Compression::none},
                         Variant{pg::CopyFormat::binary, pg::Compression::zstd}}) {
        SCOPED_TRACE(static_cast<int>(v.format) * 10 + static_cast<int>(v.compression));
        const fs::path file = dir_ / ("awkward-" + std::to_string(static_cast<int>(v.format)) +
                                      std::to_string(static_cast<int>(v.compression)));
        pg::TableBackupOptions o;
        o.format = v.format;
        o.compression = v.compression;
        ASSERT_EQ(run(pg::backup_table({"awkward"}, file, o)), JobState::succeeded) << last_error_;
        struct stat st {};
        ASSERT_EQ(::stat(file.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u);
        // Change the table every way: the restore must make it equal the backup again.
        sql().exec("DELETE FROM awkward WHERE id % 3 = 0; UPDATE awkward SET t = 'changed' WHERE id % 3 = 1; "
                   "INSERT INTO awkward (id) VALUES (-1)");
        ASSERT_NE(fingerprint("awkward"), before);
        ASSERT_EQ(run(pg::restore_table({"awkward"}, file)), JobState::succeeded) << last_error_;
        EXPECT_EQ(fingerprint("awkward"), before);
    }
    // The bytea with every byte value came back byte for byte.
    EXPECT_EQ(sql().query_value("SELECT length(b) || ':' || md5(b) FROM awkward WHERE id = 1"),
              sql().query_value("SELECT '256:' || md5(string_agg(set_byte('\\x00'::bytea, 0, i), ''::bytea)) FROM "
                                "generate_series(0, 255) i"));
}

TEST_F(PostgresTableJobs, wide_rows_and_a_million_rows_round_trip_with_progress_in_bytes) {
    sql().exec("CREATE TABLE wide (id int, big text, cols text)");
    sql().exec("INSERT INTO wide SELECT i, repeat(chr(65 + i), 2000000), repeat('x,', 100) FROM generate_series(0, 4) i");
    sql().exec("CREATE TABLE many (id bigint, v text)");
    sql().exec("INSERT INTO many SELECT i, 'value ' || i FROM generate_series(1, " + std::to_string(kManyRows) + ") i");
    for (const std::string table : {"wide", "many"}) {
        const std::string before = fingerprint(table);
        const fs::path file = dir_ / table;
        std::vector<connpool::Progress> seen;
        auto h = runner().submit(pg::backup_table({table}, file), [&](const connpool::Progress& p) { seen.push_back(p); });
        ASSERT_EQ(h.wait(), JobState::succeeded) << h.error();
        const auto& last = seen.back();
        EXPECT_EQ(last.unit, "bytes");
        EXPECT_EQ(last.done, last.total);
        EXPECT_GT(last.done, table == "wide" ? 10'000'000u : 10u * kManyRows);
        EXPECT_LT(fs::file_size(file), last.done / 3) << "zstd should shrink repetitive COPY text";
        sql().exec("TRUNCATE " + table);
        ASSERT_EQ(run(pg::restore_table({table}, file)), JobState::succeeded) << last_error_;
        EXPECT_EQ(fingerprint(table), before);
    }
}

TEST_F(PostgresTableJobs, hostile_schema_table_and_column_names_work) {
    const std::string schema = "we\"ird sch.ema;";
    const std::string table = "Ta;ble \"x\". DROP TABLE awkward; --";
    PGconn* c = sql().handle();
    const std::string q = pg::detail::quote_identifier(c, schema) + "." + pg::detail::quote_identifier(c, table);
    sql().exec("CREATE SCHEMA " + pg::detail::quote_identifier(c, schema));
    sql().exec("CREATE TABLE " + q + " (\"Col \"\"1\"\"\" int, \"select\" text, \"a.b\" text)");
    sql().exec("INSERT INTO " + q + " SELECT i, 'v' || i, NULL FROM generate_series(1, 50) i");
    const std::string before = fingerprint(q);
    const fs::path file = dir_ / "hostile";
    ASSERT_EQ(run(pg::backup_table({schema, table}, file)), JobState::succeeded) << last_error_;
    sql().exec("DELETE FROM " + q + " WHERE \"Col \"\"1\"\"\" < 25");
    ASSERT_EQ(run(pg::restore_table({schema, table}, file)), JobState::succeeded) << last_error_;
    EXPECT_EQ(fingerprint(q), before);
}

TEST_F(PostgresTableJobs, damaged_truncated_empty_or_foreign_files_are_refused_and_the_table_is_unchanged) {
    create_awkward(2000);
    const fs::path good = dir_ / "good";
    pg::TableBackupOptions raw;
    raw.compression = pg::Compression::none; // a flipped byte in raw data still decodes: only the checksum sees it
    ASSERT_EQ(run(pg::backup_table({"awkward"}, good, raw)), JobState::succeeded) << last_error_;
    const fs::path zgood = dir_ / "zgood";
    ASSERT_EQ(run(pg::backup_table({"awkward"}, zgood)), JobState::succeeded) << last_error_;
    sql().exec("DELETE FROM awkward WHERE id > 100");
    const std::string before = fingerprint("awkward");

    auto bytes_of = [](const fs::path& p) {
        std::ifstream in(p, std::ios::binary);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    auto write = [&](const std::string& name, const std::string& content) {
        std::ofstream(dir_ / name, std::ios::binary | std::ios::trunc) << content;
        return dir_ / name;
    };
    const std::string text = bytes_of(good);
    const std::string ztext = bytes_of(zgood);
    std::string flipped = text;
    flipped[text.size() / 2] ^= 0x01;
    std::string zflipped = ztext;
    zflipped[ztext.size() / 2] ^= 0x40;
    std::string counts = text; // the trailer's row count changed, checksum left alone
    counts[counts.size() - 63 + 4 + 19] ^= 0x01;
    const std::vector<std::pair<fs::path, std::string>> cases{
        {write("empty", ""), "empty"},
        {write("garbage", "PGDMP this is not a connpool file\n"), "not a connpool table backup"},
        {write("header-only", text.substr(0, text.find('\n', 20) + 1)), "truncated"},
        {write("truncated", text.substr(0, text.size() - 10)), "unusable"},
        {write("cut-in-data", text.substr(0, text.size() / 2)), "unusable"},
        {write("flipped", flipped), "checksum"},
        {write("zflipped", zflipped), "unusable"},
        {write("counts", counts), "checksum"},
        {write("grown", text + "more"), "unusable"},
        {dir_ / "missing", "cannot read"},
    };
    for (const auto& [file, why] : cases) {
        SCOPED_TRACE(file.filename().string());
        EXPECT_EQ(run(pg::restore_table({"awkward"}, file)), JobState::failed);
        EXPECT_NE(last_error_.find(file.string()), std::string::npos) << last_error_;
        EXPECT_NE(last_error_.find(why), std::string::npos) << last_error_;
        EXPECT_EQ(fingerprint("awkward"), before);
    }
    // A file for other columns is refused before the table is touched too.
    sql().exec("CREATE TABLE other (id int, t text)");
    sql().exec("INSERT INTO other VALUES (1, 'keep')");
    EXPECT_EQ(run(pg::restore_table({"other"}, good)), JobState::failed);
    EXPECT_NE(last_error_.find("differ from the backup's"), std::string::npos) << last_error_;
    EXPECT_EQ(sql().query_value("SELECT string_agg(t, ',') FROM other"), "keep");
    // The pool kept its connections through all of that (they were settled, not discarded).
    EXPECT_EQ(pool_->stats().discarded, 0u);
}

TEST_F(PostgresTableJobs, a_file_checked_by_its_caller_skips_the_check_pass_yet_a_change_behind_its_identity_rolls_back) {
    create_awkward(2000);
    const fs::path file = dir_ / "checked";
    pg::TableBackupOptions raw;
    raw.compression = pg::Compression::none;
    ASSERT_EQ(run(pg::backup_table({"awkward"}, file, raw)), JobState::succeeded) << last_error_;
    const std::string full = fingerprint("awkward");
    sql().exec("DELETE FROM awkward WHERE id > 100");
    const std::string before = fingerprint("awkward");

    // As restore_database does after its manifest check: the identity the file had then.
    pg::TableRestoreOptions checked;
    checked.checked = pg::file_identity(file);
    ASSERT_TRUE(checked.checked);
    // A byte flipped in place with the modification time put back: same device, inode, size and
    // mtime, so the check pass is skipped; the COPY pass still sees the checksum differ and the
    // restore rolls back.
    ASSERT_NO_FATAL_FAILURE(connpool::testing::flip_byte(file, connpool::testing::middle_of(file)));
    ASSERT_EQ(pg::file_identity(file), checked.checked) << "the test needs the identity unchanged";
    EXPECT_EQ(run(pg::restore_table({"awkward"}, file, checked)), JobState::failed);
    EXPECT_NE(last_error_.find("checksum"), std::string::npos) << last_error_;
    EXPECT_GT(last_done_, 0u) << "the rows were sent: the check pass was skipped";
    EXPECT_EQ(fingerprint("awkward"), before);
    // Without the caller's check the check pass refuses it before a row is sent.
    EXPECT_EQ(run(pg::restore_table({"awkward"}, file)), JobState::failed);
    EXPECT_NE(last_error_.find("checksum"), std::string::npos) << last_error_;
    EXPECT_EQ(last_done_, 0u);
    EXPECT_EQ(fingerprint("awkward"), before);

    // Put right (a new mtime): the identity no longer matches, so the file is checked whole
    // first again, and then restored.
    ASSERT_NO_FATAL_FAILURE(connpool::testing::flip_byte(file, connpool::testing::middle_of(file), /*keep_mtime=*/false));
    ASSERT_NE(pg::file_identity(file), checked.checked);
    EXPECT_EQ(run(pg::restore_table({"awkward"}, file, checked)), JobState::succeeded) << last_error_;
    EXPECT_EQ(fingerprint("awkward"), full);
    EXPECT_EQ(pool_->stats().discarded, 0u);
}

TEST_F(PostgresTableJobs, an_existing_destination_is_kept_unless_overwrite_is_set) {
    sql().exec("CREATE TABLE t (a int); INSERT INTO t VALUES (1)");
    const fs::path file = dir_ / "t.backup";
    std::ofstream(file) << "precious";
    EXPECT_EQ(run(pg::backup_table({"t"}, file)), JobState::failed);
    EXPECT_NE(last_error_.find("exists"), std::string::npos) << last_error_;
    std::ifstream in(file);
    std::string content;
    in >> content;
    EXPECT_EQ(content, "precious");
    pg::TableBackupOptions o;
    o.overwrite = true;
    EXPECT_EQ(run(pg::backup_table({"t"}, file, o)), JobState::succeeded) << last_error_;
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1) << "no temp files left";
}

TEST_F(PostgresTableJobs, a_table_locked_by_another_session_fails_fast_naming_the_lock) {
    sql().exec("CREATE TABLE t (a int); INSERT INTO t VALUES (1)");
    pg::Connection holder = direct();
    holder.exec("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE");
    EXPECT_EQ(run(pg::backup_table({"t"}, dir_ / "t")), JobState::failed);
    EXPECT_NE(last_error_.find("locked by another session"), std::string::npos) << last_error_;
    EXPECT_FALSE(fs::exists(dir_ / "t"));
    holder.exec("ROLLBACK");
    ASSERT_EQ(run(pg::backup_table({"t"}, dir_ / "t")), JobState::succeeded) << last_error_;
    holder.exec("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE");
    EXPECT_EQ(run(pg::restore_table({"t"}, dir_ / "t")), JobState::failed);
    EXPECT_NE(last_error_.find("locked by another session"), std::string::npos) << last_error_;
}

/// Waits until a session of `user` runs a statement starting with `prefix` (or the guard ends).
bool wait_for_running(pg::Connection& c, const std::string& user, const std::string& prefix) {
    for (auto until = std::chrono::steady_clock::now() + 20s; std::chrono::steady_clock::now() < until;) {
        if (c.query_value("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active' AND "
                          "query LIKE $2",
                          {user, prefix + "%"}) != "0")
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return false;
}

/// The process's resident memory now (VmRSS), in bytes.
std::uint64_t resident_bytes() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
    return 0;
}

TEST_F(PostgresTableJobs, a_restore_into_a_slow_server_keeps_the_clients_memory_flat) {
    // 32 MB of rows that the server takes slowly (a trigger sleeps per row): libpq's nonblocking
    // output buffer grew to hold whatever the file reader had read and the server not yet taken,
    // the whole file here, and every partial send moved what was left of it.
    sql().exec("CREATE TABLE wide (id int PRIMARY KEY, pad text)");
    sql().exec("INSERT INTO wide SELECT i, repeat(md5(i::text), 320) FROM generate_series(1, 3200) i");
    const fs::path file = dir_ / "wide";
    pg::TableBackupOptions raw;
    raw.compression = pg::Compression::none;
    ASSERT_EQ(run(pg::backup_table({"wide"}, file, raw)), JobState::succeeded) << last_error_;
    ASSERT_GT(fs::file_size(file), 32'000'000u);
    sql().exec("CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.0005); "
               "RETURN NEW; END $$");
    sql().exec("CREATE TRIGGER slow BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION slowly()");
    // Sampled while the job runs, against the memory in use when it starts (not the process's
    // peak, which the suite's earlier tests may have raised).
    const std::uint64_t before = resident_bytes();
    ASSERT_GT(before, 0u);
    std::atomic<std::uint64_t> most{before};
    std::atomic<bool> done{false};
    std::thread sampler([&] {
        while (!done.load()) {
            most = std::max<std::uint64_t>(most.load(), resident_bytes());
            std::this_thread::sleep_for(5ms);
        }
    });
    EXPECT_EQ(run(pg::restore_table({"wide"}, file)), JobState::succeeded) << last_error_;
    done = true;
    sampler.join();
    const std::uint64_t grown = std::max<std::uint64_t>(most.load(), resident_bytes()) - before;
    // Sanitizers' allocators keep freed buffers resident (ASan grew 13 MB with the fix); the
    // whole file queued still shows above three quarters of it.
    const std::uint64_t bound = connpool::testing::sanitized ? fs::file_size(file) * 3 / 4 : 12'000'000u;
    EXPECT_LT(grown, bound) << "the client's peak memory grew by " << grown << " bytes for a " << fs::file_size(file)
                            << "-byte file";
    EXPECT_EQ(sql().query_value("SELECT count(*) FROM wide"), "3200");
}

TEST_F(PostgresTableJobs, a_cancel_stops_a_running_backup_copy_on_the_server_and_leaves_no_file) {
    // A policy that takes 20 ms a row makes the COPY last 40 s unless it is cancelled. Policies
    // do not apply to superusers, so the pool logs in as a plain role.
    const std::string reader = "reader_" + db_; // roles are the cluster's: one per test, so a repeat works
    const std::string conninfo = slow_table_for_role(reader, "reader-pw", 5000);
    PgPool pool(pg::Factory(conninfo), pg_pool_options(1));
    PgRunner runner(pool);
    auto h = runner.submit(pg::backup_table({"t"}, dir_ / "t"));
    ASSERT_TRUE(wait_for_running(sql(), reader, "COPY"));
    const auto asked = std::chrono::steady_clock::now();
    h.cancel();
    ASSERT_TRUE(h.wait_for(10s)) << "the cancel did not stop the COPY";
    const auto took = std::chrono::steady_clock::now() - asked;
    EXPECT_EQ(h.wait(), JobState::cancelled) << h.error();
    EXPECT_EQ(sql().query_value("SELECT count(*) FROM pg_stat_activity WHERE usename = '" + reader + "' AND state = "
                                "'active'"),
              "0");
    EXPECT_FALSE(fs::exists(dir_ / "t"));
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0) << "a temp file was left";
    // The connection went back clean and works.
    EXPECT_EQ(pool.stats().discarded, 0u);
    auto lease = pool.acquire();
    EXPECT_FALSE(lease->in_transaction());
    EXPECT_EQ(lease->query_value("SELECT 1"), "1");
    std::printf("backup cancel: the job ended %lld ms after the cancel\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

TEST_F(PostgresTableJobs, a_cancel_stops_a_running_restore_copy_and_the_table_is_unchanged) {
    sql().exec("CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 3000) i");
    ASSERT_EQ(run(pg::backup_table({"t"}, dir_ / "t")), JobState::succeeded) << last_error_;
    sql().exec("DELETE FROM t WHERE id > 10");
    const std::string before = fingerprint("t");
    // A trigger that takes 20 ms a row makes the load last a minute unless it is cancelled.
    sql().exec("CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS "
               "'BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END'");
    sql().exec("CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow_row()");
    auto h = runner(1).submit(pg::restore_table({"t"}, dir_ / "t"));
    ASSERT_TRUE(wait_for_running(sql(), PgServer::user, "COPY"));
    h.cancel();
    ASSERT_TRUE(h.wait_for(10s)) << "the cancel did not stop the COPY";
    EXPECT_EQ(h.wait(), JobState::cancelled) << h.error();
    EXPECT_EQ(fingerprint("t"), before);
    EXPECT_EQ(pool_->stats().discarded, 0u);
    auto lease = pool_->acquire();
    EXPECT_FALSE(lease->in_transaction());
    EXPECT_EQ(lease->query_value("SELECT count(*) FROM t"), "10");
}

TEST_F(PostgresTableJobs, a_server_restart_in_the_middle_of_copies_fails_those_jobs_saying_why_and_the_next_ones_succeed) {
    // A backup made slow by a policy (20 ms a row; policies need a plain role) and a restore made
    // slow by a trigger are both in their COPY when the server restarts (pg_ctl restart -m fast).
    const std::string worker = "restart_" + db_; // roles are the cluster's: one per test, so a repeat works
    sql().exec("CREATE ROLE " + worker + " LOGIN PASSWORD 'worker-pw'");
    sql().exec("CREATE TABLE t (id int, v text); INSERT INTO t SELECT i, repeat('x', 500) FROM generate_series(1, 2000) i");
    sql().exec("CREATE TABLE u (id int, v text); INSERT INTO u SELECT i, 'v' || i FROM generate_series(1, 3000) i");
    sql().exec("GRANT ALL ON t, u TO " + worker);
    const std::string conninfo = "host=127.0.0.1 port=" + std::to_string(server().port()) +
                                 " user=" + worker + " password=worker-pw dbname=" + db_;
    auto options = pg_pool_options(3);
    options.validate_after_idle = 0ms; // as in production after a while: an idle connection is checked
    PgPool pool(pg::Factory(conninfo), options);
    PgRunner r(pool);
    ASSERT_EQ(run_on(r, pg::backup_table({"u"}, dir_ / "u")), JobState::succeeded) << last_error_;
    sql().exec("DELETE FROM u WHERE id > 10");
    const std::string u_before = fingerprint("u");
    sql().exec("CREATE FUNCTION slow_true() RETURNS bool LANGUAGE sql VOLATILE AS 'SELECT true FROM pg_sleep(0.02)'");
    sql().exec("ALTER TABLE t ENABLE ROW LEVEL SECURITY; CREATE POLICY slow ON t USING (slow_true())");
    sql().exec("CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS "
               "'BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END'");
    sql().exec("CREATE TRIGGER slow BEFORE INSERT ON u FOR EACH ROW EXECUTE FUNCTION slow_row()");
    {
        auto a = pool.acquire(), b = pool.acquire(), c = pool.acquire(); // three open: one stays idle
    }

    auto backup = r.submit(pg::backup_table({"t"}, dir_ / "t"));
    auto restore = r.submit(pg::restore_table({"u"}, dir_ / "u"));
    ASSERT_TRUE(connpool::testing::eventually(
        [&] {
            return sql().query_value("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active' "
                                     "AND query LIKE 'COPY%'",
                                     {worker}) == "2";
        },
        20s))
        << "the two COPYs did not start";
    ASSERT_TRUE(server().restart()) << server().log();
    admin_.emplace(direct()); // ours died too
    for (auto* h : {&backup, &restore}) {
        ASSERT_TRUE(h->wait_for(30s)) << "a job did not notice the restart";
        EXPECT_EQ(h->wait(), JobState::failed) << h->progress().name;
        const std::string why = h->error();
        EXPECT_TRUE(why.find("terminating connection due to administrator command") != std::string::npos ||
                    why.find("server closed the connection") != std::string::npos)
            << why;
        EXPECT_NE(why.find(h->progress().name), std::string::npos) << why;
        EXPECT_EQ(why.find("worker-pw"), std::string::npos) << why;
        std::printf("failed by the restart: %s\n", why.c_str());
    }
    EXPECT_FALSE(fs::exists(dir_ / "t"));
    EXPECT_EQ(fingerprint("u"), u_before) << "the restore's transaction was not rolled back";
    EXPECT_EQ(pool.stats().discarded, 2u) << "both dead connections are discarded, not pooled";

    // The same runner goes on: the idle connection is found dead and replaced, new ones are made.
    sql().exec("ALTER TABLE t DISABLE ROW LEVEL SECURITY; DROP TRIGGER slow ON u");
    ASSERT_EQ(run_on(r, pg::backup_table({"t"}, dir_ / "t")), JobState::succeeded) << last_error_;
    ASSERT_EQ(run_on(r, pg::restore_table({"u"}, dir_ / "u")), JobState::succeeded) << last_error_;
    EXPECT_EQ(sql().query_value("SELECT count(*) FROM u"), "3000");
    std::vector<connpool::JobHandle> more;
    for (int i = 0; i < 3; ++i) more.push_back(r.submit(pg::backup_table({"t"}, dir_ / ("t" + std::to_string(i)))));
    for (auto& h : more) EXPECT_EQ(h.wait(), JobState::succeeded) << h.error();
    const auto stats = pool.stats();
    EXPECT_GE(stats.validation_failures, 1u) << "the idle connection was not validated";
    EXPECT_EQ(stats.discarded, 2u);
    EXPECT_EQ(stats.in_use, 0u);
    EXPECT_EQ(stats.open, stats.idle);
    EXPECT_LE(stats.open, 3u);
    EXPECT_EQ(stats.created - stats.destroyed, stats.open);
}

TEST_F(PostgresTableJobs, a_backup_killed_in_its_copy_leaves_no_file_or_the_old_one_and_the_next_backup_cleans_up) {
    // The child backs up as a plain role through a policy that takes 20 ms a row (40 s in all),
    // so it is surely in its COPY, its temp file open, when it is SIGKILLed.
    const std::string worker = "kill_" + db_; // roles are the cluster's: one per test, so a repeat works
    const std::string conninfo = slow_table_for_role(worker, "kill-pw", 500);
    const fs::path dest = dir_ / "t.backup";
    const auto entries = [&] { return std::distance(fs::directory_iterator(dir_), fs::directory_iterator()); };
    // A killed client's backend ends when it next writes to the closed socket (within a few rows).
    const auto worker_gone = [&] {
        return connpool::testing::eventually(
            [&] { return sql().query_value("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", {worker}) == "0"; },
            20s);
    };
    auto kill_in_copy = [&] {
        ASSERT_TRUE(worker_gone()) << "the last child's session is still there";
        const auto before = entries();
        const pid_t pid = connpool::testing::spawn_self(
            {std::string(kill_child_conninfo) + "=" + conninfo, std::string(kill_child_dest) + "=" + dest.string()});
        ASSERT_GT(pid, 0);
        const bool in_copy = wait_for_running(sql(), worker, "COPY") &&
                             connpool::testing::eventually([&] { return entries() > before; }, 10s);
        const int status = connpool::testing::kill_and_reap(pid);
        ASSERT_TRUE(in_copy) << "the child never reached its COPY with a temp file";
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
        EXPECT_EQ(entries(), before + 1) << "the killed backup's temp file is left (and nothing else)";
    };

    // No file before: none after, only the stale temp; the next backup removes it.
    kill_in_copy();
    EXPECT_FALSE(fs::exists(dest));
    ASSERT_EQ(run(pg::backup_table({"t"}, dest)), JobState::succeeded) << last_error_; // as superuser: fast
    EXPECT_EQ(entries(), 1) << "the stale temp file was not removed";
    const std::string old = connpool::testing::slurp(dest);

    // An old backup at the destination: a kill while overwriting it leaves it byte for byte.
    sql().exec("DELETE FROM t WHERE id > 1000");
    kill_in_copy();
    EXPECT_EQ(connpool::testing::slurp(dest), old);
    pg::TableBackupOptions o;
    o.overwrite = true;
    ASSERT_EQ(run(pg::backup_table({"t"}, dest, o)), JobState::succeeded) << last_error_;
    EXPECT_EQ(entries(), 1) << "the stale temp file was not removed";
    ASSERT_TRUE(worker_gone()); // its ACCESS SHARE lock would fail the restore's TRUNCATE (NOWAIT)
    sql().exec("TRUNCATE t");
    ASSERT_EQ(run(pg::restore_table({"t"}, dest)), JobState::succeeded) << last_error_;
    EXPECT_EQ(sql().query_value("SELECT count(*) FROM t"), "1000");
}

TEST_F(PostgresTableJobs, more_table_jobs_than_connections_all_succeed_through_a_small_pool) {
    constexpr int tables = 8;
    std::vector<std::string> before;
    for (int i = 0; i < tables; ++i) {
        const std::string name = "t" + std::to_string(i);
        sql().exec("CREATE TABLE " + name + " (id int, v text); INSERT INTO " + name + " SELECT g, md5(g::text) FROM "
                   "generate_series(1, " + std::to_string(1000 * (i + 1)) + ") g");
        before.push_back(fingerprint(name));
    }
    auto& r = runner(2);
    std::vector<connpool::JobHandle> handles;
    for (int i = 0; i < tables; ++i)
        handles.push_back(r.submit(pg::backup_table({"t" + std::to_string(i)}, dir_ / ("t" + std::to_string(i)))));
    for (auto& h : handles) EXPECT_EQ(h.wait(), JobState::succeeded) << h.error();
    EXPECT_LE(pool_->stats().created, 2u);
    for (int i = 0; i < tables; ++i) sql().exec("TRUNCATE t" + std::to_string(i));
    handles.clear();
    for (int i = 0; i < tables; ++i)
        handles.push_back(r.submit(pg::restore_table({"t" + std::to_string(i)}, dir_ / ("t" + std::to_string(i)))));
    for (auto& h : handles) EXPECT_EQ(h.wait(), JobState::succeeded) << h.error();
    for (int i = 0; i < tables; ++i) EXPECT_EQ(fingerprint("t" + std::to_string(i)), before[static_cast<std::size_t>(i)]);
}

TEST_F(PostgresTableJobs, invalid_options_are_refused_at_once_naming_the_field) {
    pg::TableBackupOptions o;
    o.zstd_level = 99;
    try {
        (void)pg::backup_table({"t"}, dir_ / "t", o);
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("zstd_level"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("99"), std::string::npos);
    }
    EXPECT_THROW((void)pg::restore_table({"t"}, ""), std::invalid_argument);
}

/// Database backups: a second, empty database to restore into, and a pool on it.
class PostgresDatabaseJobs : public PostgresTableJobs {
protected:
    void TearDown() override {
        target_runner_.reset();
        target_pool_.reset();
        if (!target_.empty()) server().psql("DROP DATABASE IF EXISTS " + target_ + " WITH (FORCE)");
        PostgresTableJobs::TearDown();
    }

    /// Creates the empty target database and a runner with a pool of `size` on it (connecting
    /// through `via` when given).
    PgRunner& target(std::size_t size = 3, const PgBouncer* via = nullptr) {
        target_ = db_ + "_r";
        EXPECT_EQ(server().psql("CREATE DATABASE " + target_ + " TEMPLATE template0 ENCODING 'UTF8'"), 0);
        target_pool_.emplace(pg::Factory(via != nullptr ? via->conninfo(target_) : server().conninfo(target_)),
                             pg_pool_options(size));
        target_runner_.emplace(*target_pool_);
        return *target_runner_;
    }

    pg::Connection target_sql() const { return pg::Factory(server().conninfo(target_)).create(); }

    std::string target_;
    std::optional<PgPool> target_pool_;
    std::optional<PgRunner> target_runner_;
};

std::string fingerprint_on(pg::Connection& c, const std::string& qualified) {
    return *c.query_value("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), "
                          "'') FROM " + qualified + " t");
}

/// Returns pg_dump --schema-only of `dbname`, without the \\restrict lines (a random key per run).
std::string schema_of(const std::string& dbname) {
    const std::string command = PgServer::instance().tool_env() + connpool::testing::sh_quote(connpool::testing::pg_bindir() + "/pg_dump") +
                                " --schema-only -d " + connpool::testing::sh_quote(dbname);
    FILE* p = ::popen(command.c_str(), "r");
    if (p == nullptr) return "popen failed";
    std::string out, line;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, p) != nullptr) {
        line += buf;
        if (line.empty() || line.back() != '\n') continue;
        if (line.rfind("\\restrict ", 0) != 0 && line.rfind("\\unrestrict ", 0) != 0) out += line;
        line.clear();
    }
    const int status = ::pclose(p);
    return status == 0 ? out + line : "pg_dump failed with status " + std::to_string(status);
}
TEST_F(PostgresDatabaseJobs, a_database_restored_into_an_empty_one_has_the_same_schema_and_data) {
    create_awkward(500);
    sql().exec("CREATE SCHEMA \"Odd \"\"schema\"\"\"");
    sql().exec("CREATE TABLE \"Odd \"\"schema\"\"\".\"Parent;\" (id serial PRIMARY KEY, name text UNIQUE CHECK (name <> ''))");
    sql().exec("CREATE TABLE child (id bigserial PRIMARY KEY, parent int NOT NULL REFERENCES \"Odd \"\"schema\"\"\".\"Parent;\", "
               "note text)");
    sql().exec("CREATE INDEX child_note ON child (lower(note))");
    sql().exec("CREATE VIEW child_names AS SELECT c.id, p.name FROM child c JOIN \"Odd \"\"schema\"\"\".\"Parent;\" p ON p.id = c.parent");
    sql().exec("INSERT INTO \"Odd \"\"schema\"\"\".\"Parent;\" (name) SELECT 'p' || i FROM generate_series(1, 200) i");
    sql().exec("INSERT INTO child (parent, note) SELECT 1 + i % 200, 'Note ' || i FROM generate_series(1, 5000) i");
    sql().exec("CREATE TABLE empty_one (a int)");
    const std::vector<std::string> tables{"awkward", "\"Odd \"\"schema\"\"\".\"Parent;\"", "child", "empty_one"};
    std::vector<std::string> before;
    for (const auto& t : tables) before.push_back(fingerprint(t));

    auto backup = pg::backup_database(runner(3), dir_ / "set");
    EXPECT_EQ(backup.tables().size(), 4u);
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    {
        std::ifstream in(dir_ / "set" / "tables.json");
        const std::string list((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::uint64_t last = UINT64_MAX;
        for (std::size_t at = list.find("\"size\": "); at != std::string::npos; at = list.find("\"size\": ", at + 1)) {
            const std::uint64_t size = std::stoull(list.substr(at + 8));
            EXPECT_LE(size, last) << "largest first: " << list;
            last = size;
        }
    }
    const auto total = backup.progress();
    EXPECT_EQ(total.tables_done, 4u);
    EXPECT_EQ(total.done, total.total);
    EXPECT_TRUE(fs::exists(dir_ / "set" / "manifest.json"));

    auto restore = pg::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    pg::Connection t = target_sql();
    for (std::size_t i = 0; i < tables.size(); ++i) EXPECT_EQ(fingerprint_on(t, tables[i]), before[i]) << tables[i];
    // Post-data (indexes, constraints) and sequences came back too.
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_indexes WHERE indexname = 'child_note'"), "1");
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"), "1");
    EXPECT_EQ(t.query_value("SELECT nextval('child_id_seq')"), "5001");
    EXPECT_THROW(t.exec("INSERT INTO child (parent) VALUES (9999)"), pg::Error);
    EXPECT_EQ(t.query_value("SELECT count(*) FROM child_names"), "5000");
    // The whole schema, object for object, as pg_dump sees it.
    const std::string source_schema = schema_of(db_);
    EXPECT_NE(source_schema.find("CREATE INDEX child_note"), std::string::npos) << source_schema;
    EXPECT_EQ(schema_of(target_), source_schema);
}

TEST_F(PostgresDatabaseJobs, a_backup_under_a_concurrent_writer_reads_one_snapshot_across_tables) {
    // Money moves from a to b in single transactions; a backup that read the tables at different
    // moments would see a total other than 1,000,000.
    sql().exec("CREATE TABLE a (id int PRIMARY KEY, balance bigint, pad text); CREATE TABLE b (id int PRIMARY KEY, "
               "balance bigint, pad text)");
    sql().exec("INSERT INTO a SELECT i, 100, repeat('x', 200) FROM generate_series(1, 10000) i");
    sql().exec("INSERT INTO b SELECT i, 0, repeat('y', 200) FROM generate_series(1, 10000) i");
    // Every transfer is also logged with a serial id: the restored sequence must lie beyond every
    // restored row (sequences are not MVCC: read after the snapshot, they can only be ahead).
    sql().exec("CREATE TABLE log (id bigserial PRIMARY KEY, moved int)");
    std::atomic<bool> stop{false};
    std::atomic<int> transfers{0};
    std::thread writer([&] {
        pg::Connection w = direct();
        for (int i = 0; !stop.load(); ++i) {
            const std::string id = std::to_string(1 + i % 10000);
            w.exec("BEGIN; UPDATE a SET balance = balance - 1 WHERE id = " + id + "; UPDATE b SET balance = balance + 1 "
                   "WHERE id = " + id + "; INSERT INTO log (moved) VALUES (" + id + "); COMMIT");
            transfers.fetch_add(1);
        }
    });
    while (transfers.load() < 50) std::this_thread::sleep_for(1ms);
    auto backup = pg::backup_database(runner(3), dir_ / "set");
    const JobState end = backup.wait();
    const int during = transfers.load();
    stop = true;
    writer.join();
    ASSERT_EQ(end, JobState::succeeded) << backup.error();
    auto restore = pg::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    pg::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT (SELECT sum(balance) FROM a) + (SELECT sum(balance) FROM b)"), "1000000");
    EXPECT_EQ(t.query_value("SELECT (SELECT sum(balance) FROM b) = (SELECT count(*) FROM log)"), "t");
    EXPECT_EQ(t.query_value("SELECT nextval('log_id_seq') > (SELECT coalesce(max(id), 0) FROM log)"), "t");
    EXPECT_GT(during, 50);
}

TEST_F(PostgresDatabaseJobs, a_table_locked_exclusively_fails_the_backup_at_once_naming_the_lock) {
    sql().exec("CREATE TABLE t (a int); CREATE TABLE u (a int)");
    pg::Connection holder = direct();
    holder.exec("BEGIN; LOCK TABLE u IN ACCESS EXCLUSIVE MODE");
    try {
        auto backup = pg::backup_database(runner(3), dir_ / "set");
        FAIL() << "started";
    } catch (const pg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("locked by another session"), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find(PgServer::password), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir_ / "set" / "manifest.json"));
}

TEST_F(PostgresDatabaseJobs, a_pool_that_cannot_give_the_leader_and_a_table_a_connection_is_refused) {
    try {
        auto backup = pg::backup_database(runner(1), dir_ / "set");
        FAIL() << "started";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("N+1"), std::string::npos) << e.what();
    }
}

TEST_F(PostgresDatabaseJobs, a_set_with_a_changed_file_is_refused_before_the_target_is_touched) {
    sql().exec("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 1000)");
    auto backup = pg::backup_database(runner(2), dir_ / "set");
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    std::ofstream(dir_ / "set" / "table-0001.copy", std::ios::app) << "x";
    auto& r = target();
    EXPECT_THROW((void)pg::restore_database(r, dir_ / "set"), connpool::io::Error);
    pg::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_class WHERE relname = 't'"), "0");
}

TEST_F(PostgresDatabaseJobs, a_table_restore_does_not_read_again_what_the_manifest_check_read_yet_still_checks_it) {
    sql().exec("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 5000)");
    pg::DatabaseBackupOptions raw;
    raw.table.compression = pg::Compression::none;
    auto backup = pg::backup_database(runner(2), dir_ / "set", raw);
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    const fs::path file = dir_ / "set" / "table-0001.copy";
    ASSERT_TRUE(fs::exists(file));
    // table_progress runs after the manifest check, before the table's job is submitted: a byte
    // flipped in place then, with the modification time put back, keeps the identity the check
    // saw, so the restore skips its check pass and sends the rows; the COPY pass's checksum
    // still catches it and the table's transaction rolls back.
    std::atomic<std::uint64_t> sent{0};
    pg::DatabaseRestoreOptions o;
    o.table_progress = [&](const pg::Table&) -> connpool::ProgressCallback {
        connpool::testing::flip_byte(file, connpool::testing::middle_of(file));
        return [&](const connpool::Progress& p) { sent = std::max<std::uint64_t>(sent, p.done); };
    };
    auto restore = pg::restore_database(target(), dir_ / "set", o);
    EXPECT_EQ(restore.wait(), JobState::failed);
    EXPECT_NE(restore.error().find("checksum"), std::string::npos) << restore.error();
    EXPECT_GT(sent.load(), 0u) << "the manifest check read the file: its restore loads without a check pass";
    pg::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_class WHERE relname = 't'"), "0") << "the failed set dropped its table";
}

/// Fills the source with what a restore creates besides tables (a schema, an enum, a domain, a
/// function, a view, a sequence) and two tables of `rows` rows.
void create_set_objects(pg::Connection& c, int rows) {
    c.exec("CREATE SCHEMA \"Set's schema\"; CREATE TYPE mood AS ENUM ('ok', 'meh'); CREATE DOMAIN positive AS int CHECK (VALUE > 0)");
    c.exec("CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 2 * x'");
    c.exec("CREATE TABLE big (id int PRIMARY KEY, m mood, p positive, pad text)");
    c.exec("INSERT INTO big SELECT i, 'ok', i, repeat('p', 100) FROM generate_series(1, " + std::to_string(rows) + ") i");
    c.exec("CREATE TABLE \"Set's schema\".other (id bigserial PRIMARY KEY, v int); INSERT INTO \"Set's schema\".other (v) "
           "SELECT i FROM generate_series(1, 1000) i");
    c.exec("CREATE VIEW doubled AS SELECT id, twice(id) AS d FROM big; CREATE SEQUENCE loose START 42");
}

/// Returns what a restore of create_set_objects' set leaves in `c`'s database, as one line.
std::string set_objects_in(pg::Connection& c) {
    return *c.query_value(
        "SELECT concat_ws(' ', (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname NOT LIKE "
        "'pg\\_%' AND nspname NOT IN ('public', 'information_schema')), (SELECT string_agg(relname, ',' ORDER BY relname) FROM "
        "pg_class WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, "
        "'pg_toast'::regnamespace) AND relkind IN ('r', 'v', 'S')), (SELECT string_agg(typname, ',' ORDER BY typname) FROM "
        "pg_type WHERE typnamespace = 'public'::regnamespace AND typtype IN ('e', 'd')), (SELECT string_agg(proname, ',' ORDER "
        "BY proname) FROM pg_proc WHERE pronamespace = 'public'::regnamespace))");
}

TEST_F(PostgresDatabaseJobs, a_cancelled_restore_drops_every_object_it_created_and_nothing_that_was_there) {
    create_set_objects(sql(), 200'000);
    auto backup = pg::backup_database(runner(2), dir_ / "set");
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    PgRunner& into = target();
    pg::Connection t = target_sql();
    t.exec("CREATE TABLE was_there (a int); INSERT INTO was_there VALUES (1); CREATE FUNCTION kept() RETURNS int "
           "LANGUAGE sql AS 'SELECT 1'");
    const std::string before = set_objects_in(t);
    auto restore = pg::restore_database(into, dir_ / "set");
    restore.cancel(); // the pre-data schema has committed by now; the tables are loading
    EXPECT_EQ(restore.wait(), JobState::cancelled) << restore.error();
    EXPECT_EQ(set_objects_in(t), before);
    EXPECT_EQ(t.query_value("SELECT count(*) FROM was_there"), "1");
    // And it runs again, whole.
    auto again = pg::restore_database(into, dir_ / "set");
    ASSERT_EQ(again.wait(), JobState::succeeded) << again.error();
    EXPECT_EQ(t.query_value("SELECT count(*) FROM big"), "200000");
    EXPECT_EQ(t.query_value("SELECT d FROM doubled WHERE id = 21"), "42");
    EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '#connpool%'"), "0");
}

TEST_F(PostgresDatabaseJobs, a_restore_killed_at_any_moment_is_undone_by_the_next_one_which_then_succeeds) {
    create_set_objects(sql(), 100'000);
    auto backup = pg::backup_database(runner(2), dir_ / "set");
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    target();
    std::optional<pg::Connection> target_connection(target_sql());
    const std::string empty = set_objects_in(*target_connection);
    // How long a whole restore takes here: the kills land anywhere from before it starts to after it ends.
    const auto start = std::chrono::steady_clock::now();
    {
        auto whole = pg::restore_database(*target_runner_, dir_ / "set");
        ASSERT_EQ(whole.wait(), JobState::succeeded) << whole.error();
    }
    const int span_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count() * 12 / 10 + 50);
    const auto anew = [&] { // an empty target again, with a new pool and runner
        target_connection.reset();
        target_runner_.reset();
        target_pool_.reset();
        server().psql("DROP DATABASE IF EXISTS " + target_ + " WITH (FORCE)");
        target();
        target_connection.emplace(target_sql());
    };
    anew();
    std::mt19937 random(20261204);
    int killed = 0, finished = 0, undone = 0;
    for (int trial = 0; trial < 6; ++trial) {
        SCOPED_TRACE("trial " + std::to_string(trial));
        pg::Connection& t = *target_connection;
        const pid_t pid = connpool::testing::spawn_self({std::string(kill_child_conninfo) + "=" + server().conninfo(target_),
                                                         std::string(kill_child_restore) + "=" + (dir_ / "set").string()});
        ASSERT_GT(pid, 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, span_ms)(random)));
        const int status = connpool::testing::kill_and_reap(pid);
        if (WIFSIGNALED(status)) ++killed;
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++finished;
        else ADD_FAILURE() << "the child failed with status " << status;
        const bool journal = t.query_value("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '#connpool%'") != "0";
        const bool whole = !journal && set_objects_in(t) != empty;
        if (whole) {
            // The new state: every table whole.
            EXPECT_EQ(t.query_value("SELECT count(*) FROM big"), "100000");
            EXPECT_EQ(t.query_value("SELECT count(*) FROM \"Set's schema\".other"), "1000");
        } else {
            // The old state, or a journal the next restore runs first.
            if (journal) ++undone;
            auto again = pg::restore_database(*target_runner_, dir_ / "set");
            ASSERT_EQ(again.wait(), JobState::succeeded) << again.error();
            EXPECT_EQ(t.query_value("SELECT count(*) FROM big"), "100000");
            EXPECT_EQ(t.query_value("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '#connpool%'"), "0");
        }
        anew(); // an empty target for the next trial
    }
    std::printf("pg restore kills (within %d ms): %d killed (%d leaving a journal), %d finished before the kill\n", span_ms,
                killed, undone, finished);
    EXPECT_GT(killed, 0);
}

TEST_F(PostgresDatabaseJobs, table_and_database_round_trips_work_through_pgbouncer_in_session_mode) {
    sql().exec("CREATE TABLE child (id bigserial PRIMARY KEY, note text); INSERT INTO child (note) SELECT 'n' || i "
               "FROM generate_series(1, 3000) i");
    create_awkward(200);
    const std::string awkward = fingerprint("awkward"), child = fingerprint("child");
    PgBouncer bouncer; // declared before the pools: it outlives their connections
    CONNPOOL_REQUIRE_PGBOUNCER(bouncer);
    PgPool pool(pg::Factory(bouncer.conninfo(db_)), pg_pool_options(3));
    PgRunner r(pool);

    ASSERT_EQ(run_on(r, pg::backup_table({"awkward"}, dir_ / "awkward")), JobState::succeeded) << last_error_ << bouncer.log();
    sql().exec("DELETE FROM awkward WHERE id % 2 = 0");
    ASSERT_EQ(run_on(r, pg::restore_table({"awkward"}, dir_ / "awkward")), JobState::succeeded) << last_error_;
    EXPECT_EQ(fingerprint("awkward"), awkward);
    // The pool's sessions really are PgBouncer's clients (its admin console lists them).
    {
        pg::Connection admin = pg::Factory(bouncer.conninfo("pgbouncer")).create();
        const pg::Result clients = admin.exec("SHOW CLIENTS");
        int ours = 0;
        for (int i = 0; i < clients.rows(); ++i)
            for (int col = 0; col < clients.columns(); ++col)
                if (std::string(PQfname(clients.handle(), col)) == "database" && clients.get(i, col) == db_) ++ours;
        EXPECT_GE(ours, 1) << "no client of PgBouncer on " << db_;
    }

    // A whole set: the leader's exported snapshot is imported by the table jobs' sessions and
    // by pg_dump's, all through PgBouncer (session mode keeps each on one server session).
    auto backup = pg::backup_database(r, dir_ / "set");
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error() << bouncer.log();
    auto restore = pg::restore_database(target(3, &bouncer), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error() << bouncer.log();
    pg::Connection t = target_sql();
    EXPECT_EQ(fingerprint_on(t, "awkward"), awkward);
    EXPECT_EQ(fingerprint_on(t, "child"), child);
    EXPECT_EQ(t.query_value("SELECT nextval('child_id_seq')"), "3001");
    EXPECT_EQ(pool.stats().in_use, 0u);
}

TEST_F(PostgresDatabaseJobs, a_set_of_chosen_tables_holds_only_those_and_restores_into_an_empty_database) {
    sql().exec("CREATE SCHEMA \"Other\"; CREATE TABLE a (id serial PRIMARY KEY, v text); CREATE TABLE b (id serial, v "
               "text); CREATE TABLE \"Other\".\"C c\" (id bigserial PRIMARY KEY, a int REFERENCES a, v text)");
    sql().exec("INSERT INTO a (v) SELECT 'a' || i FROM generate_series(1, 700) i; INSERT INTO b (v) SELECT 'b' || i FROM "
               "generate_series(1, 300) i; INSERT INTO \"Other\".\"C c\" (a, v) SELECT 1 + i % 700, 'c' || i FROM "
               "generate_series(1, 900) i");
    const std::string a = fingerprint("a"), c = fingerprint("\"Other\".\"C c\"");
    pg::DatabaseBackupOptions o;
    o.tables = {pg::Table{"a"}, pg::Table{"Other", "C c"}};
    auto backup = pg::backup_database(runner(3), dir_ / "set", o);
    ASSERT_EQ(backup.tables().size(), 2u);
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    const auto list = nlohmann::json::parse(connpool::testing::slurp(dir_ / "set" / "tables.json"));
    std::vector<std::string> names;
    for (const auto& t : list) names.push_back(t.at("schema").get<std::string>() + "." + t.at("name").get<std::string>());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"Other.C c", "public.a"}));
    const auto manifest = nlohmann::json::parse(connpool::testing::slurp(dir_ / "set" / "manifest.json"));
    EXPECT_EQ(manifest.at("files").size(), 6u) << manifest.dump(2); // four set files and two tables
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_ / "set"), fs::directory_iterator()), 7) << "and the manifest";
    EXPECT_EQ(connpool::testing::slurp(dir_ / "set" / "pre-data.sql").find("public.b "), std::string::npos);
    EXPECT_EQ(connpool::testing::slurp(dir_ / "set" / "sequences.json").find("b_id_seq"), std::string::npos);

    auto restore = pg::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    pg::Connection t = target_sql();
    EXPECT_EQ(fingerprint_on(t, "a"), a);
    EXPECT_EQ(fingerprint_on(t, "\"Other\".\"C c\""), c);
    EXPECT_EQ(t.query_value("SELECT to_regclass('public.b') IS NULL"), "t");
    EXPECT_EQ(t.query_value("SELECT nextval('a_id_seq')"), "701");
    EXPECT_EQ(t.query_value("SELECT nextval('\"Other\".\"C c_id_seq\"')"), "901");
}

TEST_F(PostgresDatabaseJobs, a_chosen_table_that_does_not_exist_is_refused_before_anything_is_written) {
    sql().exec("CREATE TABLE a (id int)");
    pg::DatabaseBackupOptions o;
    o.tables = {pg::Table{"a"}, pg::Table{"no such", "table"}};
    try {
        auto backup = pg::backup_database(runner(3), dir_ / "set", o);
        FAIL() << "started";
    } catch (const pg::Error& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find("\"no such\".\"table\""), std::string::npos) << message;
        EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
        EXPECT_NE(message.find("DatabaseBackupOptions::tables"), std::string::npos) << message;
    }
    EXPECT_FALSE(fs::exists(dir_ / "set")) << "nothing is written for a set that cannot start";
    EXPECT_EQ(pool_->stats().in_use, 0u);
}

TEST_F(PostgresDatabaseJobs, a_watched_database_backup_shows_one_job_per_table_and_the_aggregate_adds_them_up) {
    const std::vector<std::string> names{"small", "medium", "large"};
    for (std::size_t i = 0; i < names.size(); ++i)
        sql().exec("CREATE TABLE " + names[i] + " (id int, v text); INSERT INTO " + names[i] + " SELECT g, repeat('x', 200) "
                   "FROM generate_series(1, " + std::to_string(5000 * (i + 1) * (i + 1)) + ") g");
    connpool::monitor::Hub hub;
    auto& r = runner(3);
    const auto watch = hub.watch(r);
    auto backup = pg::backup_database(r, dir_ / "set");
    // While it runs: the aggregate never goes back, never passes its total, and the hub never
    // shows more jobs than tables.
    std::uint64_t last_done = 0;
    while (backup.progress().tables_done < names.size()) {
        const auto p = backup.progress();
        EXPECT_GE(p.done, last_done);
        EXPECT_LE(p.done, p.total);
        EXPECT_EQ(p.tables, names.size());
        if (p.eta) {
            EXPECT_GT(p.eta->count(), 0);
        }
        last_done = p.done;
        EXPECT_LE(hub.jobs().size(), names.size());
        std::this_thread::sleep_for(5ms);
    }
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();

    // One job per table, largest first, each at 100 % in bytes; the aggregate is their sum.
    const auto jobs = hub.jobs();
    ASSERT_EQ(jobs.size(), names.size());
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        EXPECT_EQ(jobs[i].name, pg::Table{names[names.size() - 1 - i]}.display());
        EXPECT_EQ(jobs[i].kind, connpool::JobKind::backup);
        EXPECT_EQ(jobs[i].state, JobState::succeeded);
        EXPECT_EQ(jobs[i].unit, "bytes");
        EXPECT_GT(jobs[i].done, 0u);
        EXPECT_EQ(jobs[i].done, jobs[i].total);
        sum += jobs[i].done;
    }
    const auto total = backup.progress();
    EXPECT_EQ(total.done, sum);
    EXPECT_EQ(total.total, sum);
    EXPECT_EQ(total.tables_done, names.size());
    EXPECT_FALSE(total.eta.has_value()) << "no time left once done";
    // And Prometheus has each table's ratio at 1.
    const std::string metrics = connpool::monitor::render_prometheus(hub.metrics());
    std::size_t series = 0;
    for (std::size_t at = metrics.find("\nconnpool_job_progress_ratio{"); at != std::string::npos;
         at = metrics.find("\nconnpool_job_progress_ratio{", at + 1)) {
        ++series;
        const std::size_t end = metrics.find('\n', at + 1);
        EXPECT_EQ(metrics.substr(end - 2, 2), " 1") << metrics.substr(at + 1, end - at - 1);
    }
    EXPECT_EQ(series, names.size()) << metrics;
}

TEST_F(PostgresDatabaseJobs, a_sets_total_counts_the_queued_tables_from_the_start) {
    // A pool of 2 copies one table at a time: the other tables' jobs are queued when the set
    // returns, and have said no total yet. The set's total counted only what had started, so it
    // grew table by table and its ETA was that of the first table (it read 1 of 3 tables' bytes).
    std::uint64_t catalog = 0;
    for (const char* name : {"a", "b", "c"}) {
        sql().exec(std::string("CREATE TABLE ") + name + " (id int, v text); INSERT INTO " + name +
                   " SELECT g, repeat('x', 300) FROM generate_series(1, 3000) g");
        catalog += std::stoull(*sql().query_value(std::string("SELECT pg_table_size('") + name + "')"));
    }
    auto backup = pg::backup_database(runner(2), dir_ / "set");
    const auto at_start = backup.progress();
    EXPECT_GE(at_start.total, catalog) << "every table's size counts before its job runs";
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    const std::uint64_t exact = backup.progress().total;

    auto restore = pg::restore_database(target(2), dir_ / "set");
    const auto restore_start = restore.progress();
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_EQ(restore_start.total, exact) << "a restore knows every file's size before it loads";
    EXPECT_EQ(restore.progress().total, exact);
}

TEST_F(PostgresDatabaseJobs, a_tracked_database_backup_writes_queued_started_and_ended_lines_for_every_table) {
    const std::vector<std::string> names{"one", "two", "three"};
    for (const auto& n : names)
        sql().exec("CREATE TABLE " + n + " (id int); INSERT INTO " + n + " SELECT generate_series(1, 1000)");
    std::ostringstream lines;
    {
        connpool::monitor::Hub hub;
        hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(lines));
        pg::DatabaseBackupOptions options;
        options.table_progress = [&hub](const pg::Table&) { return hub.track(); }; // as examples/postgres_backup
        auto backup = pg::backup_database(runner(3), dir_ / "set", options);
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    // job name -> its events in order, from lines that each parse as one JSON object
    std::map<std::string, std::vector<std::string>> events;
    std::map<std::string, std::string> end_state;
    std::istringstream in(lines.str());
    for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line, nullptr, false);
        ASSERT_TRUE(j.is_object()) << line;
        const std::string event = j.at("event").get<std::string>();
        if (event.rfind("job.", 0) != 0) continue;
        const std::string job = j.at("job").get<std::string>();
        EXPECT_EQ(j.at("kind"), "backup") << line;
        events[job].push_back(event);
        if (event == "job.ended") end_state[job] = j.at("state").get<std::string>();
    }
    ASSERT_EQ(events.size(), names.size()) << lines.str();
    for (const auto& n : names) {
        const std::string job = pg::Table{n}.display();
        ASSERT_EQ(events.count(job), 1u) << job << " has no lines in\n" << lines.str();
        const auto& e = events[job];
        const auto at = [&e](const char* name) { return std::find(e.begin(), e.end(), name) - e.begin(); };
        ASSERT_LT(at("job.queued"), at("job.started")) << job;
        ASSERT_LT(at("job.started"), at("job.ended")) << job;
        EXPECT_EQ(std::count(e.begin(), e.end(), "job.ended"), 1) << job;
        EXPECT_EQ(e.back(), "job.ended") << job;
        EXPECT_EQ(end_state[job], "succeeded") << job;
    }
}

} // namespace
