// The SQLite adapter's Factory and Connection with real SQLite, the validation of the job
// options, and how the job layer treats SQLite jobs that throw or outnumber the connections.
#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "sqlite_fixtures.hpp"
#include "sqlite_test_names.hpp"


namespace {

/// Returns the message of the exception `f()` throws as `E`; fails the test if it throws
/// nothing or something else.
template <class E, class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw another exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "threw nothing";
    return {};
}

} // namespace

// ---- Factory ---------------------------------------------------------------------------------

TEST(SqliteFactory, create_opens_a_usable_connection_on_the_path) {
    TempDir dir;
    const auto path = dir / "app.db";
    sqlite::Factory factory{path};
    EXPECT_EQ(factory.path(), path);
    sqlite::Connection c = factory.create();
    ASSERT_NE(c.handle(), nullptr);
    EXPECT_EQ(c.path(), path);
    c.exec("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (40), (2)");
    EXPECT_EQ(c.query_int("SELECT sum(x) FROM t"), 42);
    EXPECT_TRUE(std::filesystem::exists(path));
    // The data is really in the file: another connection sees it.
    EXPECT_EQ(RawDb::read_only(path).integer("SELECT count(*) FROM t"), 2);
}

TEST(SqliteFactory, create_in_a_missing_directory_throws_an_error_naming_the_path) {
    TempDir dir;
    const auto path = dir / "no-such-dir" / "app.db";
    sqlite::Factory factory{path, sqlite::FactoryOptions{.open_flags = SQLITE_OPEN_READWRITE}};
    try {
        (void)factory.create();
        FAIL() << "create() did not throw";
    } catch (const sqlite::Error& e) {
        EXPECT_THAT(e.what(), HasSubstr(path.string()));
        EXPECT_EQ(e.code() & 0xff, SQLITE_CANTOPEN) << e.what();
    }
    // The default flags (read-write, create) cannot create a missing directory either.
    sqlite::Factory creating{path};
    EXPECT_THAT(message_of<sqlite::Error>([&] { (void)creating.create(); }), HasSubstr(path.string()));
    EXPECT_FALSE(std::filesystem::exists(path.parent_path()));
    static_assert(std::is_base_of_v<connpool::Error, sqlite::Error>);
}

TEST(SqliteFactory, read_write_without_create_does_not_create_a_missing_file) {
    TempDir dir;
    const auto path = dir / "missing.db";
    sqlite::Factory factory{path, sqlite::FactoryOptions{.open_flags = SQLITE_OPEN_READWRITE}};
    EXPECT_THAT(message_of<sqlite::Error>([&] { (void)factory.create(); }), HasSubstr(path.string()));
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SqliteFactory, pool_acquire_on_an_unopenable_path_times_out_with_the_creation_error) {
    TempDir dir;
    const auto path = dir / "no-such-dir" / "app.db";
    auto options = sqlite_pool_options(1);
    options.create_retry_initial = 5ms;
    options.create_retry_max = 20ms;
    SqlitePool pool{sqlite::Factory{path, sqlite::FactoryOptions{.open_flags = SQLITE_OPEN_READWRITE}}, options};
    const std::string message = message_of<connpool::AcquireTimeout>([&] { (void)pool.acquire_for(200ms); });
    EXPECT_THAT(message, HasSubstr(path.string()));
    EXPECT_GE(pool.stats().create_failures, 1u);
    expect_pool_consistent(pool.stats());
}

TEST(SqliteFactory, wal_option_puts_the_database_in_wal_mode) {
    TempDir dir;
    const auto path = dir / "wal.db";
    sqlite::Factory factory{path, sqlite::FactoryOptions{.wal = true}};
    auto c = factory.create();
    RawDb raw_check(path); // opened while the factory's connection is open, like any other reader
    EXPECT_EQ(raw_check.text("PRAGMA journal_mode"), "wal");
    c.exec("CREATE TABLE t(x)");
    EXPECT_EQ(connpool::testing::format_versions(path), std::make_pair(2, 2)) << "the file header says WAL";
    // A second connection from the same factory is in WAL mode too.
    auto d = factory.create();
    EXPECT_EQ(RawDb::read_only(path).text("PRAGMA journal_mode"), "wal");
    (void)d;
}

TEST(SqliteFactory, default_options_keep_the_file_journal_mode) {
    TempDir dir;
    const auto fresh = dir / "fresh.db";
    {
        auto c = sqlite::Factory{fresh}.create();
        c.exec("CREATE TABLE t(x)");
    }
    EXPECT_EQ(RawDb::read_only(fresh).text("PRAGMA journal_mode"), "delete");

    const auto wal = dir / "wal.db";
    create_demo_db(wal, {.customers = 10, .orders = 10, .wal = true});
    auto c = sqlite::Factory{wal}.create();
    EXPECT_EQ(c.query_int("SELECT count(*) FROM orders"), 10);
    EXPECT_EQ(RawDb::read_only(wal).text("PRAGMA journal_mode"), "wal");
}

