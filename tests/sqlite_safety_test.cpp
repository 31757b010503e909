// The data-safety cases of issue 8, one test (or a few) per problem found: what a restore
// reports around its commit, what copy-step errors say, targets that cannot roll back, sources
// that change under a restore, destinations that are SQLite's own companion files, stale temp
// files, misleading messages, and how progress counts pages. Disk-full and I/O errors are
// injected with a test VFS (sqlite_fault_vfs.hpp), the way SQLite's own tests do it.
#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "io_fixtures.hpp"
#include "sqlite_fault_vfs.hpp"
#include "sqlite_fixtures.hpp"
#include "sqlite_test_names.hpp"

using connpool::testing::FaultOp;
using connpool::testing::FaultPlan;
using connpool::testing::FaultVfs;

namespace {

const DemoSpec target_spec{.customers = 100, .orders = 1200, .payload_bytes = 150, .tag = "target"};
const DemoSpec source_spec{.customers = 250, .orders = 4000, .payload_bytes = 300, .tag = "source"};

/// A test directory with a source database (`source_`) and a restore target (`target_`).
class SqliteSafety : public ::testing::Test {
protected:
    void SetUp() override {
        create_demo_db(source_, source_spec);
        create_demo_db(target_, target_spec);
    }

    /// Runs `job` on a pool of one connection to `db`; returns the handle once it ended.
    connpool::JobHandle run(const fs::path& db, connpool::Job<sqlite::Connection> job,
                            sqlite::FactoryOptions factory_options = {}, connpool::ProgressCallback on_progress = {}) {
        pool_.emplace(sqlite::Factory{db, std::move(factory_options)}, sqlite_pool_options(1));
        runner_.emplace(*pool_, every_report());
        auto h = runner_->submit(std::move(job), std::move(on_progress));
        wait_job(h);
        return h;
    }

    /// Overwrites pages [first, first + count) (1-based) of `path` in place with garbage.
    static void scribble_in_place(const fs::path& path, std::size_t first, std::size_t count, std::size_t page_size) {
        std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
        const std::string garbage(page_size * count, '\xA5');
        f.seekp(static_cast<std::streamoff>((first - 1) * page_size));
        f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }

    void TearDown() override {
        runner_.reset();
        pool_.reset();
    }

    TempDir dir_;
    fs::path source_ = dir_ / "source.db";
    fs::path target_ = dir_ / "target.db";
    std::optional<SqlitePool> pool_;
    std::optional<SqliteRunner> runner_;
};

} // namespace

// ---- 1. a restore never reports failure after its commit, nor changes the journal mode -------

TEST_F(SqliteSafety, restore_of_a_wal_source_into_a_rollback_target_read_by_others_succeeds_and_keeps_rollback_mode) {
    // A WAL-mode source (as `sqlite3 app.db ".backup x.db"` of a WAL database makes).
    const auto wal_source = dir_ / "wal-source.db";
    create_demo_db(wal_source, {.customers = 100, .orders = 1500, .payload_bytes = 200, .wal = true, .tag = "wal"});
    ASSERT_EQ(format_versions(wal_source), std::make_pair(2, 2));
    const Fingerprint expected = fingerprint(wal_source);

    std::atomic<bool> stop{false};
    std::atomic<int> reads{0};
    std::thread reader([&] {
        RawDb db(target_);
        while (!stop.load()) {
            try {
                (void)db.integer("SELECT count(*) FROM sqlite_master");
                reads.fetch_add(1);
            } catch (const std::exception&) {
                // locked while the restore holds the target: keep trying
            }
        }
    });
    for (int round = 0; round < 12; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        auto h = run(target_, sqlite::restore_from(wal_source, sqlite::RestoreOptions{.pages_per_step = 64}));
        EXPECT_EQ(h.state(), JobState::succeeded) << h.error();
        EXPECT_EQ(format_versions(target_), std::make_pair(1, 1)) << "the restore switched the target to WAL";
        if (h.state() != JobState::succeeded) break;
    }
    stop = true;
    reader.join();
    EXPECT_GT(reads.load(), 0);
    EXPECT_EQ(fingerprint(target_), expected);
    EXPECT_EQ(RawDb::read_only(target_).text("PRAGMA journal_mode"), "delete");
}

