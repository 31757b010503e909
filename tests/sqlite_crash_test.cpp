// Crash consistency: a child process backs up a database that a thread of its own keeps writing,
// then restores another database into a target, and is SIGKILLed at a random moment. After each
// trial the backup is absent or a complete, consistent database; the restore target (once
// SQLite has rolled back any hot journal) is exactly its old or exactly its new content; and the
// next backup leaves no stray file. The child is this test binary re-executed (fork + exec), so
// it starts single-threaded whatever the parent or a sanitizer runtime is doing.
#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sanitizers.hpp"
#include "sqlite_fixtures.hpp"
#include "sqlite_test_names.hpp"


namespace {

constexpr const char* child_env = "CONNPOOL_SQLITE_CRASH_CHILD";

/// The child's work, in directory `dir`: write to source.db from a thread while backing it up
/// to backup.db, then restore new.db into target.db. Exits 0 when all of it finished.
[[noreturn]] void child_main(const fs::path& dir) {
    int code = 0;
    try {
        std::atomic<bool> stop{false};
        std::thread writer([&] {
            try {
                RawDb db(dir / "source.db");
                for (int i = 0; !stop.load(); ++i)
                    db.exec("BEGIN IMMEDIATE; INSERT INTO orders(customer_id, amount_cents, note, payload) VALUES "
                            "(1, " +
                            std::to_string(i) +
                            ", 'crash', randomblob(200));"
                            "UPDATE counters SET n = n + 1 WHERE name = 'orders'; COMMIT");
            } catch (const std::exception&) {
            }
        });
        {
            SqlitePool pool{sqlite::Factory{dir / "source.db", sqlite::FactoryOptions{.wal = true}},
                            sqlite_pool_options(1)};
            SqliteRunner runner{pool};
            auto h = runner.submit(
                sqlite::backup_to(dir / "backup.db", sqlite::BackupOptions{.pages_per_step = 32, .overwrite = true}));
            if (h.wait() != JobState::succeeded) code = 2;
        }
        stop = true;
        writer.join();
        {
            SqlitePool pool{
                sqlite::Factory{dir / "target.db", sqlite::FactoryOptions{.init_sql = "PRAGMA cache_size=16"}},
                sqlite_pool_options(1)};
            SqliteRunner runner{pool};
            auto h = runner.submit(sqlite::restore_from(dir / "new.db", sqlite::RestoreOptions{.pages_per_step = 16}));
            if (h.wait() != JobState::succeeded) code = code != 0 ? code : 3;
        }
    } catch (const std::exception&) {
        code = 4;
    }
    std::_Exit(code);
}

/// Runs the child's work when this process is a child (before main, so before GoogleTest).
const bool child_started = [] {
    if (const char* dir = std::getenv(child_env); dir != nullptr) child_main(dir);
    return false;
}();

using connpool::testing::sanitized;

class SqliteCrash : public ::testing::Test {
protected:
    void SetUp() override {
        create_demo_db(dir_ / "source.db",
                       {.customers = 100, .orders = 1500, .payload_bytes = 200, .wal = true, .tag = "source"});
        create_demo_db(dir_ / "old.db", {.customers = 80, .orders = 1200, .payload_bytes = 150, .tag = "old"});
        create_demo_db(dir_ / "new.db", {.customers = 120, .orders = 1800, .payload_bytes = 150, .tag = "new"});
        old_ = fingerprint(dir_ / "old.db");
        new_ = fingerprint(dir_ / "new.db");
    }

    /// Puts the restore target back to its old content, with no journal beside it.
    void reset_target() const {
        for (const char* suffix : {"", "-journal", "-wal", "-shm"})
            fs::remove(dir_ / ("target.db" + std::string(suffix)));
        fs::copy_file(dir_ / "old.db", dir_ / "target.db");
    }

    /// Starts the child; returns its pid.
    pid_t spawn() const {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::setenv(child_env, dir_.path().c_str(), 1);
            const char* argv[] = {"sqlite_crash_test", "--gtest_list_tests", nullptr};
            ::execv("/proc/self/exe", const_cast<char* const*>(argv));
            std::_Exit(127);
        }
        return pid;
    }

    /// Returns the child's exit status after waiting for it (a kill shows as a signal).
    static int reap(pid_t pid) {
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return status;
    }

