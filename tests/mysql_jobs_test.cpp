// The MySQL table jobs against a real MariaDB server (tests/support/mariadb_server.hpp):
// backup_table / restore_table round trips of every awkward type (all 256 byte values in a BLOB,
// utf8mb4 with emoji, tabs, newlines and backslashes, NULL vs '', DECIMAL(65,30), DATETIME(6)
// and TIMESTAMP(6) across time zones, JSON) and of a million rows, hostile table names, files
// refused whole with the table left as it was, cancels that kill the statement on the server in
// both directions, and more jobs than connections.

#include <connpool/jobs.hpp>
#include <connpool/mysql.hpp>
#include <connpool/mysql/table_backup.hpp>
#include <connpool/mysql/table_restore.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "file_tamper.hpp"
#include "mysql_fixtures.hpp"

namespace {

namespace fs = std::filesystem;
namespace my = connpool::mysql;
using namespace std::chrono_literals;
using connpool::JobState;
using connpool::testing::mysql_pool_options;
using connpool::testing::MysqlPool;
using connpool::testing::MysqlRunner;

std::string slurp_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

class MysqlTableJobs : public connpool::testing::MysqlTest {
protected:
    void SetUp() override {
        MysqlTest::SetUp();
        if (IsSkipped()) return;
        dir_ = fs::temp_directory_path() / ("connpool-myjobs-" + db_);
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        sql_.emplace(direct());
    }
    void TearDown() override {
        runner_.reset();
        pool_.reset();
        sql_.reset();
        if (!dir_.empty()) fs::remove_all(dir_);
        MysqlTest::TearDown();
    }

    /// A direct connection to the test database, for setting up and checking.
    my::Connection& sql() { return *sql_; }

    /// A runner over a pool of `size` connections (made once per test).
    MysqlRunner& runner(std::size_t size = 2) {
        if (!runner_) {
            pool_.emplace(factory(), mysql_pool_options(size));
            runner_.emplace(*pool_);
        }
        return *runner_;
    }

    /// Runs `job` through the runner and returns how it ended; its error goes to last_error_.
    JobState run(connpool::Job<my::Connection> job) {
        auto h = runner().submit(std::move(job));
        const JobState end = h.wait();
        last_error_ = h.error();
        last_done_ = h.progress().done;
        return end;
    }

    /// Returns every row of `table` (quoted) ordered by its first column, as text cells: the
    /// table's exact contents, bytes included.
    std::vector<std::vector<my::Cell>> contents(const std::string& quoted_table) {
        return sql().query("SELECT * FROM " + quoted_table + " ORDER BY 1").rows;
    }

    /// Returns a cheap fingerprint of a large table: row count and an order-independent sum of CRCs.
    std::string fingerprint(const std::string& quoted_table, const std::string& columns) {
        return sql().query_value("SELECT CONCAT(COUNT(*), ':', SUM(CRC32(CONCAT_WS('|', " + columns + ")))) FROM " +
                                 quoted_table)
            .value_or("NULL");
    }

    /// Waits until a statement starting with `prefix` runs on the server for the test user.
    bool wait_for_running(const std::string& prefix) {
        auto root = server().root();
        for (int i = 0; i < 500; ++i) {
            if (root.query_value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '" + db_ +
                                 "' AND INFO LIKE '" + prefix + "%' AND ID <> CONNECTION_ID()") != "0")
                return true;
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }

    fs::path dir_;
    std::optional<my::Connection> sql_;
    std::optional<MysqlPool> pool_;
    std::optional<MysqlRunner> runner_;
    std::string last_error_;
    std::uint64_t last_done_ = 0; // the last job's progress: bytes loaded (a restore) before it ended
};

TEST_F(MysqlTableJobs, every_type_round_trips_exactly) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB, s TEXT, v VARCHAR(50), d DECIMAL(65,30), "
               "dt DATETIME(6), ts TIMESTAMP(6) NULL, j JSON, u BIGINT UNSIGNED, e ENUM('x','y z'), "
               "vb VARBINARY(16), g INT AS (id * 2) VIRTUAL) ENGINE=InnoDB");
    std::string all_bytes;
    for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
    // Rows written in a time zone that is neither UTC nor the restore's, so a TIMESTAMP that
    // went through local time would come back shifted.
    sql().exec("SET time_zone = '+05:30'");
    sql().exec("INSERT INTO t (id, b, s, v, d, dt, ts, j, u, e, vb) VALUES "
               "(1, " + sql().quote_string(all_bytes) + ", " +
               sql().quote_string("tab\there\nnew line\r\n back\\slash \\N \xF0\x9F\x98\x80 emoji, \xE2\x80\x8B zero-width, "
                                  "caf\xC3\xA9") +
               ", '', 12345678901234567890123456789012345.123456789012345678901234567890, "
               "'2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.999999', "
               "'{\"a\": [1, 2.5, \"x\\\\ty\"], \"b\": null, \"c\": \"\\\\u00e9\", \"d\": \"\xF0\x9F\x98\x80\"}', 18446744073709551615, 'y z', "
               "X'00FF0A090D5C4E'), "
               "(2, '', '', NULL, -0.000000000000000000000000000001, '1000-01-01 00:00:00.000000', "
               "'1970-01-01 05:30:01.000001', 'null', 0, 'x', ''), "
               "(3, NULL, NULL, 'NULL', NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
               "(4, " + sql().quote_string(std::string(70000, '\t') + all_bytes + std::string(3, '\0')) +
               ", '\\\\N', '\\\\', 0, '9999-12-31 23:59:59.999999', NULL, '[]', 1, NULL, X'5C')");
    const auto before = contents("t");
    ASSERT_EQ(before.size(), 4u);
    for (const auto compression : {my::Compression::zstd, my::Compression::none}) {
        SCOPED_TRACE(compression == my::Compression::zstd ? "zstd" : "none");
        const fs::path file = dir_ / (compression == my::Compression::zstd ? "t.zst" : "t.raw");
        my::TableBackupOptions options;
        options.compression = compression;
        ASSERT_EQ(run(my::backup_table(factory(), {"t"}, file, options)), JobState::succeeded) << last_error_;
        struct stat st {};
        ASSERT_EQ(::stat(file.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u);
        EXPECT_EQ(slurp_file(file).rfind("connpool-mysql-table 1\n{", 0), 0u);

        sql().exec("DELETE FROM t WHERE id IN (1, 3); UPDATE t SET s = 'changed' WHERE id = 2; "
                   "INSERT INTO t (id) VALUES (99)");
        ASSERT_EQ(run(my::restore_table(factory(), {"t"}, file)), JobState::succeeded) << last_error_;
        EXPECT_EQ(contents("t"), before);

        // Into another table with the same columns, read in yet another time zone.
        sql().exec("DROP TABLE IF EXISTS copy; CREATE TABLE copy LIKE t");
        ASSERT_EQ(run(my::restore_table(factory(), {"copy"}, file)), JobState::succeeded) << last_error_;
        EXPECT_EQ(contents("copy"), before);
    }
    // The session that wrote in +05:30 reads the same instants back in +05:30.
    EXPECT_EQ(sql().query_value("SELECT ts FROM t WHERE id = 2"), "1970-01-01 05:30:01.000001");
    EXPECT_EQ(sql().query_value("SELECT d FROM t WHERE id = 1"),
              "12345678901234567890123456789012345.123456789012345678901234567890");
    EXPECT_EQ(sql().query_value("SELECT b FROM t WHERE id = 1"), all_bytes);
}

TEST_F(MysqlTableJobs, a_million_rows_round_trip) {
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, a INT NOT NULL, s VARCHAR(40), KEY (a)) ENGINE=InnoDB");
    const auto t0 = std::chrono::steady_clock::now();
    sql().exec("INSERT INTO big SELECT seq, seq * 7 % 1000003, IF(seq % 10 = 0, NULL, CONCAT('row\\t', seq)) "
               "FROM seq_1_to_1000000");
    const auto t1 = std::chrono::steady_clock::now();
    const std::string before = fingerprint("big", "id, a, IFNULL(s, '<null>')");
    ASSERT_EQ(run(my::backup_table(factory(), {"big"}, dir_ / "big")), JobState::succeeded) << last_error_;
    const auto t2 = std::chrono::steady_clock::now();
    sql().exec("DELETE FROM big WHERE id % 3 = 0");
    const auto t3 = std::chrono::steady_clock::now();
    ASSERT_EQ(run(my::restore_table(factory(), {"big"}, dir_ / "big")), JobState::succeeded) << last_error_;
    const auto t4 = std::chrono::steady_clock::now();
    EXPECT_EQ(fingerprint("big", "id, a, IFNULL(s, '<null>')"), before);
    auto ms = [](auto d) { return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
    std::printf("1M rows: insert %lld ms, backup %lld ms (%lld bytes on disk), restore %lld ms\n", ms(t1 - t0),
                ms(t2 - t1), static_cast<long long>(fs::file_size(dir_ / "big")), ms(t4 - t3));
}