// ---- 2. copy-step errors say what happened and which file -----------------------------------

TEST_F(SqliteSafety, a_full_disk_during_a_backup_says_so_names_the_file_and_keeps_the_source_connection) {
    const auto dest = dir_ / "backup.db";
    FaultVfs::Armed full(
        FaultPlan{.file_contains = ".tmp-", .op = FaultOp::write, .rc = SQLITE_FULL, .beyond_bytes = 64 * 1024});
    auto h = run(source_, sqlite::backup_to(dest, sqlite::BackupOptions{.pages_per_step = 8}));
    full.disarm();
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_GT(full.failures(), 0);
    EXPECT_THAT(h.error(), HasSubstr("database or disk is full"));
    EXPECT_THAT(h.error(), HasSubstr(dest.string()));
    EXPECT_THAT(h.error(), Not(HasSubstr("not an error")));
    EXPECT_EQ(pool_->stats().discarded, 0u) << "a full destination disk is no fault of the source connection";
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

TEST_F(SqliteSafety, an_io_error_writing_a_backup_says_disk_io_error_and_names_the_file) {
    const auto dest = dir_ / "backup.db";
    FaultVfs::Armed broken(
        FaultPlan{.file_contains = ".tmp-", .op = FaultOp::write, .rc = SQLITE_IOERR_WRITE, .beyond_bytes = 32 * 1024});
    auto h = run(source_, sqlite::backup_to(dest, sqlite::BackupOptions{.pages_per_step = 8}));
    broken.disarm();
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr("disk I/O error"));
    EXPECT_THAT(h.error(), HasSubstr(dest.string()));
    EXPECT_THAT(h.error(), Not(HasSubstr("not an error")));
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

// ---- 2 + 7. a full disk during a restore: a true message, the target rolled back at once ----

TEST_F(SqliteSafety, a_full_disk_during_a_restore_says_so_and_leaves_the_target_unchanged_without_a_hot_journal) {
    const std::string before = file_bytes(target_);
    FaultVfs::Armed full(FaultPlan{.file_contains = target_.string(),
                                   .suffix = true,
                                   .op = FaultOp::write,
                                   .rc = SQLITE_FULL,
                                   .beyond_bytes = before.size()});
    auto h = run(target_, sqlite::restore_from(source_, sqlite::RestoreOptions{.pages_per_step = 8}),
                 sqlite::FactoryOptions{.init_sql = "PRAGMA cache_size=8"});
    const int failures = full.failures();
    full.disarm();
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_GT(failures, 0);
    EXPECT_THAT(h.error(), HasSubstr("database or disk is full"));
    EXPECT_THAT(h.error(), HasSubstr(target_.string()));
    EXPECT_THAT(h.error(), Not(HasSubstr("not an error")));
    // Rolled back before the job ended: no hot journal waiting for the next open.
    EXPECT_FALSE(fs::exists(target_.string() + "-journal"));
    EXPECT_TRUE(file_bytes(target_) == before) << "the target was left changed (or grown)";
}

// ---- 3. targets that could not roll back a cancelled or crashed restore ----------------------

TEST_F(SqliteSafety, restore_into_a_target_with_journal_mode_off_or_memory_is_refused_and_leaves_it_unchanged) {
    for (const char* mode : {"OFF", "MEMORY"}) {
        SCOPED_TRACE(mode);
        const std::string before = file_bytes(target_);
        auto h = run(target_, sqlite::restore_from(source_),
                     sqlite::FactoryOptions{.init_sql = std::string("PRAGMA journal_mode=") + mode});
        ASSERT_EQ(h.state(), JobState::failed);
        EXPECT_THAT(h.error(), HasSubstr("journal_mode"));
        EXPECT_THAT(h.error(), HasSubstr(target_.string()));
        EXPECT_TRUE(file_bytes(target_) == before);
        EXPECT_EQ(pool_->stats().discarded, 0u);
    }
}

// ---- 4. a source that changes while it is restored -------------------------------------------

TEST_F(SqliteSafety, a_source_overwritten_during_the_restore_gives_a_verified_target_or_an_unchanged_one) {
    // Something other than SQLite (a copy tool, a disk error) rewrites the source's pages in place
    // after the restore has checked it and while it copies. The source is larger than SQLite's
    // page cache, so the copy cannot be served from pages the check left cached.
    const auto big = dir_ / "big.db";
    DemoSpec big_spec = source_spec;
    big_spec.orders = 14000;
    create_demo_db(big, big_spec);
    const Fingerprint original_source = fingerprint(big);
    const auto pages = static_cast<std::size_t>(RawDb::read_only(big).integer("PRAGMA page_count"));
    const std::string before = file_bytes(target_);
    const Fingerprint before_fp = fingerprint(target_);
    bool scribbled = false;
    auto h = run(target_, sqlite::restore_from(big, sqlite::RestoreOptions{.pages_per_step = 8}), {},
                 [&](const Progress& p) {
                     if (!scribbled && p.state == JobState::running && p.phase == "copying" && p.done > 0) {
                         scribble_in_place(big, 2, pages - 2, 4096);
                         scribbled = true;
                     }
                 });
    ASSERT_TRUE(scribbled);
    if (h.state() == JobState::succeeded) {
        EXPECT_EQ(integrity_check(target_), "ok");
        EXPECT_EQ(fingerprint(target_), original_source);
    } else {
        ASSERT_EQ(h.state(), JobState::failed);
        EXPECT_TRUE(file_bytes(target_) == before);
        EXPECT_EQ(fingerprint(target_), before_fp);
    }
}

TEST_F(SqliteSafety, a_source_truncated_during_the_restore_gives_a_verified_target_or_an_unchanged_one) {
    const Fingerprint original_source = fingerprint(source_);
    const std::string before = file_bytes(target_);
    bool truncated = false;
    auto h = run(target_, sqlite::restore_from(source_, sqlite::RestoreOptions{.pages_per_step = 8}), {},
                 [&](const Progress& p) {
                     if (!truncated && p.state == JobState::running && p.phase == "copying" && p.done > 0) {
                         fs::resize_file(source_, 20 * 4096);
                         truncated = true;
                     }
                 });
    ASSERT_TRUE(truncated);
    if (h.state() == JobState::succeeded) {
        EXPECT_EQ(integrity_check(target_), "ok");
        EXPECT_EQ(fingerprint(target_), original_source);
    } else {
        EXPECT_THAT(h.error(), Not(HasSubstr("not an error")));
        EXPECT_TRUE(file_bytes(target_) == before);
    }
}

// ---- 5. SQLite's companion files are never backup destinations ------------------------------

TEST_F(SqliteSafety, backup_to_the_sources_wal_shm_or_journal_file_is_refused_and_keeps_every_committed_row) {
    const auto wal_db = dir_ / "live.db";
    create_demo_db(wal_db, {.customers = 50, .orders = 300, .payload_bytes = 100, .wal = true, .tag = "live"});
    RawDb writer(wal_db);
    writer.exec("PRAGMA wal_autocheckpoint=0");
    writer.exec("INSERT INTO audit(what) VALUES ('committed in the wal')");
    ASSERT_TRUE(fs::exists(wal_db.string() + "-wal"));
    const std::string wal_before = file_bytes(wal_db.string() + "-wal");
    for (const char* suffix : {"-wal", "-shm", "-journal"}) {
        SCOPED_TRACE(suffix);
        const fs::path dest = wal_db.string() + suffix;
        auto h = run(wal_db, sqlite::backup_to(dest, sqlite::BackupOptions{.overwrite = true}),
                     sqlite::FactoryOptions{.wal = true});
        ASSERT_EQ(h.state(), JobState::failed);
        EXPECT_THAT(h.error(), HasSubstr(dest.string()));
        EXPECT_THAT(h.error(), HasSubstr(suffix));
        EXPECT_EQ(pool_->stats().discarded, 0u);
    }
    EXPECT_TRUE(file_bytes(wal_db.string() + "-wal") == wal_before) << "the live WAL was replaced";
    EXPECT_FALSE(fs::exists(wal_db.string() + "-journal"));
    EXPECT_EQ(writer.integer("SELECT count(*) FROM audit WHERE what = 'committed in the wal'"), 1);
}

TEST_F(SqliteSafety, overwriting_a_database_that_has_a_journal_or_wal_beside_it_is_refused) {
    for (const char* suffix : {"-journal", "-wal"}) {
        SCOPED_TRACE(suffix);
        const auto dest = dir_ / (std::string("old") + suffix + ".db");
        create_demo_db(dest, target_spec);
        write_file(dest.string() + suffix, std::string(4096, 'j'));
        const std::string before = file_bytes(dest);
        auto h = run(source_, sqlite::backup_to(dest, sqlite::BackupOptions{.overwrite = true}));
        ASSERT_EQ(h.state(), JobState::failed);
        EXPECT_THAT(h.error(), HasSubstr(dest.string() + suffix));
        EXPECT_TRUE(file_bytes(dest) == before);
    }
}

// ---- 6. stale temp files ---------------------------------------------------------------------

TEST_F(SqliteSafety, the_next_backup_removes_the_stale_temp_files_of_a_killed_one_and_no_others) {
    const auto dest = dir_ / "backup.db";
    write_file(dir_ / ".backup.db.tmp-AbC123", std::string(8192, 's'));
    write_file(dir_ / ".backup.db.tmp-AbC123-journal", std::string(512, 'j'));
    write_file(dir_ / ".other.db.tmp-XyZ789", std::string(8192, 'o'));
    auto h = run(source_, sqlite::backup_to(dest));
    ASSERT_EQ(h.state(), JobState::succeeded) << h.error();
    EXPECT_THAT(temp_files(dir_.path()), ::testing::ElementsAre(".other.db.tmp-XyZ789"))
        << "only the temp files of this destination are this backup's to clean";
}

TEST_F(SqliteSafety, remove_stale_temps_spares_a_temp_file_that_is_still_being_written) {
    const auto dest = dir_ / "backup.db";
    // A temp file held (flock) by a writer that is alive, e.g. in another process.
    const auto held = dir_ / ".backup.db.tmp-Held01";
    write_file(held, std::string(4096, 'h'));
    const int fd = ::open(held.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    write_file(dir_ / ".backup.db.tmp-Stale1", std::string(4096, 's'));

    EXPECT_EQ(sqlite::remove_stale_temps(dest), 1u);
    EXPECT_TRUE(fs::exists(held));
    EXPECT_FALSE(fs::exists(dir_ / ".backup.db.tmp-Stale1"));
    ::close(fd);

    // The temp file of a backup running in this process survives a cleanup made mid-copy.
    std::size_t removed_mid_copy = 99;
    std::vector<std::string> temps_mid_copy;
    auto h = run(source_, sqlite::backup_to(dir_ / "second.db", sqlite::BackupOptions{.pages_per_step = 8}), {},
                 [&](const Progress& p) {
                     if (removed_mid_copy == 99 && p.state == JobState::running && p.done > 0) {
                         removed_mid_copy = sqlite::remove_stale_temps(dir_ / "second.db");
                         temps_mid_copy = temp_files(dir_.path());
                     }
                 });
    ASSERT_EQ(h.state(), JobState::succeeded) << h.error();
    EXPECT_EQ(removed_mid_copy, 0u);
    EXPECT_THAT(temps_mid_copy, Contains(::testing::StartsWith(".second.db.tmp-")));
    EXPECT_EQ(integrity_check(dir_ / "second.db"), "ok");
}

// ---- 7. smaller: messages that say what is true ----------------------------------------------

TEST_F(SqliteSafety, a_restore_source_with_bytes_appended_is_not_called_truncated) {
    const auto odd = dir_ / "appended.db";
    fs::copy_file(source_, odd);
    std::ofstream(odd, std::ios::binary | std::ios::app) << std::string(100, 'x');
    const std::string before = file_bytes(target_);
    auto h = run(target_, sqlite::restore_from(odd));
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr(odd.string()));
    EXPECT_THAT(h.error(), Not(HasSubstr("is truncated")));
    EXPECT_THAT(h.error(), HasSubstr("100 bytes after"));
    EXPECT_TRUE(file_bytes(target_) == before);
}

TEST_F(SqliteSafety, a_destination_that_is_a_directory_says_so_without_an_overwrite_hint) {
    const auto dest = dir_.subdir("a-directory");
    auto h = run(source_, sqlite::backup_to(dest));
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr("is a directory"));
    EXPECT_THAT(h.error(), Not(HasSubstr("BackupOptions::overwrite")));
}

