// sqlite::restore_from with real SQLite: backup → restore round trips, what a successful restore
// does to the target, bad sources that must leave the target byte-for-byte untouched, cancelled
// restores (which must roll back even after SQLite has spilled pages into the target file), and
// page-size mismatches.
#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "sqlite_fixtures.hpp"
#include "sqlite_test_names.hpp"


namespace {

const DemoSpec target_spec{.customers = 100, .orders = 1200, .payload_bytes = 150, .tag = "target"};
const DemoSpec source_spec{.customers = 250, .orders = 4000, .payload_bytes = 300, .tag = "source"};

/// Runs `job` on a pool of its own for `db` and returns its final state (error in `*error`).
JobState run_on(const fs::path& db, connpool::Job<sqlite::Connection> job, std::string* error = nullptr,
                sqlite::FactoryOptions factory_options = {}) {
    SqlitePool pool{sqlite::Factory{db, std::move(factory_options)}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    auto h = runner.submit(std::move(job));
    const JobState end = wait_job(h);
    if (error != nullptr) *error = h.error();
    return end;
}

/// Makes a backup of `source` at `dest` with backup_to, as a user would.
void make_backup(const fs::path& source, const fs::path& dest, bool wal = false) {
    std::string error;
    ASSERT_EQ(run_on(source, sqlite::backup_to(dest), &error, sqlite::FactoryOptions{.wal = wal}), JobState::succeeded)
        << error;
}

/// Makes a restore source with `spec` at `dir/name` (a good, closed, rollback-journal database).
fs::path good_source(const TempDir& dir, const std::string& name = "good.db", DemoSpec spec = source_spec) {
    const auto path = dir / name;
    create_demo_db(path, spec);
    return path;
}

/// Restores `source` (made by `make_source` in the test's directory) into a target that holds
/// data, and expects the job to fail naming the source, with `expected` in the message, the
/// target file byte for byte as before and the connection kept.
void expect_refused(const std::function<fs::path(const TempDir&)>& make_source, const std::string& expected,
                    sqlite::RestoreOptions options = {}) {
    TempDir dir;
    const auto target = dir / "target.db";
    create_demo_db(target, target_spec);
    const fs::path source = make_source(dir);
    const std::string before = file_bytes(target);
    const Fingerprint before_fp = fingerprint(target);
    ASSERT_FALSE(before.empty());

    SqlitePool pool{sqlite::Factory{target}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    auto h = runner.submit(sqlite::restore_from(source, options));
    ASSERT_EQ(wait_job(h), JobState::failed) << "restoring from " << source << " did not fail";
    EXPECT_THAT(h.error(), HasSubstr(source.string()));
    EXPECT_THAT(h.error(), HasSubstr(expected));
    EXPECT_TRUE(file_bytes(target) == before) << "the target file changed";
    {
        auto lease = pool.acquire();
        EXPECT_EQ(fingerprint(lease->handle()), before_fp);
    }
    EXPECT_THAT(dir_entries(dir.path()), Not(Contains("target.db-journal")));
    const auto s = pool.stats();
    EXPECT_EQ(s.discarded, 0u) << "a bad source is no reason to drop the target's connection";
    expect_pool_consistent(s);
}

/// Overwrites pages [first, first + count) (1-based) of the database file at `path` with garbage.
void scribble_pages(const fs::path& path, std::size_t first, std::size_t count, std::size_t page_size) {
    std::string bytes = file_bytes(path);
    for (std::size_t page = first; page < first + count; ++page)
        for (std::size_t i = 0; i < page_size; ++i) bytes.at((page - 1) * page_size + i) = static_cast<char>(0xA5 ^ (i * 7));
    write_file(path, bytes);
}

} // namespace

// ---- round trip ------------------------------------------------------------------------------

namespace {

void round_trip(bool wal) {
    TempDir dir;
    const auto source = dir / "source.db";
    create_demo_db(source, {.customers = 300, .orders = 4000, .payload_bytes = 250, .wal = wal});
    const auto backup = dir / "backup.db";
    const auto restored = dir / "restored.db";

    {
        SqlitePool pool{sqlite::Factory{source, sqlite::FactoryOptions{.wal = wal}}, sqlite_pool_options(2)};
        SqliteRunner runner{pool};
        auto h = runner.submit(sqlite::backup_to(backup, sqlite::BackupOptions{.pages_per_step = 64}));
        ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();
    }
    ASSERT_FALSE(fs::exists(restored));
    {
        SqlitePool pool{sqlite::Factory{restored}, sqlite_pool_options(2)}; // a fresh, empty database
        SqliteRunner runner{pool};
        auto h = runner.submit(sqlite::restore_from(backup, sqlite::RestoreOptions{.pages_per_step = 64}));
        ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();
        EXPECT_EQ(pool.stats().discarded, 0u);
    }

    const Fingerprint original = fingerprint(source);
    ASSERT_EQ(original.tables.size(), 4u);
    EXPECT_EQ(original.tables.at("orders").rows, 4000);
    EXPECT_EQ(original.tables.at("customers").rows, 300);
    EXPECT_EQ(fingerprint(backup), original);
    EXPECT_EQ(fingerprint(restored), original);
    EXPECT_EQ(integrity_check(restored), "ok");
    // Indexes came along and are used.
    EXPECT_EQ(RawDb::read_only(restored).integer("SELECT count(*) FROM orders INDEXED BY orders_by_customer "
                                                 "WHERE customer_id = 7"),
              RawDb::read_only(source).integer("SELECT count(*) FROM orders NOT INDEXED WHERE customer_id = 7"));
}

} // namespace

TEST(SqliteRoundTrip, backup_then_restore_into_a_fresh_database_preserves_schema_and_every_row) { round_trip(false); }

TEST(SqliteRoundTrip, backup_of_a_wal_database_then_restore_preserves_schema_and_every_row) { round_trip(true); }

// ---- successful restores ---------------------------------------------------------------------

TEST(SqliteRestore, replaces_the_target_and_every_pooled_connection_sees_the_new_contents) {
    TempDir dir;
    const auto target = dir / "target.db";
    create_demo_db(target, target_spec);
    const auto source = good_source(dir);
    RawDb(source).exec("CREATE TABLE only_in_source(x); INSERT INTO only_in_source VALUES (1), (2)");
    const Fingerprint expected = fingerprint(source);
    ASSERT_NE(fingerprint(target), expected);

    SqlitePool pool{sqlite::Factory{target}, sqlite_pool_options(2)};
    {   // two connections that have read (and cached) the old schema and pages
        auto a = pool.acquire();
        auto b = pool.acquire();
        EXPECT_EQ(a->query_int("SELECT count(*) FROM orders"), target_spec.orders);
        EXPECT_EQ(b->query_int("SELECT count(*) FROM orders"), target_spec.orders);
    }
    SqliteRunner runner{pool};
    auto h = runner.submit(sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 32}));
    ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();

    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        EXPECT_EQ(fingerprint(a->handle()), expected);
        EXPECT_EQ(fingerprint(b->handle()), expected);
        EXPECT_EQ(b->query_int("SELECT count(*) FROM only_in_source"), 2);
    }
    EXPECT_EQ(integrity_check(target), "ok");
    EXPECT_EQ(fingerprint(target), expected);
    EXPECT_THAT(dir_entries(dir.path()), Not(Contains("target.db-journal")));
    const auto s = pool.stats();
    EXPECT_EQ(s.created, 2u);
    EXPECT_EQ(s.discarded, 0u);
    expect_pool_consistent(s);
}