TEST_F(MysqlTableJobs, hostile_table_names_round_trip) {
    // (MariaDB's identifiers are utf8mb3: no emoji in a table name.)
    for (const std::string name : {"we`ird", "it's", "a b", "x;DROP TABLE y", "db.dot", "\"dq\"", "\\back",
                                   "caf\xC3\xA9 \xE2\x9C\x93"}) {
        SCOPED_TRACE(name);
        const std::string q = my::quote_identifier(name);
        sql().exec("CREATE TABLE " + q + " (id INT PRIMARY KEY, `c``ol` TEXT) ENGINE=InnoDB");
        sql().exec("INSERT INTO " + q + " VALUES (1, 'one'), (2, NULL)");
        const fs::path file = dir_ / ("t" + std::to_string(std::hash<std::string>{}(name)));
        ASSERT_EQ(run(my::backup_table(factory(), {name}, file)), JobState::succeeded) << last_error_;
        sql().exec("DELETE FROM " + q);
        ASSERT_EQ(run(my::restore_table(factory(), {name}, file)), JobState::succeeded) << last_error_;
        EXPECT_EQ(sql().query_value("SELECT COUNT(*) FROM " + q), "2");
        EXPECT_EQ(sql().query_value("SELECT `c``ol` FROM " + q + " WHERE id = 1"), "one");
    }
    EXPECT_EQ(sql().query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '" + db_ + "'"), "8");
}

TEST_F(MysqlTableJobs, damaged_truncated_empty_foreign_and_wrong_table_files_are_refused_and_the_table_is_unchanged) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB; "
               "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_3000");
    my::TableBackupOptions raw;
    raw.compression = my::Compression::none; // a flipped byte in raw data still parses: only the checksum sees it
    ASSERT_EQ(run(my::backup_table(factory(), {"t"}, dir_ / "good", raw)), JobState::succeeded) << last_error_;
    sql().exec("DELETE FROM t WHERE id > 10; UPDATE t SET v = 'kept' WHERE id = 1");
    const auto before = contents("t");
    const std::string good = slurp_file(dir_ / "good");
    std::string flipped = good;
    flipped[good.size() / 2] ^= 0x01;
    sql().exec("CREATE TABLE other (id INT PRIMARY KEY, v TEXT, w INT) ENGINE=InnoDB; INSERT INTO other VALUES (1, 'o', 1)");
    ASSERT_EQ(run(my::backup_table(factory(), {"other"}, dir_ / "other")), JobState::succeeded) << last_error_;
    struct Case {
        const char* file;
        std::string bytes; // "" with keep: the file as it is
        const char* says;
    };
    const Case cases[] = {
        {"flipped", flipped, "does not match its checksum"},
        {"truncated", good.substr(0, good.size() - 100), "no valid trailer"},
        {"empty", "", "the file is empty"},
        {"foreign", "PGDMP\x01\x0e", "not a connpool table backup"},
        {"pg", "connpool-pg-table 1\n{}\n", "it is a 'connpool-pg-table' file, not a 'connpool-mysql-table' one"},
        {"other", slurp_file(dir_ / "other"), "differ from the backup's"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.file);
        write_bytes(dir_ / c.file, c.bytes);
        EXPECT_EQ(run(my::restore_table(factory(), {"t"}, dir_ / c.file)), JobState::failed);
        EXPECT_NE(last_error_.find(c.says), std::string::npos) << last_error_;
        EXPECT_NE(last_error_.find((dir_ / c.file).string()), std::string::npos) << last_error_;
        EXPECT_EQ(contents("t"), before);
    }
    EXPECT_EQ(run(my::restore_table(factory(), {"t"}, dir_ / "missing")), JobState::failed);
    EXPECT_NE(last_error_.find("missing"), std::string::npos) << last_error_;
    // A table that is not InnoDB is refused before it is touched: it could not be rolled back.
    sql().exec("CREATE TABLE myisam (id INT PRIMARY KEY, v TEXT) ENGINE=MyISAM; INSERT INTO myisam VALUES (7, 'x')");
    EXPECT_EQ(run(my::restore_table(factory(), {"myisam"}, dir_ / "good")), JobState::failed);
    EXPECT_NE(last_error_.find("MyISAM"), std::string::npos) << last_error_;
    EXPECT_EQ(sql().query_value("SELECT COUNT(*) FROM myisam"), "1");
    // An existing destination is not replaced unless the options say so.
    EXPECT_EQ(run(my::backup_table(factory(), {"t"}, dir_ / "good")), JobState::failed);
    EXPECT_NE(last_error_.find("exists"), std::string::npos) << last_error_;
    EXPECT_EQ(slurp_file(dir_ / "good"), good);
    EXPECT_EQ(pool_->stats().discarded, 0u) << "a refused file is no reason to drop a connection";
}