TEST_F(SqliteSafety, a_destination_under_a_regular_file_says_that_is_not_a_directory) {
    write_file(dir_ / "plain-file", "x");
    const auto dest = dir_ / "plain-file" / "backup.db";
    auto h = run(source_, sqlite::backup_to(dest));
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr("is not a directory"));
    EXPECT_THAT(h.error(), Not(HasSubstr("does not exist")));
}

TEST_F(SqliteSafety, the_busy_message_states_how_long_the_restore_actually_waited) {
    RawDb reader(target_);
    reader.exec("BEGIN");
    ASSERT_GT(reader.integer("SELECT count(*) FROM orders"), 0); // a read lock from now on
    // Timed from the start of the copy into the target (reading and checking the source come
    // first and take their own time, slower under sanitizers).
    std::chrono::steady_clock::time_point copying{};
    auto h = run(target_, sqlite::restore_from(source_, sqlite::RestoreOptions{.busy_limit = 200ms}),
                 sqlite::FactoryOptions{.busy_timeout = 1500ms}, [&](const Progress& p) {
                     if (p.phase == "copying" && copying == std::chrono::steady_clock::time_point{})
                         copying = std::chrono::steady_clock::now();
                 });
    const auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - copying);
    reader.exec("COMMIT");
    ASSERT_EQ(h.state(), JobState::failed);
    ASSERT_NE(copying, std::chrono::steady_clock::time_point{});
    std::smatch m;
    const std::string error = h.error();
    ASSERT_TRUE(std::regex_search(error, m, std::regex("busy or locked for ([0-9]+) ms"))) << error;
    const long stated = std::stol(m[1].str());
    EXPECT_GE(stated, 200);
    EXPECT_GE(stated + 400, waited.count())
        << "the message says " << stated << " ms after " << waited.count() << " ms: " << error;
}