TEST(SqliteRestore, into_a_wal_target_with_the_same_page_size_succeeds_and_keeps_wal) {
    TempDir dir;
    const auto target = dir / "target.db";
    DemoSpec spec = target_spec;
    spec.wal = true;
    create_demo_db(target, spec);
    const auto source = good_source(dir);

    SqlitePool pool{sqlite::Factory{target, sqlite::FactoryOptions{.wal = true}}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    auto h = runner.submit(sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 16}));
    ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();
    {
        auto lease = pool.acquire();
        EXPECT_EQ(fingerprint(lease->handle()), fingerprint(source));
    }
    EXPECT_EQ(RawDb::read_only(target).text("PRAGMA journal_mode"), "wal");
    EXPECT_EQ(integrity_check(target), "ok");
}

TEST(SqliteRestore, into_a_rollback_journal_target_adopts_the_source_page_size) {
    for (int page_size : {1024, 8192}) {
        SCOPED_TRACE("source page size " + std::to_string(page_size));
        TempDir dir;
        const auto target = dir / "target.db";
        create_demo_db(target, target_spec);
        ASSERT_EQ(RawDb::read_only(target).integer("PRAGMA page_size"), 4096);
        DemoSpec spec = source_spec;
        spec.page_size = page_size;
        const auto source = good_source(dir, "good.db", spec);

        SqlitePool pool{sqlite::Factory{target}, sqlite_pool_options(1)};
        SqliteRunner runner{pool};
        auto h = runner.submit(sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 16}));
        ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();
        const Progress end = h.progress();
        EXPECT_EQ(end.restarts, 0u) << "a page size change is not a restart";
        EXPECT_EQ(end.done, end.total);
        EXPECT_EQ(end.total, static_cast<std::uint64_t>(RawDb::read_only(source).integer("PRAGMA page_count")));
        {
            auto lease = pool.acquire();
            EXPECT_EQ(fingerprint(lease->handle()), fingerprint(source));
            // (Asked before any read, the connection that restored would still answer the old
            // page size: SQLite refreshes it when it next reads the database header.)
            EXPECT_EQ(lease->query_int("PRAGMA page_size"), page_size);
        }
        EXPECT_EQ(RawDb::read_only(target).integer("PRAGMA page_size"), page_size);
        EXPECT_EQ(fingerprint(target), fingerprint(source));
        EXPECT_EQ(integrity_check(target), "ok");
    }
}