TEST(SqliteFactory, busy_timeout_is_applied_to_every_connection) {
    TempDir dir;
    const auto path = dir / "busy.db";
    sqlite::Factory factory{path, sqlite::FactoryOptions{.busy_timeout = 1234ms}};
    auto a = factory.create();
    auto b = factory.create();
    EXPECT_EQ(a.query_int("PRAGMA busy_timeout"), 1234);
    EXPECT_EQ(b.query_int("PRAGMA busy_timeout"), 1234);
    EXPECT_EQ(sqlite::Factory{path}.create().query_int("PRAGMA busy_timeout"), 5000) << "the documented default";
}

TEST(SqliteFactory, a_short_busy_timeout_gives_up_with_sqlite_busy_naming_the_path) {
    TempDir dir;
    const auto path = dir / "busy.db";
    create_demo_db(path, {.customers = 10, .orders = 10});
    RawDb locker(path);
    locker.exec("BEGIN EXCLUSIVE");
    auto c = sqlite::Factory{path, sqlite::FactoryOptions{.busy_timeout = 20ms}}.create();
    try {
        c.exec("INSERT INTO audit(what) VALUES ('blocked')");
        FAIL() << "the write went through an exclusive lock";
    } catch (const sqlite::Error& e) {
        EXPECT_EQ(e.code() & 0xff, SQLITE_BUSY) << e.what();
        EXPECT_THAT(e.what(), HasSubstr(path.string()));
    }
    locker.exec("ROLLBACK");
    c.exec("INSERT INTO audit(what) VALUES ('free again')");
    EXPECT_EQ(c.query_int("SELECT count(*) FROM audit WHERE what = 'free again'"), 1);
}

TEST(SqliteFactory, negative_busy_timeout_throws_invalid_argument_naming_the_field) {
    TempDir dir;
    const std::string message = message_of<std::invalid_argument>(
        [&] { sqlite::Factory factory{dir / "x.db", sqlite::FactoryOptions{.busy_timeout = -1ms}}; });
    EXPECT_THAT(message, HasSubstr("busy_timeout"));
    EXPECT_THAT(message, HasSubstr("-1"));
}

TEST(SqliteFactory, init_sql_runs_on_every_new_connection) {
    TempDir dir;
    sqlite::Factory factory{dir / "init.db",
                            sqlite::FactoryOptions{.init_sql = "PRAGMA foreign_keys=ON; PRAGMA cache_size=-1234"}};
    for (int i = 0; i < 2; ++i) {
        auto c = factory.create();
        EXPECT_EQ(c.query_int("PRAGMA foreign_keys"), 1);
        EXPECT_EQ(c.query_int("PRAGMA cache_size"), -1234);
    }
}

TEST(SqliteFactory, failing_init_sql_throws_an_error_naming_the_path) {
    TempDir dir;
    const auto path = dir / "init.db";
    sqlite::Factory factory{path, sqlite::FactoryOptions{.init_sql = "THIS IS NOT SQL"}};
    const std::string message = message_of<sqlite::Error>([&] { (void)factory.create(); });
    EXPECT_THAT(message, HasSubstr(path.string()));
    EXPECT_THAT(message, HasSubstr("syntax error"));
}

TEST(SqliteFactory, reset_rolls_back_a_transaction_left_open_by_a_lease) {
    TempDir dir;
    const auto path = dir / "reset.db";
    SqlitePool pool{sqlite::Factory{path}, sqlite_pool_options(1)};
    {
        auto lease = pool.acquire();
        lease->exec("CREATE TABLE t(x)");
        lease->exec("BEGIN; INSERT INTO t VALUES (1)");
        EXPECT_EQ(sqlite3_get_autocommit(lease->handle()), 0);
        EXPECT_EQ(lease->query_int("SELECT count(*) FROM t"), 1) << "visible inside the transaction";
    } // released with the transaction open
    {
        auto lease = pool.acquire();
        EXPECT_NE(sqlite3_get_autocommit(lease->handle()), 0) << "back in autocommit mode";
        EXPECT_EQ(lease->query_int("SELECT count(*) FROM t"), 0) << "the insert was rolled back";
    }
    const auto s = pool.stats();
    EXPECT_EQ(s.created, 1u) << "the same connection was reused";
    EXPECT_EQ(s.destroyed, 0u);
    EXPECT_EQ(s.discarded, 0u);
    expect_pool_consistent(s);
    // No lock was left behind: another connection can write at once.
    RawDb other(path);
    sqlite3_busy_timeout(other.handle(), 0);
    other.exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT");
    EXPECT_EQ(other.integer("SELECT count(*) FROM t"), 1);
}