TEST_F(SqliteSafety, a_restore_source_with_a_hot_journal_is_refused_saying_so) {
    // A copy of a database and its journal taken mid-transaction: what a crashed writer leaves.
    const auto crashed = dir_ / "crashed.db";
    {
        RawDb db(source_);
        db.exec("PRAGMA cache_size=10");
        db.exec("BEGIN");
        db.exec("UPDATE orders SET note = note || ' changed'");
        ASSERT_TRUE(fs::exists(source_.string() + "-journal"));
        fs::copy_file(source_, crashed);
        fs::copy_file(source_.string() + "-journal", crashed.string() + "-journal");
        db.exec("ROLLBACK");
    }
    const std::string before = file_bytes(target_);
    auto h = run(target_, sqlite::restore_from(crashed));
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr(crashed.string()));
    EXPECT_THAT(h.error(), HasSubstr("hot journal"));
    EXPECT_THAT(h.error(), Not(HasSubstr("readonly")));
    EXPECT_TRUE(file_bytes(target_) == before);
}

TEST_F(SqliteSafety, a_destination_with_a_name_of_250_characters_can_be_backed_up) {
    const auto dest = dir_ / (std::string(247, 'n') + ".db");
    ASSERT_EQ(dest.filename().string().size(), 250u);
    auto h = run(source_, sqlite::backup_to(dest));
    ASSERT_EQ(h.state(), JobState::succeeded) << h.error();
    EXPECT_EQ(integrity_check(dest), "ok");
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
}