TEST(SqliteRestore, progress_is_in_pages_and_ends_at_the_source_page_count) {
    TempDir dir;
    const auto target = dir / "target.db";
    create_demo_db(target, target_spec);
    const auto source = good_source(dir);
    const auto pages = static_cast<std::uint64_t>(RawDb::read_only(source).integer("PRAGMA page_count"));

    SqlitePool pool{sqlite::Factory{target}, sqlite_pool_options(1)};
    SqliteRunner runner{pool, every_report()};
    ProgressLog log;
    auto h = runner.submit(sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 16}), log.callback());
    ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();
    const auto all = log.all();
    ASSERT_GE(all.size(), 3u);
    std::uint64_t last_done = 0;
    for (const auto& p : all) {
        EXPECT_GE(p.done, last_done);
        last_done = p.done;
        EXPECT_EQ(p.kind, connpool::JobKind::restore);
        if (p.done > 0) {
            EXPECT_EQ(p.unit, "pages");
        }
    }
    const Progress& last = all.back();
    EXPECT_EQ(last.state, JobState::succeeded);
    EXPECT_EQ(last.name, "good.db");
    EXPECT_EQ(last.total, pages);
    EXPECT_EQ(last.done, pages);
    EXPECT_EQ(last.restarts, 0u);
}

// ---- bad sources: refused, target untouched --------------------------------------------------

TEST(SqliteRestore, from_a_missing_file_fails_and_leaves_the_target_unchanged) {
    expect_refused([](const TempDir& dir) { return dir / "missing.db"; }, "does not exist");
}

TEST(SqliteRestore, from_an_empty_file_fails_and_leaves_the_target_unchanged) {
    expect_refused(
        [](const TempDir& dir) {
            write_file(dir / "empty.db", "");
            return dir / "empty.db";
        },
        "empty");
}

TEST(SqliteRestore, from_a_non_sqlite_file_fails_and_leaves_the_target_unchanged) {
    expect_refused(
        [](const TempDir& dir) {
            std::string text;
            while (text.size() < 16384) text += "id,name,email\n1,alice,alice@example.com\n";
            write_file(dir / "export.csv", text);
            return dir / "export.csv";
        },
        "not a SQLite database");
}

TEST(SqliteRestore, from_a_directory_fails_and_leaves_the_target_unchanged) {
    expect_refused([](const TempDir& dir) { return dir.subdir("a-directory.db"); }, "not a regular file");
}

TEST(SqliteRestore, from_a_file_truncated_at_a_page_boundary_fails_and_leaves_the_target_unchanged) {
    expect_refused(
        [](const TempDir& dir) {
            const auto good = good_source(dir);
            make_backup(good, dir / "backup.db");
            const auto size = fs::file_size(dir / "backup.db");
            fs::copy_file(dir / "backup.db", dir / "truncated.db");
            fs::resize_file(dir / "truncated.db", (size / 4096 / 2) * 4096);
            return dir / "truncated.db";
        },
        "truncated");
}

TEST(SqliteRestore, from_a_file_truncated_mid_page_fails_and_leaves_the_target_unchanged) {
    expect_refused(
        [](const TempDir& dir) {
            const auto good = good_source(dir);
            fs::copy_file(good, dir / "truncated.db");
            fs::resize_file(dir / "truncated.db", fs::file_size(good) - 1000);
            return dir / "truncated.db";
        },
        "truncated");
}

TEST(SqliteRestore, from_a_file_cut_inside_the_header_fails_and_leaves_the_target_unchanged) {
    expect_refused(
        [](const TempDir& dir) {
            const auto good = good_source(dir);
            write_file(dir / "stub.db", file_bytes(good).substr(0, 60));
            return dir / "stub.db";
        },
        "truncated");
}