TEST_F(MysqlTableJobs, a_file_checked_by_its_caller_skips_the_check_pass_yet_a_change_behind_its_identity_rolls_back) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB; "
               "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_3000");
    const fs::path file = dir_ / "checked";
    my::TableBackupOptions raw;
    raw.compression = my::Compression::none;
    ASSERT_EQ(run(my::backup_table(factory(), {"t"}, file, raw)), JobState::succeeded) << last_error_;
    const auto full = contents("t");
    sql().exec("DELETE FROM t WHERE id > 10; UPDATE t SET v = 'kept' WHERE id = 1");
    const auto before = contents("t");

    // As restore_database does after its manifest check: the identity the file had then.
    my::TableRestoreOptions checked;
    checked.checked = connpool::io::file_identity(file);
    ASSERT_TRUE(checked.checked);
    // A byte of a value flipped in place ('v' to 'w') with the modification time put back: same
    // device, inode, size and mtime, so the check pass is skipped and the rows load; the load's
    // own checksum then differs and the restore rolls back.
    const std::string good = slurp_file(file);
    const std::size_t at = good.find("v1500\n");
    ASSERT_NE(at, std::string::npos);
    ASSERT_NO_FATAL_FAILURE(connpool::testing::flip_byte(file, at));
    ASSERT_EQ(connpool::io::file_identity(file), checked.checked) << "the test needs the identity unchanged";
    EXPECT_EQ(run(my::restore_table(factory(), {"t"}, file, checked)), JobState::failed);
    EXPECT_NE(last_error_.find("checksum"), std::string::npos) << last_error_;
    EXPECT_GT(last_done_, 0u) << "the rows were loaded: the check pass was skipped";
    EXPECT_EQ(contents("t"), before);

    // The same file without the caller's check: refused by the check pass, before the transaction.
    EXPECT_EQ(run(my::restore_table(factory(), {"t"}, file)), JobState::failed);
    EXPECT_NE(last_error_.find("checksum"), std::string::npos) << last_error_;
    EXPECT_EQ(last_done_, 0u) << "refused before a row was sent";
    EXPECT_EQ(contents("t"), before);

    // Put right (a new mtime): the identity no longer matches, so the file is checked whole first
    // again, and then restored.
    write_bytes(file, good);
    ASSERT_NE(connpool::io::file_identity(file), checked.checked);
    EXPECT_EQ(run(my::restore_table(factory(), {"t"}, file, checked)), JobState::succeeded) << last_error_;
    EXPECT_EQ(contents("t"), full);
    EXPECT_EQ(pool_->stats().discarded, 0u);
}

TEST_F(MysqlTableJobs, a_cancel_kills_a_waiting_backup_on_the_server_and_leaves_no_file) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO t VALUES (1), (2)");
    // Another session holds the table's write lock, so the backup's SELECT waits (up to a minute).
    sql().exec("LOCK TABLES t WRITE");
    my::TableBackupOptions options;
    options.lock_timeout = 60s;
    auto h = runner(1).submit(my::backup_table(factory(), {"t"}, dir_ / "t", options));
    ASSERT_TRUE(wait_for_running("SELECT `id` FROM `t`"));
    const auto asked = std::chrono::steady_clock::now();
    h.cancel();
    ASSERT_TRUE(h.wait_for(10s)) << "the cancel did not stop the SELECT";
    const auto took = std::chrono::steady_clock::now() - asked;
    EXPECT_EQ(h.wait(), JobState::cancelled) << h.error();
    sql().exec("UNLOCK TABLES");
    EXPECT_FALSE(fs::exists(dir_ / "t"));
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0) << "a temp file was left";
    EXPECT_EQ(pool_->stats().discarded, 0u);
    auto lease = pool_->acquire();
    EXPECT_FALSE(lease->in_transaction());
    EXPECT_EQ(lease->query_value("SELECT COUNT(*) FROM t"), "2");
    std::printf("backup cancel: the job ended %lld ms after the cancel\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

TEST_F(MysqlTableJobs, a_table_locked_by_another_session_fails_both_jobs_in_lock_timeout_saying_so) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO t VALUES (1), (2)");
    ASSERT_EQ(run(my::backup_table(factory(), {"t"}, dir_ / "t")), JobState::succeeded) << last_error_;
    my::Connection holder = direct();
    holder.exec("LOCK TABLES t WRITE");
    // The default lock_timeout is 1 s: both jobs give up then, naming the lock and the option.
    EXPECT_EQ(run(my::backup_table(factory(), {"t"}, dir_ / "t2")), JobState::failed);
    EXPECT_NE(last_error_.find("another session holds a lock"), std::string::npos) << last_error_;
    EXPECT_NE(last_error_.find("TableBackupOptions::lock_timeout = 1 s"), std::string::npos) << last_error_;
    EXPECT_FALSE(fs::exists(dir_ / "t2"));
    EXPECT_EQ(run(my::restore_table(factory(), {"t"}, dir_ / "t")), JobState::failed);
    EXPECT_NE(last_error_.find("another session holds a lock"), std::string::npos) << last_error_;
    EXPECT_NE(last_error_.find("TableRestoreOptions::lock_timeout = 1 s"), std::string::npos) << last_error_;
    holder.exec("INSERT INTO t VALUES (3); UNLOCK TABLES");
    EXPECT_EQ(sql().query_value("SELECT COUNT(*) FROM t"), "3") << "the holder's rows stay";
}