    /// Checks what a trial left: the backup absent or whole and consistent, the target old or new.
    void check_trial(int trial) const {
        SCOPED_TRACE("trial " + std::to_string(trial));
        const fs::path backup = dir_ / "backup.db";
        if (fs::exists(backup)) {
            ASSERT_EQ(integrity_check(backup), "ok");
            RawDb copy = RawDb::read_only(backup);
            EXPECT_EQ(copy.integer("SELECT n FROM counters WHERE name = 'orders'"),
                      copy.integer("SELECT count(*) FROM orders"))
                << "the backup is not one transaction-consistent snapshot";
        }
        // Opening the target read-write lets SQLite roll back a hot journal left by the kill.
        const Fingerprint target = fingerprint(RawDb(dir_ / "target.db").handle());
        EXPECT_TRUE(target == old_ || target == new_)
            << "the target is neither its old nor its new content: " << target;
        EXPECT_EQ(integrity_check(dir_ / "target.db"), "ok");
    }

    TempDir dir_;
    Fingerprint old_;
    Fingerprint new_;
};

} // namespace

TEST_F(SqliteCrash, sigkill_at_random_moments_leaves_old_or_new_state_and_the_next_backup_leaves_no_stray_files) {
    // A first, uninterrupted run measures how long the child's work takes here (and proves it
    // can finish).
    reset_target();
    const auto started = std::chrono::steady_clock::now();
    ASSERT_EQ(reap(spawn()), 0) << "the child's backup and restore should succeed when not killed";
    const auto full = std::chrono::steady_clock::now() - started;
    check_trial(0);
    ASSERT_EQ(fingerprint(dir_ / "target.db"), new_);

    const int trials = sanitized ? 60 : 200;
    const auto budget = sanitized ? 40s : 30s; // bounded: a slow machine runs fewer trials
    std::mt19937_64 rng(std::random_device{}());
    std::uniform_int_distribution<std::int64_t> when(
        0, std::chrono::duration_cast<std::chrono::microseconds>(full).count());
    int killed = 0;
    int ran = 0;
    const auto deadline = std::chrono::steady_clock::now() + budget;
    for (int trial = 1; trial <= trials && (trial <= 30 || std::chrono::steady_clock::now() < deadline); ++trial) {
        reset_target();
        const pid_t pid = spawn();
        std::this_thread::sleep_for(std::chrono::microseconds(when(rng)));
        ::kill(pid, SIGKILL);
        const int status = reap(pid);
        if (WIFSIGNALED(status))
            ++killed;
        else
            EXPECT_EQ(WEXITSTATUS(status), 0) << "trial " << trial;
        check_trial(trial);
        if (::testing::Test::HasFailure()) break;
        ++ran;
        if (trial % 10 == 0) {
            // The next backup to the same destination sweeps what the killed ones left.
            SqlitePool pool{sqlite::Factory{dir_ / "source.db"}, sqlite_pool_options(1)};
            SqliteRunner runner{pool};
            auto h = runner.submit(sqlite::backup_to(dir_ / "backup.db", sqlite::BackupOptions{.overwrite = true}));
            ASSERT_EQ(h.wait(), JobState::succeeded) << h.error();
            std::vector<std::string> stray;
            for (const auto& name : temp_files(dir_.path()))
                if (name.rfind(".backup.db.tmp-", 0) == 0) stray.push_back(name);
            EXPECT_THAT(stray, IsEmpty()) << "after trial " << trial;
        }
    }
    EXPECT_GT(killed, ran / 4) << "too few trials were killed mid-way to mean anything";

    // A last backup and restore in this process leave nothing but the databases.
    {
        SqlitePool pool{sqlite::Factory{dir_ / "source.db"}, sqlite_pool_options(1)};
        SqliteRunner runner{pool};
        auto h = runner.submit(sqlite::backup_to(dir_ / "backup.db", sqlite::BackupOptions{.overwrite = true}));
        ASSERT_EQ(h.wait(), JobState::succeeded) << h.error();
    }
    {
        SqlitePool pool{sqlite::Factory{dir_ / "target.db"}, sqlite_pool_options(1)};
        SqliteRunner runner{pool};
        auto h = runner.submit(sqlite::restore_from(dir_ / "new.db"));
        ASSERT_EQ(h.wait(), JobState::succeeded) << h.error();
    }
    EXPECT_THAT(temp_files(dir_.path()), IsEmpty());
    RecordProperty("trials", ran);
    RecordProperty("killed", killed);
    std::printf("crash trials: %d, killed mid-way: %d\n", ran, killed);
}