TEST(SqliteRestore, from_a_file_with_garbage_pages_fails_its_check_and_leaves_the_target_unchanged) {
    for (auto check : {sqlite::Check::integrity, sqlite::Check::quick}) {
        SCOPED_TRACE(check == sqlite::Check::integrity ? "integrity check" : "quick check");
        expect_refused(
            [](const TempDir& dir) {
                const auto good = good_source(dir);
                make_backup(good, dir / "backup.db");
                const auto corrupt = dir / "corrupt.db";
                fs::copy_file(dir / "backup.db", corrupt);
                const auto pages = fs::file_size(corrupt) / 4096;
                scribble_pages(corrupt, pages / 2, 4, 4096);
                // The header is intact, the size is right: only reading the pages tells.
                EXPECT_EQ(fs::file_size(corrupt), fs::file_size(dir / "backup.db"));
                EXPECT_NE(integrity_check(corrupt), "ok") << "the scribbled copy still passes integrity_check";
                return corrupt;
            },
            "", sqlite::RestoreOptions{.verify_source = check});
    }
}

TEST(SqliteRestore, from_the_target_database_itself_fails_and_leaves_it_unchanged) {
    expect_refused([](const TempDir& dir) { return dir / "target.db"; }, "target database itself");
}

TEST(SqliteRestore, blocked_by_a_reader_past_the_busy_limit_fails_and_leaves_the_target_unchanged) {
    // In rollback-journal mode the backup API takes an exclusive lock on the target at its first
    // step, so a reader holding a read transaction blocks the restore from the start.
    TempDir dir;
    const auto target = dir / "target.db";
    create_demo_db(target, target_spec);
    const auto source = good_source(dir);
    const std::string before = file_bytes(target);
    const Fingerprint before_fp = fingerprint(target);

    RawDb reader(target);
    reader.exec("BEGIN");
    ASSERT_EQ(reader.integer("SELECT count(*) FROM orders"), target_spec.orders); // holds a read lock from now on

    SqlitePool pool{sqlite::Factory{target, sqlite::FactoryOptions{.busy_timeout = 0ms}}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    auto h = runner.submit(
        sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 16, .busy_limit = 200ms}));
    ASSERT_EQ(wait_job(h), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr(target.string()));
    EXPECT_THAT(h.error(), HasSubstr(source.string()));
    EXPECT_THAT(h.error(), HasSubstr("busy"));
    EXPECT_GT(h.progress().retries, 0u);
    EXPECT_EQ(reader.integer("SELECT count(*) FROM orders"), target_spec.orders);
    reader.exec("COMMIT");

    EXPECT_TRUE(file_bytes(target) == before) << "the target file changed";
    EXPECT_EQ(fingerprint(target), before_fp);
    EXPECT_THAT(dir_entries(dir.path()), Not(Contains("target.db-journal")));
    expect_pool_consistent(pool.stats());

    // With the reader gone, the restore goes through.
    auto again = runner.submit(sqlite::restore_from(source));
    ASSERT_EQ(wait_job(again), JobState::succeeded) << again.error();
    EXPECT_EQ(fingerprint(target), fingerprint(source));
}

TEST(SqliteRestore, a_reader_of_a_wal_target_keeps_its_snapshot_until_it_ends_its_transaction) {
    TempDir dir;
    const auto target = dir / "target.db";
    DemoSpec spec = target_spec;
    spec.wal = true;
    create_demo_db(target, spec);
    const auto source = good_source(dir);

    RawDb reader(target);
    reader.exec("BEGIN");
    ASSERT_EQ(reader.integer("SELECT count(*) FROM orders"), target_spec.orders);

    SqlitePool pool{sqlite::Factory{target, sqlite::FactoryOptions{.wal = true}}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    auto h = runner.submit(sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 16}));
    ASSERT_EQ(wait_job(h), JobState::succeeded) << h.error();
    EXPECT_EQ(reader.integer("SELECT count(*) FROM orders"), target_spec.orders) << "the snapshot changed under the reader";
    reader.exec("COMMIT");
    EXPECT_EQ(reader.integer("SELECT count(*) FROM orders"), source_spec.orders);
    EXPECT_EQ(fingerprint(reader.handle()), fingerprint(source));
}

// ---- page sizes ------------------------------------------------------------------------------