// ---- 8. progress counts the database's pages -------------------------------------------------

TEST_F(SqliteSafety, a_restarted_backup_reports_the_databases_pages_as_total_and_restarts_apart) {
    const auto dest = dir_ / "backup.db";
    RawDb writer(source_);
    int written = 0;
    std::uint64_t last_done = 0;
    std::uint64_t max_total = 0;
    auto h =
        run(source_,
            sqlite::backup_to(dest, sqlite::BackupOptions{.pages_per_step = 8, .restarts_before_single_step = 100}), {},
            [&](const Progress& p) {
                max_total = std::max(max_total, p.total);
                if (p.state != JobState::running || p.done == last_done || p.done >= p.total) return;
                last_done = p.done;
                if (written < 3) {
                    writer.exec("INSERT INTO audit(what) VALUES ('marker')");
                    ++written;
                }
            });
    ASSERT_EQ(h.state(), JobState::succeeded) << h.error();
    const Progress end = h.progress();
    const auto pages = static_cast<std::uint64_t>(RawDb::read_only(dest).integer("PRAGMA page_count"));
    EXPECT_EQ(end.restarts, 3u);
    EXPECT_EQ(end.total, pages) << "re-copied pages inflated the total";
    EXPECT_EQ(end.done, pages);
    EXPECT_LE(max_total, pages + 8) << "the total counted re-copied pages mid-way";
}