TEST_F(MysqlTableJobs, a_cancel_kills_a_running_restore_and_the_table_is_unchanged) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB; "
               "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_3000");
    ASSERT_EQ(run(my::backup_table(factory(), {"t"}, dir_ / "t")), JobState::succeeded) << last_error_;
    sql().exec("DELETE FROM t WHERE id > 10");
    const auto before = contents("t");
    // A trigger that takes 20 ms a row makes the load last a minute unless it is cancelled.
    sql().exec("CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW SET @slept = SLEEP(0.02)");
    auto h = runner(1).submit(my::restore_table(factory(), {"t"}, dir_ / "t"));
    // Inside the trigger the process list shows the trigger's statement, not the LOAD DATA.
    ASSERT_TRUE(wait_for_running("SET @slept"));
    const auto asked = std::chrono::steady_clock::now();
    h.cancel();
    ASSERT_TRUE(h.wait_for(10s)) << "the cancel did not stop the LOAD DATA";
    const auto took = std::chrono::steady_clock::now() - asked;
    EXPECT_EQ(h.wait(), JobState::cancelled) << h.error();
    std::printf("restore cancel: the job ended %lld ms after the cancel\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
    EXPECT_EQ(contents("t"), before);
    EXPECT_EQ(pool_->stats().discarded, 0u);
    auto lease = pool_->acquire();
    EXPECT_FALSE(lease->in_transaction());
    EXPECT_EQ(lease->query_value("SELECT @@session.foreign_key_checks"), "1");
}

TEST_F(MysqlTableJobs, more_table_jobs_than_connections_all_run_through_the_pool) {
    constexpr int tables = 6;
    for (int i = 0; i < tables; ++i)
        sql().exec("CREATE TABLE t" + std::to_string(i) + " (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB; INSERT INTO t" +
                   std::to_string(i) + " SELECT seq, REPEAT('x', seq % 50) FROM seq_1_to_" + std::to_string(2000 + i));
    auto& r = runner(2);
    std::vector<connpool::JobHandle> handles;
    for (int i = 0; i < tables; ++i)
        handles.push_back(r.submit(my::backup_table(factory(), {"t" + std::to_string(i)}, dir_ / std::to_string(i))));
    for (auto& h : handles) EXPECT_EQ(h.wait(), JobState::succeeded) << h.error();
    for (int i = 0; i < tables; ++i) sql().exec("DELETE FROM t" + std::to_string(i));
    handles.clear();
    for (int i = 0; i < tables; ++i)
        handles.push_back(r.submit(my::restore_table(factory(), {"t" + std::to_string(i)}, dir_ / std::to_string(i))));
    for (auto& h : handles) EXPECT_EQ(h.wait(), JobState::succeeded) << h.error();
    for (int i = 0; i < tables; ++i)
        EXPECT_EQ(sql().query_value("SELECT COUNT(*) FROM t" + std::to_string(i)), std::to_string(2000 + i));
    EXPECT_LE(pool_->stats().created, 2u);
    const auto progress = handles.front().progress();
    EXPECT_EQ(progress.unit, "bytes");
    EXPECT_EQ(progress.done, progress.total);
}

} // namespace