TEST(SqliteFactory, reset_leaves_a_connection_in_autocommit_alone) {
    TempDir dir;
    sqlite::Factory factory{dir / "reset.db"};
    auto c = factory.create();
    c.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    EXPECT_TRUE(factory.reset(c));
    EXPECT_EQ(c.query_int("SELECT count(*) FROM t"), 1);
}

TEST(SqliteFactory, validate_accepts_a_live_connection) {
    TempDir dir;
    const auto path = dir / "validate.db";
    sqlite::Factory factory{path};
    auto c = factory.create();
    EXPECT_TRUE(factory.validate(c));
    // It never waits for a lock: it answers even while another connection holds an exclusive one.
    create_demo_db(dir / "locked.db", {.customers = 10, .orders = 10});
    sqlite::Factory locked_factory{dir / "locked.db", sqlite::FactoryOptions{.busy_timeout = 0ms}};
    auto d = locked_factory.create();
    RawDb locker(dir / "locked.db");
    locker.exec("BEGIN EXCLUSIVE");
    EXPECT_TRUE(locked_factory.validate(d));
    locker.exec("ROLLBACK");
}

TEST(SqliteFactory, a_connection_that_fails_validation_is_replaced_by_the_pool) {
    TempDir dir;
    auto options = sqlite_pool_options(1);
    options.validate_after_idle = 0ms; // validate every idle connection before handing it out
    SqlitePool pool{sqlite::Factory{dir / "validate.db"}, options};
    {
        auto lease = pool.acquire();
        // Make every statement on this connection fail, as a broken connection would.
        sqlite3_progress_handler(lease->handle(), 1, [](void*) { return 1; }, nullptr);
    }
    {
        auto lease = pool.acquire(); // a new connection (the old handle's address may be reused)
        EXPECT_EQ(lease->query_int("SELECT 7"), 7) << "statements work again";
    }
    const auto s = pool.stats();
    EXPECT_EQ(s.validation_failures, 1u);
    EXPECT_EQ(s.created, 2u);
    EXPECT_EQ(s.destroyed, 1u);
    expect_pool_consistent(s);
}

// ---- Connection ------------------------------------------------------------------------------

TEST(SqliteConnection, exec_failure_throws_an_error_with_the_path_and_sqlite_code) {
    TempDir dir;
    const auto path = dir / "conn.db";
    auto c = sqlite::Factory{path}.create();
    try {
        c.exec("SELEC 1");
        FAIL() << "a syntax error was accepted";
    } catch (const sqlite::Error& e) {
        EXPECT_EQ(e.code(), SQLITE_ERROR);
        EXPECT_THAT(e.what(), HasSubstr(path.string()));
        EXPECT_THAT(e.what(), HasSubstr("syntax error"));
    }
    EXPECT_THAT(message_of<sqlite::Error>([&] { (void)c.query_int("SELECT * FROM no_such_table"); }),
                HasSubstr("no such table"));
}

TEST(SqliteConnection, query_int_returns_the_first_column_or_zero_without_rows) {
    TempDir dir;
    auto c = sqlite::Factory{dir / "conn.db"}.create();
    c.exec("CREATE TABLE t(a, b); INSERT INTO t VALUES (5, 6)");
    EXPECT_EQ(c.query_int("SELECT a, b FROM t"), 5);
    EXPECT_EQ(c.query_int("SELECT a FROM t WHERE a > 100"), 0);
    EXPECT_EQ(c.query_int("SELECT 9007199254740993"), 9007199254740993LL) << "64-bit, not truncated";
}

TEST(SqliteConnection, is_move_only_and_a_moved_connection_keeps_working) {
    static_assert(!std::is_copy_constructible_v<sqlite::Connection>);
    static_assert(std::is_nothrow_move_constructible_v<sqlite::Connection>);
    TempDir dir;
    auto c = sqlite::Factory{dir / "conn.db"}.create();
    sqlite3* handle = c.handle();
    sqlite::Connection moved{std::move(c)};
    EXPECT_EQ(moved.handle(), handle);
    EXPECT_EQ(moved.query_int("SELECT 3"), 3);
}