TEST_F(SqliteSafety, restore_steps_grow_so_a_large_restore_takes_few_steps) {
    const auto pages = static_cast<std::uint64_t>(RawDb::read_only(source_).integer("PRAGMA page_count"));
    ProgressLog log;
    auto h =
        run(target_, sqlite::restore_from(source_, sqlite::RestoreOptions{.pages_per_step = 8}), {}, log.callback());
    ASSERT_EQ(h.state(), JobState::succeeded) << h.error();
    std::uint64_t last = 0;
    std::uint64_t steps = 0;
    for (const auto& p : log.all())
        if (p.phase == "copying" && p.done > last) {
            ++steps;
            last = p.done;
        }
    EXPECT_EQ(last, pages);
    EXPECT_LT(steps, pages / 8 / 4) << steps << " steps of " << pages << " pages: the step never grew";
}

// ---- 7. file systems without hard links or renameat2, a failed directory fsync, read-only media

TEST_F(SqliteSafety, overwrite_false_without_renameat2_or_hard_links_fails_before_copying_and_says_what_to_do) {
    const auto dest = dir_ / "backup.db";
    const connpool::io::ScopedSyscalls vfat_like(connpool::testing::without_renameat2_or_hard_links());
    ProgressLog log;
    auto h = run(source_, sqlite::backup_to(dest), {}, log.callback());
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr(dest.string()));
    EXPECT_THAT(h.error(), HasSubstr("neither renameat2(RENAME_NOREPLACE) nor hard links"));
    EXPECT_THAT(h.error(), HasSubstr("allow replacing"));
    for (const Progress& p : log.all()) EXPECT_EQ(p.done, 0u) << "it copied pages before finding it cannot publish";
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    EXPECT_EQ(pool_->stats().discarded, 0u);
    // With overwrite (plain rename, which every POSIX file system has) the same backup works.
    auto ok = run(source_, sqlite::backup_to(dest, sqlite::BackupOptions{.overwrite = true}));
    ASSERT_EQ(ok.state(), JobState::succeeded) << ok.error();
    EXPECT_EQ(fingerprint(dest), fingerprint(source_));
}

TEST_F(SqliteSafety, overwrite_false_without_renameat2_publishes_by_hard_link_and_never_clobbers) {
    const auto dest = dir_ / "backup.db";
    const connpool::io::ScopedSyscalls old_nfs_like(connpool::testing::without_renameat2());
    auto h = run(source_, sqlite::backup_to(dest));
    ASSERT_EQ(h.state(), JobState::succeeded) << h.error();
    EXPECT_EQ(fingerprint(dest), fingerprint(source_));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    const std::string before = file_bytes(dest);
    auto again = run(target_, sqlite::backup_to(dest));
    ASSERT_EQ(again.state(), JobState::failed);
    EXPECT_THAT(again.error(), HasSubstr("exists"));
    EXPECT_EQ(file_bytes(dest), before);
}

TEST_F(SqliteSafety, a_failed_directory_fsync_reports_the_backup_complete_in_place_but_not_yet_durable) {
    const auto dest = dir_ / "backup.db";
    const connpool::io::ScopedSyscalls failing(connpool::testing::with_failing_directory_fsync());
    auto h = run(source_, sqlite::backup_to(dest));
    ASSERT_EQ(h.state(), JobState::failed) << "the new name may not survive a power loss: not a success";
    EXPECT_THAT(h.error(), HasSubstr(dest.string()));
    EXPECT_THAT(h.error(), HasSubstr("complete and in place under its final name"));
    EXPECT_THAT(h.error(), HasSubstr("Input/output error"));
    EXPECT_THAT(h.error(), Not(HasSubstr("not an error")));
    // What is true: the file is the whole, verified backup; nothing was lost or left behind.
    EXPECT_EQ(integrity_check(dest), "ok");
    EXPECT_EQ(fingerprint(dest), fingerprint(source_));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    EXPECT_EQ(pool_->stats().discarded, 0u) << "a directory fsync is no reason to drop the source connection";
}