TEST(SqliteRestore, into_a_wal_target_with_a_different_page_size_fails_and_leaves_it_unchanged) {
    TempDir dir;
    const auto target = dir / "target.db";
    DemoSpec spec = target_spec;
    spec.wal = true;
    create_demo_db(target, spec);
    {   // fold the WAL into the main file, so the main file alone holds the whole database
        RawDb db(target);
        db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    }
    DemoSpec big_pages = source_spec;
    big_pages.page_size = 8192;
    const auto source = good_source(dir, "big-pages.db", big_pages);
    const std::string before = file_bytes(target);
    const Fingerprint before_fp = fingerprint(target);

    SqlitePool pool{sqlite::Factory{target, sqlite::FactoryOptions{.wal = true}}, sqlite_pool_options(1)};
    SqliteRunner runner{pool};
    auto h = runner.submit(sqlite::restore_from(source));
    ASSERT_EQ(wait_job(h), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr(source.string()));
    EXPECT_THAT(h.error(), HasSubstr("page size"));
    EXPECT_TRUE(file_bytes(target) == before) << "the target file changed";
    {
        auto lease = pool.acquire();
        EXPECT_EQ(fingerprint(lease->handle()), before_fp);
        EXPECT_EQ(lease->query_int("PRAGMA page_size"), 4096);
    }
    EXPECT_EQ(pool.stats().discarded, 0u);
    expect_pool_consistent(pool.stats());
}

// ---- cancellation ----------------------------------------------------------------------------

namespace {

struct CancelCase {
    bool wal_target = false;
    int source_page_size = 0; // 0 = default
};

/// Cancels a restore half-way through. The target's cache is tiny, so by then SQLite has
/// spilled copied pages into the target file (or its WAL); the rollback must undo all of it.
void cancel_mid_way(const CancelCase& c) {
    TempDir dir;
    const auto target = dir / "target.db";
    DemoSpec tspec = target_spec;
    tspec.wal = c.wal_target;
    create_demo_db(target, tspec);
    if (c.wal_target) RawDb(target).exec("PRAGMA wal_checkpoint(TRUNCATE)");
    DemoSpec sspec = source_spec;
    sspec.page_size = c.source_page_size;
    const auto source = good_source(dir, "good.db", sspec);
    const std::string before = file_bytes(target);
    const Fingerprint before_fp = fingerprint(target);

    SqlitePool pool{sqlite::Factory{target, sqlite::FactoryOptions{.wal = c.wal_target, .init_sql = "PRAGMA cache_size=8"}},
                    sqlite_pool_options(1)};
    SqliteRunner runner{pool, every_report()};
    HandleSlot slot;
    std::atomic<bool> target_touched{false};
    std::atomic<bool> asked{false};
    auto h = runner.submit(sqlite::restore_from(source, sqlite::RestoreOptions{.pages_per_step = 8}),
                           [&](const Progress& p) {
                               if (p.state == JobState::running && p.total > 0 && p.done >= p.total / 2 &&
                                   !asked.exchange(true)) {
                                   // Written to already: the main file (rollback journal) or the WAL.
                                   const auto wal = fs::path(target.string() + "-wal");
                                   target_touched = file_bytes(target) != before ||
                                                    (fs::exists(wal) && fs::file_size(wal) > 0);
                                   slot.get().cancel();
                               }
                           });
    slot.set(h);
    ASSERT_EQ(wait_job(h), JobState::cancelled) << h.error();
    EXPECT_TRUE(target_touched.load()) << "SQLite had not written to the target yet: the case is too easy";
    EXPECT_TRUE(file_bytes(target) == before) << "the target file changed";
    EXPECT_THAT(dir_entries(dir.path()), Not(Contains("target.db-journal")));
    {
        auto lease = pool.acquire();
        EXPECT_EQ(fingerprint(lease->handle()), before_fp);
        EXPECT_NE(sqlite3_get_autocommit(lease->handle()), 0);
    }
    EXPECT_EQ(integrity_check(target), "ok");
    const auto s = pool.stats();
    EXPECT_EQ(s.discarded, 0u);
    expect_pool_consistent(s);

    // The same connection then restores the whole thing.
    auto again = runner.submit(sqlite::restore_from(source));
    ASSERT_EQ(wait_job(again), JobState::succeeded) << again.error();
    EXPECT_EQ(fingerprint(target), fingerprint(source));
}

} // namespace

TEST(SqliteRestore, cancel_mid_way_leaves_a_rollback_journal_target_byte_for_byte_unchanged) {
    cancel_mid_way({.wal_target = false, .source_page_size = 0});
}

TEST(SqliteRestore, cancel_mid_way_with_a_different_source_page_size_leaves_the_target_unchanged) {
    cancel_mid_way({.wal_target = false, .source_page_size = 1024});
}

TEST(SqliteRestore, cancel_mid_way_leaves_a_wal_target_unchanged) {
    cancel_mid_way({.wal_target = true, .source_page_size = 0});
}