TEST(SqliteConnection, pool_deduces_the_connection_type_from_the_factory) {
    TempDir dir;
    connpool::Pool pool{sqlite::Factory{dir / "deduce.db"}, sqlite_pool_options(2)};
    static_assert(std::is_same_v<decltype(pool), SqlitePool>);
    auto lease = pool.acquire();
    EXPECT_EQ(lease->query_int("SELECT 1"), 1);
}

// ---- job options -----------------------------------------------------------------------------

TEST(SqliteJobOptions, backup_to_rejects_an_invalid_pages_per_step_naming_the_field) {
    for (int bad : {0, -2, -5}) {
        const std::string message = message_of<std::invalid_argument>(
            [&] { (void)sqlite::backup_to("/tmp/x.db", sqlite::BackupOptions{.pages_per_step = bad}); });
        EXPECT_THAT(message, HasSubstr("pages_per_step"));
        EXPECT_THAT(message, HasSubstr(std::to_string(bad)));
    }
    EXPECT_NO_THROW((void)sqlite::backup_to("/tmp/x.db", sqlite::BackupOptions{.pages_per_step = -1}));
    EXPECT_NO_THROW((void)sqlite::backup_to("/tmp/x.db", sqlite::BackupOptions{.pages_per_step = 1}));
}

TEST(SqliteJobOptions, backup_to_rejects_a_negative_pause_or_busy_limit_naming_the_field) {
    EXPECT_THAT(message_of<std::invalid_argument>(
                    [] { (void)sqlite::backup_to("/tmp/x.db", sqlite::BackupOptions{.pause = -1ms}); }),
                HasSubstr("pause"));
    EXPECT_THAT(message_of<std::invalid_argument>(
                    [] { (void)sqlite::backup_to("/tmp/x.db", sqlite::BackupOptions{.busy_limit = -5ms}); }),
                HasSubstr("busy_limit"));
    EXPECT_THAT(message_of<std::invalid_argument>([] { (void)sqlite::backup_to(""); }), HasSubstr("destination"));
}

TEST(SqliteJobOptions, restore_from_rejects_invalid_options_naming_the_field) {
    for (int bad : {0, -5}) {
        const std::string message = message_of<std::invalid_argument>(
            [&] { (void)sqlite::restore_from("/tmp/x.db", sqlite::RestoreOptions{.pages_per_step = bad}); });
        EXPECT_THAT(message, HasSubstr("pages_per_step"));
        EXPECT_THAT(message, HasSubstr(std::to_string(bad)));
    }
    EXPECT_THAT(message_of<std::invalid_argument>(
                    [] { (void)sqlite::restore_from("/tmp/x.db", sqlite::RestoreOptions{.pause = -1ms}); }),
                HasSubstr("pause"));
    EXPECT_THAT(message_of<std::invalid_argument>(
                    [] { (void)sqlite::restore_from("/tmp/x.db", sqlite::RestoreOptions{.busy_limit = -1ms}); }),
                HasSubstr("busy_limit"));
    EXPECT_THAT(message_of<std::invalid_argument>([] { (void)sqlite::restore_from(""); }), HasSubstr("source"));
    EXPECT_NO_THROW((void)sqlite::restore_from("/tmp/x.db", sqlite::RestoreOptions{.pages_per_step = -1}));
}

TEST(SqliteJobOptions, jobs_are_named_after_the_file_and_labelled_with_their_kind) {
    const auto backup = sqlite::backup_to("/some/dir/orders-2024.db");
    EXPECT_EQ(backup.name, "orders-2024.db");
    EXPECT_EQ(backup.kind, connpool::JobKind::backup);
    EXPECT_TRUE(static_cast<bool>(backup.run));
    const auto restore = sqlite::restore_from("/some/dir/orders-2023.db");
    EXPECT_EQ(restore.name, "orders-2023.db");
    EXPECT_EQ(restore.kind, connpool::JobKind::restore);
}

// ---- the job layer with SQLite jobs -----------------------------------------------------------