TEST_F(SqliteSafety, a_wal_source_on_read_only_media_is_refused_saying_why_and_immutable_source_reads_it) {
    // A WAL database, closed cleanly (no -wal or -shm left), then seen through a read-only mount:
    // SQLite cannot create the -shm it needs to read it.
    const auto media = dir_.subdir("media");
    create_demo_db(media / "wal.db", {.customers = 80, .orders = 900, .wal = true, .tag = "wal"});
    ASSERT_EQ(format_versions(media / "wal.db"), std::make_pair(2, 2));
    // Read read-write: the last connection to close removes -wal and -shm (a read-only one leaves them).
    const Fingerprint expected = fingerprint(RawDb(media / "wal.db").handle());
    ASSERT_FALSE(fs::exists(media / "wal.db-shm"));
    const connpool::testing::ReadOnlyBindMount read_only(media, dir_ / "ro");
    CONNPOOL_REQUIRE_READ_ONLY_MOUNT(read_only);
    const auto source = dir_ / "ro" / "wal.db";
    ASSERT_NE(::access(source.parent_path().c_str(), W_OK), 0) << "the mount is writable";
    const std::string before = file_bytes(target_);

    auto refused = run(target_, sqlite::restore_from(source));
    ASSERT_EQ(refused.state(), JobState::failed);
    EXPECT_THAT(refused.error(), HasSubstr(source.string()));
    EXPECT_THAT(refused.error(), HasSubstr("WAL mode"));
    EXPECT_THAT(refused.error(), HasSubstr("read-only"));
    EXPECT_THAT(refused.error(), HasSubstr("immutable_source"));
    EXPECT_THAT(refused.error(), Not(HasSubstr("not an error")));
    EXPECT_EQ(file_bytes(target_), before) << "a refused restore touched the target";
    EXPECT_EQ(pool_->stats().discarded, 0u);

    auto restored = run(target_, sqlite::restore_from(source, sqlite::RestoreOptions{.immutable_source = true}));
    ASSERT_EQ(restored.state(), JobState::succeeded) << restored.error();
    EXPECT_EQ(fingerprint(target_), expected);
    EXPECT_EQ(format_versions(target_), std::make_pair(1, 1)) << "the target keeps its rollback journal";
}

// ---- verification: what the default check (page checksums + quick_check) catches -------------

namespace {

/// A disk that stores the backup's page 40 with one byte flipped in the middle of a row's payload
/// and reports success: what quick_check alone does not see (it does not read payload bytes).
FaultPlan page_40_stored_corrupted() {
    return FaultPlan{.file_contains = ".tmp-",
                     .op = FaultOp::write,
                     .rc = SQLITE_IOERR_WRITE,
                     .times = 1,
                     .beyond_bytes = 39 * 4096,
                     .corrupt = true};
}

} // namespace

TEST_F(SqliteSafety, a_page_stored_corrupted_by_the_disk_fails_the_default_verification_and_leaves_no_file) {
    const auto dest = dir_ / "backup.db";
    FaultVfs::Armed corrupt(page_40_stored_corrupted());
    auto h = run(source_, sqlite::backup_to(dest));
    corrupt.disarm();
    ASSERT_EQ(corrupt.failures(), 1);
    ASSERT_EQ(h.state(), JobState::failed);
    EXPECT_THAT(h.error(), HasSubstr("page checksums"));
    EXPECT_THAT(h.error(), HasSubstr("page 40"));
    EXPECT_THAT(h.error(), HasSubstr(dest.string()));
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    EXPECT_EQ(pool_->stats().discarded, 0u);
}

TEST_F(SqliteSafety, quick_check_alone_passes_the_same_silently_corrupted_copy) {
    // Why the default adds checksums: the same corruption sails through Check::quick.
    const auto dest = dir_ / "backup.db";
    FaultVfs::Armed corrupt(page_40_stored_corrupted());
    auto h = run(source_, sqlite::backup_to(dest, sqlite::BackupOptions{.verify = sqlite::Check::quick}));
    corrupt.disarm();
    ASSERT_EQ(corrupt.failures(), 1);
    EXPECT_EQ(h.state(), JobState::succeeded) << h.error();
    EXPECT_NE(file_bytes(dest), file_bytes(source_));
}