TEST(SqliteJobRunner, an_operation_that_throws_discards_its_connection_and_the_next_job_works) {
    TempDir dir;
    const auto source = dir / "source.db";
    create_demo_db(source, {.customers = 50, .orders = 200});
    SqlitePool pool{sqlite::Factory{source}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};

    connpool::Job<sqlite::Connection> boom{"boom", connpool::JobKind::backup,
                                           [](sqlite::Connection& c, connpool::ProgressReporter& r) {
                                               r.set_total(10, "pages");
                                               c.exec("BEGIN; DELETE FROM orders"); // leaves the connection mid-transaction
                                               throw std::runtime_error("operation exploded");
                                           }};
    auto failed = runner.submit(boom);
    ASSERT_EQ(wait_job(failed), JobState::failed);
    EXPECT_THAT(failed.error(), HasSubstr("operation exploded"));
    auto s = pool.stats();
    EXPECT_EQ(s.discarded, 1u);
    EXPECT_EQ(s.in_use, 0u);
    expect_pool_consistent(s);

    // The discarded connection's open transaction went with it: nothing was deleted.
    EXPECT_EQ(RawDb::read_only(source).integer("SELECT count(*) FROM orders"), 200);

    auto next = runner.submit(sqlite::backup_to(dir / "after.db"));
    ASSERT_EQ(wait_job(next), JobState::succeeded) << next.error();
    EXPECT_EQ(integrity_check(dir / "after.db"), "ok");
    s = pool.stats();
    EXPECT_EQ(s.discarded, 1u);
    EXPECT_EQ(s.created, 2u) << "a replacement connection was created";
    expect_pool_consistent(s);
}

TEST(SqliteJobRunner, an_operation_error_keeps_the_connection) {
    TempDir dir;
    SqlitePool pool{sqlite::Factory{dir / "source.db"}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    connpool::Job<sqlite::Connection> bad_input{
        "bad input", connpool::JobKind::restore,
        [](sqlite::Connection&, connpool::ProgressReporter&) { throw connpool::OperationError("input is bad"); }};
    auto h = runner.submit(bad_input);
    ASSERT_EQ(wait_job(h), JobState::failed);
    EXPECT_EQ(h.error(), "input is bad");
    const auto s = pool.stats();
    EXPECT_EQ(s.discarded, 0u);
    EXPECT_EQ(s.idle, 1u);
    expect_pool_consistent(s);
}

TEST(SqliteJobRunner, more_backup_jobs_than_connections_run_at_most_max_size_at_once) {
    TempDir dir;
    const auto source = dir / "source.db";
    create_demo_db(source, {.customers = 100, .orders = 1500, .wal = true});
    SqlitePool pool{sqlite::Factory{source}, sqlite_pool_options(2)};
    SqliteRunner runner{pool};
    ASSERT_EQ(runner.max_running(), 2u);

    std::mutex mu;
    std::condition_variable cv;
    int running = 0;
    int most = 0;
    std::vector<sqlite3*> handles_in_use;
    bool same_connection_twice = false;

    constexpr int jobs = 6;
    std::vector<connpool::JobHandle> handles;
    for (int i = 0; i < jobs; ++i) {
        auto inner = sqlite::backup_to(dir / ("copy-" + std::to_string(i) + ".db"),
                                       sqlite::BackupOptions{.pages_per_step = 16});
        connpool::Job<sqlite::Connection> counted{
            inner.name, inner.kind,
            [&, run = std::move(inner.run)](sqlite::Connection& c, connpool::ProgressReporter& r) {
                {
                    std::unique_lock lock(mu);
                    ++running;
                    most = std::max(most, running);
                    if (std::find(handles_in_use.begin(), handles_in_use.end(), c.handle()) != handles_in_use.end())
                        same_connection_twice = true;
                    handles_in_use.push_back(c.handle());
                    cv.notify_all();
                    // Hold on until two jobs have overlapped once, so the limit is really exercised.
                    cv.wait_for(lock, 60s, [&] { return most >= 2; });
                }
                struct Leave {
                    std::mutex& mu;
                    int& running;
                    std::vector<sqlite3*>& handles;
                    sqlite3* mine;
                    ~Leave() {
                        std::lock_guard lock(mu);
                        --running;
                        handles.erase(std::find(handles.begin(), handles.end(), mine));
                    }
                } leave{mu, running, handles_in_use, c.handle()};
                run(c, r);
            }};
        handles.push_back(runner.submit(std::move(counted)));
    }
    for (auto& h : handles) EXPECT_EQ(wait_job(h), JobState::succeeded) << h.error();
    runner.wait_all();

    {
        std::lock_guard lock(mu);
        EXPECT_EQ(most, 2);
        EXPECT_EQ(running, 0);
        EXPECT_FALSE(same_connection_twice) << "two running jobs shared a connection";
    }
    const auto expected = connpool::testing::fingerprint(source);
    for (int i = 0; i < jobs; ++i) {
        const auto copy = dir / ("copy-" + std::to_string(i) + ".db");
        EXPECT_EQ(integrity_check(copy), "ok") << copy;
        EXPECT_EQ(connpool::testing::fingerprint(copy), expected) << copy;
    }
    const auto s = pool.stats();
    EXPECT_LE(s.created, 2u);
    EXPECT_EQ(s.discarded, 0u);
    EXPECT_EQ(s.in_use, 0u);
    expect_pool_consistent(s);
}
