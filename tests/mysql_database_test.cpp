// The MySQL whole-database jobs against a real MariaDB server (tests/support/mariadb_server.hpp):
// backup_database / restore_database round trips of tables with hostile names, an empty table, a
// MyISAM table, a view, a trigger, a procedure and a function into an empty database; one
// snapshot across tables under a concurrent writer; sets refused whole (a changed file, a target
// that has the tables, a pool too small); a table locked by another session failing the backup
// at once; cancel; and a progress total that is right from the start.

#include <connpool/jobs.hpp>
#include <connpool/mysql.hpp>
#include <connpool/mysql/database.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "file_tamper.hpp"
#include "mysql_fixtures.hpp"

namespace {

namespace fs = std::filesystem;
namespace my = connpool::mysql;
using namespace std::chrono_literals;
using connpool::JobState;
using connpool::testing::MariadbServer;
using connpool::testing::mysql_pool_options;
using connpool::testing::MysqlPool;
using connpool::testing::MysqlRunner;

/// The crash test's child: when this variable names "port database set-dir", the process runs
/// one restore_database of the set into the database (the password in MYSQL_PWD) and exits;
/// the test SIGKILLs it in the middle.
constexpr const char* crash_child_env = "CONNPOOL_MYSQL_RESTORE_CHILD";

[[noreturn]] void crash_child_main(const char* spec) {
    int code = 0;
    try {
        unsigned port = 0;
        char database[128] = {}, set[4096] = {};
        if (std::sscanf(spec, "%u %127s %4095s", &port, database, set) != 3) std::_Exit(5);
        const char* password = std::getenv("MYSQL_PWD");
        MysqlPool pool(my::Factory(my::ConnectOptions{"127.0.0.1", port, MariadbServer::user, password ? password : "",
                                                      database, ""}),
                       mysql_pool_options(2));
        MysqlRunner runner(pool);
        auto restore = my::restore_database(runner, set);
        if (restore.wait() != JobState::succeeded) code = 2;
    } catch (const std::exception&) {
        code = 4;
    }
    std::_Exit(code);
}

/// Runs the child's work when this process is a child (before main, so before GoogleTest).
const bool crash_child_started = [] {
    if (const char* spec = std::getenv(crash_child_env); spec != nullptr) crash_child_main(spec);
    return false;
}();

/// A source database (the fixture's) with a runner on it, and an empty target database with its
/// own runner to restore into.
class MysqlDatabaseJobs : public connpool::testing::MysqlTest {
protected:
    void SetUp() override {
        MysqlTest::SetUp();
        if (IsSkipped()) return;
        dir_ = fs::temp_directory_path() / ("connpool-mydb-" + db_);
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        sql_.emplace(direct());
    }
    void TearDown() override {
        target_runner_.reset();
        target_pool_.reset();
        runner_.reset();
        pool_.reset();
        sql_.reset();
        if (!target_.empty()) {
            try {
                server().root().exec("DROP DATABASE IF EXISTS " + target_);
            } catch (const std::exception&) {
            }
        }
        if (!dir_.empty()) fs::remove_all(dir_);
        MysqlTest::TearDown();
    }

    my::Connection& sql() { return *sql_; }

    /// A runner over a pool of `size` connections to the source database (made once per test).
    MysqlRunner& runner(std::size_t size = 3) {
        if (!runner_) {
            pool_.emplace(factory(), mysql_pool_options(size));
            runner_.emplace(*pool_);
        }
        return *runner_;
    }

    /// Creates the empty target database and a runner with a pool of `size` on it.
    MysqlRunner& target(std::size_t size = 3) {
        target_ = db_ + "_r";
        server().root().exec("CREATE DATABASE " + target_ + " CHARACTER SET utf8mb4");
        target_pool_.emplace(my::Factory(server().tcp(target_)), mysql_pool_options(size));
        target_runner_.emplace(*target_pool_);
        return *target_runner_;
    }

    [[nodiscard]] my::Connection target_sql() const { return my::Factory(server().tcp(target_)).create(); }

    /// Starts a child that restores dir_/set into the target (crash_child_main); returns its pid.
    [[nodiscard]] pid_t spawn_restore_child() const {
        return connpool::testing::spawn_self(
            {std::string(crash_child_env) + "=" + std::to_string(server().tcp().port) + " " + target_ + " " +
                 (dir_ / "set").string(),
             std::string("MYSQL_PWD=") + MariadbServer::password});
    }

    /// Returns the exact contents of `quoted_table` on `c`: every row, ordered, as text.
    static std::string contents(my::Connection& c, const std::string& quoted_table) {
        std::string out;
        for (const auto& row : c.query("SELECT * FROM " + quoted_table + " ORDER BY 1").rows) {
            for (const auto& cell : row) out += (cell ? "'" + *cell + "'" : std::string("NULL")) + ",";
            out += "\n";
        }
        return out;
    }

    /// Returns a short digest of contents(): its size and hash, so a mismatch prints two lines.
    static std::string digest(my::Connection& c, const std::string& quoted_table) {
        const std::string all = contents(c, quoted_table);
        return std::to_string(std::count(all.begin(), all.end(), '\n')) + " rows, hash " +
               std::to_string(std::hash<std::string>{}(all));
    }

    fs::path dir_;
    std::string target_;
    std::optional<my::Connection> sql_;
    std::optional<MysqlPool> pool_, target_pool_;
    std::optional<MysqlRunner> runner_, target_runner_;
};

TEST_F(MysqlDatabaseJobs, a_database_restored_into_an_empty_one_has_the_same_tables_views_triggers_and_routines) {
    const std::vector<std::string> tables{"`we``ird`", "`it's; a table`", "`sp ace`", "`empty`", "`kept in myisam`",
                                          "`audit`"};
    sql().exec("CREATE TABLE `we``ird` (id INT PRIMARY KEY, b BLOB, s VARCHAR(40) CHARACTER SET utf8mb4) ENGINE=InnoDB");
    sql().exec("CREATE TABLE `it's; a table` (id INT PRIMARY KEY AUTO_INCREMENT, parent INT, d DECIMAL(20,6), "
               "FOREIGN KEY (parent) REFERENCES `we``ird` (id)) ENGINE=InnoDB");
    sql().exec("CREATE TABLE `sp ace` (id INT PRIMARY KEY, j JSON, t DATETIME(6)) ENGINE=InnoDB");
    sql().exec("CREATE TABLE `empty` (a INT) ENGINE=InnoDB");
    sql().exec("CREATE TABLE `kept in myisam` (id INT PRIMARY KEY, v TEXT) ENGINE=MyISAM");
    sql().exec("CREATE TABLE `audit` (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(20)) ENGINE=InnoDB");
    std::string values, children;
    for (int i = 1; i <= 300; ++i) {
        values += std::string(i > 1 ? "," : "") + "(" + std::to_string(i) + ", UNHEX(REPEAT('00FF7F', " +
                  std::to_string(i % 7) + ")), " + (i % 5 == 0 ? "NULL" : i % 5 == 1 ? "''" : "'caf\xC3\xA9 \xF0\x9F\x98\x80'") + ")";
        children += std::string(i > 1 ? "," : "") + "(" + std::to_string(1 + i % 300) + ", " + std::to_string(i) + ".125)";
    }
    sql().exec("INSERT INTO `we``ird` VALUES " + values);
    sql().exec("INSERT INTO `it's; a table` (parent, d) VALUES " + children);
    sql().exec("INSERT INTO `sp ace` VALUES (1, '{\"a\": [1, 2]}', '2026-12-03 10:11:12.123456'), (2, NULL, NULL)");
    sql().exec("INSERT INTO `kept in myisam` VALUES (1, 'one'), (2, 'two')");
    sql().exec("CREATE VIEW `named view` AS SELECT w.id, w.s FROM `we``ird` w JOIN `it's; a table` c ON c.parent = w.id");
    sql().exec("CREATE VIEW `view of a view` AS SELECT COUNT(*) AS n FROM `named view`");
    sql().exec("CREATE TRIGGER `log insert` AFTER INSERT ON `sp ace` FOR EACH ROW INSERT INTO `audit` (what) VALUES "
               "(CONCAT('sp ace ', NEW.id))");
    sql().exec("CREATE PROCEDURE `count rows`(OUT n INT) SELECT COUNT(*) INTO n FROM `we``ird`");
    sql().exec("CREATE FUNCTION `twice`(x INT) RETURNS INT DETERMINISTIC RETURN x * 2");
    // An event's schedule is read in the time zone it was created in; disabled, so it never runs here.
    sql().exec("SET SESSION time_zone = '+05:30'; CREATE EVENT `nightly; purge` ON SCHEDULE EVERY 1 DAY STARTS "
               "'2030-01-01 03:00:00' ON COMPLETION PRESERVE DISABLE COMMENT 'keeps audit short' DO DELETE FROM `audit` "
               "WHERE id < 0; SET SESSION time_zone = DEFAULT");
    const std::string event_query =
        "SELECT CONCAT_WS('|', EVENT_NAME, STATUS, TIME_ZONE, STARTS, INTERVAL_VALUE, INTERVAL_FIELD, ON_COMPLETION, "
        "EVENT_COMMENT, EVENT_DEFINITION) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()";
    const auto event_before = sql().query_value(event_query);
    ASSERT_TRUE(event_before);
    std::vector<std::string> before;
    for (const auto& t : tables) before.push_back(contents(sql(), t));

    auto backup = my::backup_database(runner(), dir_ / "set");
    EXPECT_EQ(backup.tables().size(), tables.size());
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    EXPECT_TRUE(fs::exists(dir_ / "set" / "manifest.json"));
    struct stat st{};
    ASSERT_EQ(::stat((dir_ / "set").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    const auto done = backup.progress();
    EXPECT_EQ(done.tables_done, tables.size());
    EXPECT_EQ(done.done, done.total);

    auto restore = my::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    my::Connection t = target_sql();
    for (std::size_t i = 0; i < tables.size(); ++i) EXPECT_EQ(contents(t, tables[i]), before[i]) << tables[i];
    EXPECT_EQ(t.query_value("SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND "
                            "TABLE_NAME = 'kept in myisam'"),
              "MyISAM");
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
                            "CONSTRAINT_SCHEMA = DATABASE()"),
              "1");
    // The views read the target's tables, not the source's.
    EXPECT_EQ(t.query_value("SELECT n FROM `view of a view`"), "300");
    sql().exec("DELETE FROM `it's; a table`");
    EXPECT_EQ(t.query_value("SELECT n FROM `view of a view`"), "300");
    // The trigger fires on new rows, and did not fire while the rows were loaded.
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM `audit`"), "0");
    t.exec("INSERT INTO `sp ace` (id) VALUES (3)");
    EXPECT_EQ(t.query_value("SELECT what FROM `audit`"), "sp ace 3");
    t.exec("CALL `count rows`(@n)");
    EXPECT_EQ(t.query_value("SELECT @n"), "300");
    EXPECT_EQ(t.query_value("SELECT `twice`(21)"), "42");
    EXPECT_EQ(t.query_value(event_query), event_before);
    // AUTO_INCREMENT goes on past the restored rows.
    t.exec("INSERT INTO `it's; a table` (parent) VALUES (1)");
    EXPECT_EQ(t.query_value("SELECT MAX(id) FROM `it's; a table`"), "301");
    // The foreign key holds (it was created while its parent had another name).
    try {
        t.exec("INSERT INTO `it's; a table` (parent) VALUES (99999)");
        ADD_FAILURE() << "a row without its parent was taken";
    } catch (const my::Error& e) {
        EXPECT_EQ(e.code(), 1452u) << e.what(); // ER_NO_REFERENCED_ROW_2
    }
}

TEST_F(MysqlDatabaseJobs, a_backup_under_a_concurrent_writer_reads_one_snapshot_across_tables) {
    // Money moves from a to b in single transactions; a backup that read the tables at different
    // moments would see a total other than 1,000,000.
    sql().exec("CREATE TABLE a (id INT PRIMARY KEY, balance BIGINT, pad VARCHAR(200)) ENGINE=InnoDB");
    sql().exec("CREATE TABLE b (id INT PRIMARY KEY, balance BIGINT, pad VARCHAR(200)) ENGINE=InnoDB");
    sql().exec("CREATE TABLE log (id BIGINT PRIMARY KEY AUTO_INCREMENT, moved INT) ENGINE=InnoDB");
    sql().exec("INSERT INTO a SELECT seq, 100, REPEAT('x', 200) FROM seq_1_to_10000");
    sql().exec("INSERT INTO b SELECT id, 0, REPEAT('y', 200) FROM a");
    sql().exec("ANALYZE TABLE a, b");
    std::atomic<bool> stop{false};
    std::atomic<int> transfers{0};
    std::thread writer([&] {
        my::Connection w = direct();
        for (int i = 0; !stop.load(); ++i) {
            const std::string id = std::to_string(1 + i % 10000);
            w.exec("START TRANSACTION; UPDATE a SET balance = balance - 1 WHERE id = " + id +
                   "; UPDATE b SET balance = balance + 1 WHERE id = " + id + "; INSERT INTO log (moved) VALUES (" + id +
                   "); COMMIT");
            transfers.fetch_add(1);
        }
    });
    while (transfers.load() < 50) std::this_thread::sleep_for(1ms);
    const int before = transfers.load();
    my::DatabaseBackupOptions options;
    options.chunk_bytes = 512 << 10; // a and b in chunks too: every chunk reads the same snapshot
    auto backup = my::backup_database(runner(), dir_ / "set", options);
    EXPECT_GT(backup.tables().size(), 3u) << "a and b in chunks";
    const JobState end = backup.wait();
    const int during = transfers.load() - before;
    stop = true;
    writer.join();
    ASSERT_EQ(end, JobState::succeeded) << backup.error();
    EXPECT_GT(during, 0) << "the writer was never let through";

    auto restore = my::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT (SELECT SUM(balance) FROM a) + (SELECT SUM(balance) FROM b)"), "1000000");
    EXPECT_EQ(t.query_value("SELECT (SELECT SUM(balance) FROM b) = (SELECT COUNT(*) FROM log)"), "1");
}

TEST_F(MysqlDatabaseJobs, large_tables_with_an_integer_key_are_copied_and_loaded_in_key_range_chunks) {
    // Sparse and negative keys; BIGINT UNSIGNED keys up to 2^64 - 1; a large table whose key is
    // not an integer (one file); a small one (one file).
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO big SELECT CAST(seq AS SIGNED) * 7 - 60000, REPEAT(CHAR(65 + seq % 26), 200) FROM seq_1_to_20000");
    sql().exec("CREATE TABLE `huge keys` (id BIGINT UNSIGNED PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO `huge keys` SELECT seq * 9000000000000000, REPEAT('h', 250) FROM seq_1_to_2000");
    sql().exec("INSERT INTO `huge keys` VALUES (0, 'zero'), (18446744073709551615, 'max')");
    sql().exec("CREATE TABLE texty (k VARCHAR(20) PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO texty SELECT CONCAT('k', seq), REPEAT('t', 250) FROM seq_1_to_3000");
    sql().exec("CREATE TABLE small (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO small VALUES (1), (2)");
    sql().exec("ANALYZE TABLE big, `huge keys`, texty, small");
    const std::vector<std::string> tables{"big", "`huge keys`", "texty", "small"};
    std::vector<std::string> before;
    for (const auto& t : tables) before.push_back(digest(sql(), t));

    my::DatabaseBackupOptions options;
    options.chunk_bytes = 256 << 10;
    auto backup = my::backup_database(runner(4), dir_ / "set", options);
    std::size_t chunks = 0;
    for (const auto& h : backup.tables()) chunks += h.progress().name.find(" chunk ") != std::string::npos ? 1 : 0;
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    EXPECT_GT(chunks, 4u);
    EXPECT_EQ(backup.tables().size(), chunks + 2) << "texty and small are one file each";
    std::ifstream in(dir_ / "set" / "tables.json");
    const auto list = nlohmann::json::parse(in);
    for (const auto& t : list) {
        const std::string name = t.at("name").get<std::string>();
        if (name == "texty" || name == "small")
            EXPECT_EQ(t.at("files").size(), 1u) << name;
        else
            EXPECT_GT(t.at("files").size(), 1u) << name;
    }

    // The chunks load side by side without waiting for each other: with unique and foreign key
    // checks both off, MariaDB loaded the first chunk into the empty table in bulk under a table
    // lock, every other chunk waited for it, and a chunk loading longer than lock_timeout failed
    // the set (found by benchmark 2 on 200 MB).
    const auto lock_waits = [&] {
        return std::stoull(server().root().query("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")[0][1].value_or("0"));
    };
    const std::uint64_t waits_before = lock_waits();
    auto restore = my::restore_database(target(4), dir_ / "set");
    EXPECT_EQ(restore.tables().size(), backup.tables().size());
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_EQ(lock_waits() - waits_before, 0u) << "chunks of one table waited for each other's locks";
    my::Connection t = target_sql();
    for (std::size_t i = 0; i < tables.size(); ++i) EXPECT_EQ(digest(t, tables[i]), before[i]) << tables[i];
}

TEST_F(MysqlDatabaseJobs, a_set_with_a_changed_file_is_refused_before_the_target_is_touched) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'one'), (2, 'two')");
    sql().exec("CREATE TABLE u (id INT PRIMARY KEY)");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    const fs::path file = dir_ / "set" / "table-0001.tbl";
    {
        std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(fs::file_size(file) / 2));
        f.put('\x5a');
    }
    MysqlRunner& into = target();
    try {
        auto restore = my::restore_database(into, dir_ / "set");
        FAIL() << "started";
    } catch (const connpool::io::Error& e) {
        EXPECT_NE(std::string(e.what()).find("table-0001.tbl"), std::string::npos) << e.what();
    }
    EXPECT_EQ(target_sql().query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"),
              "0");
    EXPECT_EQ(target_pool_->stats().in_use, 0u);
}

TEST_F(MysqlDatabaseJobs, a_table_restore_does_not_read_again_what_the_manifest_check_read_yet_still_checks_it) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_2000");
    my::DatabaseBackupOptions raw;
    raw.table.compression = my::Compression::none;
    {
        auto backup = my::backup_database(runner(), dir_ / "set", raw);
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    const fs::path file = dir_ / "set" / "table-0001.tbl";
    ASSERT_TRUE(fs::exists(file));
    const auto flip_in_place = [&](bool keep_mtime) {
        connpool::testing::flip_byte(file, connpool::testing::middle_of(file), keep_mtime);
    };
    MysqlRunner& into = target();
    for (const bool keep_mtime : {true, false}) {
        SCOPED_TRACE(keep_mtime ? "changed behind the identity the manifest check saw" : "changed with a new mtime");
        // table_progress runs after the manifest check, before the table's job is submitted:
        // the bytes change between the check and the load.
        std::atomic<std::uint64_t> sent{0};
        my::DatabaseRestoreOptions o;
        o.table_progress = [&](const my::Table&) -> connpool::ProgressCallback {
            flip_in_place(keep_mtime);
            return [&](const connpool::Progress& p) { sent = std::max<std::uint64_t>(sent, p.done); };
        };
        auto restore = my::restore_database(into, dir_ / "set", o);
        EXPECT_EQ(restore.wait(), JobState::failed);
        EXPECT_NE(restore.error().find("checksum"), std::string::npos) << restore.error();
        if (keep_mtime)
            EXPECT_GT(sent.load(), 0u) << "the manifest check read the file: its restore loads without a check pass";
        else
            EXPECT_EQ(sent.load(), 0u) << "a file with another identity is checked whole again, before loading";
        EXPECT_EQ(target_sql().query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"),
                  "0");
        flip_in_place(false); // the bytes as the manifest lists them again (a new mtime)
    }
    auto restore = my::restore_database(into, dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_EQ(target_sql().query_value("SELECT COUNT(*) FROM t"), "2000");
    EXPECT_EQ(target_pool_->stats().in_use, 0u);
}

TEST_F(MysqlDatabaseJobs, a_set_written_before_events_were_copied_still_restores) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    // schema.json as the first version of the format wrote it (no "events"), the manifest made again.
    const fs::path schema_file = dir_ / "set" / "schema.json";
    const auto rewrite = [&](const nlohmann::json& schema) {
        std::ofstream(schema_file, std::ios::trunc) << schema.dump();
        connpool::io::Manifest manifest = connpool::io::read_manifest(dir_ / "set");
        for (auto& f : manifest.files) f = connpool::io::manifest_entry(dir_ / "set", f.name);
        fs::remove(dir_ / "set" / "manifest.json");
        connpool::io::write_manifest(dir_ / "set", manifest);
    };
    nlohmann::json schema = nlohmann::json::parse(std::ifstream(schema_file));
    EXPECT_EQ(schema.at("version"), 2);
    ASSERT_TRUE(schema.contains("events"));
    MysqlRunner& into = target();
    // A later version is refused, naming it, rather than restored without what it added.
    schema["version"] = 3;
    rewrite(schema);
    try {
        (void)my::restore_database(into, dir_ / "set");
        FAIL() << "started";
    } catch (const connpool::io::Error& e) {
        EXPECT_NE(std::string(e.what()).find("format version 3; this library reads 1 and 2"), std::string::npos) << e.what();
    }
    schema["version"] = 1;
    schema.erase("events");
    rewrite(schema);
    auto restore = my::restore_database(into, dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_EQ(target_sql().query_value("SELECT COUNT(*) FROM t"), "2");
}

TEST_F(MysqlDatabaseJobs, a_target_that_has_one_of_the_sets_tables_or_routines_is_refused_and_left_as_it_was) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY); CREATE TABLE u (id INT PRIMARY KEY); INSERT INTO u VALUES (7)");
    sql().exec("CREATE PROCEDURE p() SELECT 1");
    sql().exec("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DISABLE DO DELETE FROM u WHERE id < 0");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    MysqlRunner& into = target();
    target_sql().exec("CREATE TABLE u (id INT PRIMARY KEY, mine TEXT); INSERT INTO u VALUES (1, 'keep me')");
    // A routine and an event too: found otherwise only when they were created, after every table was loaded.
    target_sql().exec("CREATE PROCEDURE p() SELECT 2");
    target_sql().exec("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1");
    try {
        auto restore = my::restore_database(into, dir_ / "set");
        FAIL() << "started";
    } catch (const my::Error& e) {
        EXPECT_EQ(e.code(), 1050u);
        EXPECT_NE(std::string(e.what()).find("event `e`, procedure `p`, table `u`"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("nothing was changed"), std::string::npos) << e.what();
    }
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT GROUP_CONCAT(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"),
              "u");
    EXPECT_EQ(t.query_value("SELECT mine FROM u"), "keep me");
}

TEST_F(MysqlDatabaseJobs, a_pool_that_cannot_give_the_leader_and_a_table_a_connection_is_refused) {
    sql().exec("CREATE TABLE t (id INT)");
    try {
        auto backup = my::backup_database(runner(1), dir_ / "set");
        FAIL() << "started";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("max_size"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir_ / "set"));
}

TEST_F(MysqlDatabaseJobs, a_table_locked_by_another_session_fails_the_backup_at_once_naming_the_lock) {
    sql().exec("CREATE TABLE t (id INT); CREATE TABLE u (id INT)");
    my::Connection holder = direct();
    holder.exec("LOCK TABLES u WRITE");
    const auto started = std::chrono::steady_clock::now();
    try {
        auto backup = my::backup_database(runner(), dir_ / "set");
        FAIL() << "started";
    } catch (const my::Error& e) {
        EXPECT_NE(std::string(e.what()).find("lock_timeout"), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find(MariadbServer::password), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, 30s) << "it waited for the lock instead of failing";
    EXPECT_FALSE(fs::exists(dir_ / "set"));
    holder.exec("UNLOCK TABLES");
    // Every lease went back, and the pool's sessions hold no lock: a writer is not blocked.
    EXPECT_EQ(pool_->stats().in_use, 0u);
    sql().exec("INSERT INTO u VALUES (1)");
}

TEST_F(MysqlDatabaseJobs, a_cancelled_backup_ends_cancelled_without_a_manifest_and_unlocks) {
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_200000");
    sql().exec("CREATE TABLE small (id INT) ENGINE=InnoDB");
    auto backup = my::backup_database(runner(2), dir_ / "set");
    backup.cancel();
    EXPECT_EQ(backup.wait(), JobState::cancelled) << backup.error();
    EXPECT_FALSE(fs::exists(dir_ / "set" / "manifest.json"));
    runner_->wait_all();
    EXPECT_EQ(pool_->stats().in_use, 0u);
    sql().exec("INSERT INTO small VALUES (1)"); // no read lock is left behind
}

TEST_F(MysqlDatabaseJobs, a_sets_total_counts_the_queued_tables_from_the_start) {
    // A pool of 2 gives the set one snapshot session, so the tables are copied one at a time and
    // the later ones are queued when the set returns.
    for (const char* name : {"a", "b", "c"})
        sql().exec(std::string("CREATE TABLE ") + name + " (id INT PRIMARY KEY, v VARCHAR(300)) ENGINE=InnoDB; INSERT INTO " +
                   name + " SELECT seq, REPEAT('x', 300) FROM seq_1_to_3000; ANALYZE TABLE " + name);
    const std::uint64_t on_disk = std::stoull(*sql().query_value(
        "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"));
    auto backup = my::backup_database(runner(2), dir_ / "set");
    const auto at_start = backup.progress();
    EXPECT_GE(at_start.total, on_disk) << "every table's size counts before its job runs";
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    const std::uint64_t exact = backup.progress().total;

    auto restore = my::restore_database(target(2), dir_ / "set");
    const auto restore_start = restore.progress();
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_EQ(restore_start.total, restore.progress().total) << "a restore knows every file's size before it loads";
    EXPECT_GT(exact, 0u);
}

TEST_F(MysqlDatabaseJobs, the_table_jobs_take_their_ids_from_the_users_runner_so_sinks_never_see_one_twice) {
    sql().exec("CREATE TABLE a (id INT); CREATE TABLE b (id INT); CREATE TABLE c (id INT)");
    const auto before = runner().submit({"before", connpool::JobKind::backup, [](my::Connection&, connpool::ProgressReporter&) {}});
    auto backup = my::backup_database(runner(), dir_ / "set");
    // The table jobs run on the set's own runner over its snapshot sessions; a job on the
    // user's runner numbered from 1 again would share an id with one of them.
    const auto after = runner().submit({"after", connpool::JobKind::backup, [](my::Connection&, connpool::ProgressReporter&) {}});
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    std::vector<std::uint64_t> ids{before.id(), after.id()};
    for (const auto& h : backup.tables()) ids.push_back(h.id());
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << "an id seen twice";
    EXPECT_EQ(ids.size(), 5u);
}

TEST_F(MysqlDatabaseJobs, a_cancelled_restore_drops_the_tables_it_created_so_it_can_run_again) {
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_200000");
    sql().exec("CREATE TABLE small (id INT) ENGINE=InnoDB");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    MysqlRunner& into = target();
    {
        auto restore = my::restore_database(into, dir_ / "set");
        restore.cancel();
        EXPECT_EQ(restore.wait(), JobState::cancelled) << restore.error();
    }
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"), "0");
    auto again = my::restore_database(into, dir_ / "set");
    ASSERT_EQ(again.wait(), JobState::succeeded) << again.error();
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM big"), "200000");
}

TEST_F(MysqlDatabaseJobs, while_a_restore_loads_the_target_has_none_of_its_tables_and_a_crashed_ones_leftovers_go) {
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_200000");
    sql().exec("CREATE TABLE small (id INT) ENGINE=InnoDB; INSERT INTO small VALUES (1)");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    MysqlRunner& into = target(2); // one table at a time: small waits while big loads
    my::Connection t = target_sql();
    // What a restore killed in the middle leaves: a table under a loading name.
    t.exec("CREATE TABLE `#connpool-restore-deadbeef-0001` (id INT)");
    auto restore = my::restore_database(into, dir_ / "set");
    std::size_t looks = 0;
    while (restore.tables().front().state() != JobState::succeeded && !connpool::is_final(restore.tables().front().state())) {
        EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND "
                                "TABLE_NAME IN ('big', 'small')"),
                  "0");
        ++looks;
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_GT(looks, 0u);
    EXPECT_EQ(t.query_value("SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE "
                            "TABLE_SCHEMA = DATABASE()"),
              "big,small");
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM big"), "200000");
}

TEST_F(MysqlDatabaseJobs, a_restore_killed_at_any_moment_leaves_none_of_the_tables_or_all_and_the_next_one_succeeds) {
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(255)) ENGINE=InnoDB");
    sql().exec("INSERT INTO big SELECT seq, REPEAT('p', 255) FROM seq_1_to_100000");
    sql().exec("CREATE TABLE small (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO small VALUES (1), (2)");
    sql().exec("CREATE VIEW v AS SELECT COUNT(*) AS n FROM big");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    MysqlRunner& into = target();
    my::Connection t = target_sql();
    std::mt19937 random(20261203);
    int killed = 0, finished = 0, leftovers = 0;
    for (int trial = 0; trial < 6; ++trial) {
        SCOPED_TRACE("trial " + std::to_string(trial));
        const pid_t pid = spawn_restore_child();
        ASSERT_GT(pid, 0);
        // Killed anywhere from before the tables exist to after the rename.
        std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 900)(random)));
        const int status = connpool::testing::kill_and_reap(pid);
        if (WIFSIGNALED(status)) ++killed;
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++finished;
        else ADD_FAILURE() << "the child failed with status " << status;
        const std::string there = t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                                                "DATABASE() AND TABLE_NAME IN ('big', 'small')").value_or("");
        if (there == "2") {
            // The new state: whole. A kill after the rename may have come before the view: the
            // next restore creates it from the journal, then refuses to restore over the tables.
            EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM big"), "100000");
            EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM small"), "2");
            try {
                auto again = my::restore_database(into, dir_ / "set");
                ADD_FAILURE() << "restored over the tables";
            } catch (const my::Error& e) {
                EXPECT_EQ(e.code(), 1050u) << e.what();
            }
            EXPECT_EQ(t.query_value("SELECT n FROM v"), "100000");
            EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"), "3")
                << "big, small and v, no loading table or journal left";
        } else {
            EXPECT_EQ(there, "0") << "some of the tables have their names";
        }
        if (there == "0") {
            // The old state, perhaps with loading tables: the next restore drops them and succeeds.
            if (t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()") != "0")
                ++leftovers;
            auto again = my::restore_database(into, dir_ / "set");
            ASSERT_EQ(again.wait(), JobState::succeeded) << again.error();
            EXPECT_EQ(t.query_value("SELECT n FROM v"), "100000");
            EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"), "3")
                << "big, small and v, no loading table left";
        }
        server().root().exec("DROP DATABASE " + target_ + "; CREATE DATABASE " + target_);
    }
    std::printf("restore crash: %d killed (%d leaving loading tables), %d finished before the kill\n", killed, leftovers,
                finished);
    EXPECT_GT(killed, 0);
}

TEST_F(MysqlDatabaseJobs, a_restore_killed_after_its_rename_is_finished_by_the_next_one) {
    // The set's view reads a table of another database, which this test holds locked: the
    // killed restore has renamed its tables and created its procedure, and waits to create the
    // view, when it dies. Its trigger and event come after the view, so they are missing too.
    const std::string other = db_ + "_x";
    server().root().exec("CREATE DATABASE " + other + "; CREATE TABLE " + other + ".x (a INT); INSERT INTO " + other +
                         ".x VALUES (7)");
    struct DropOther {
        std::string name;
        ~DropOther() {
            try {
                MariadbServer::instance().root().exec("DROP DATABASE IF EXISTS " + name);
            } catch (const std::exception&) {
            }
        }
    } drop_other{other};
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO t VALUES (1), (2)");
    sql().exec("CREATE TABLE audit (what INT) ENGINE=InnoDB");
    sql().exec("CREATE PROCEDURE p() SELECT 1");
    sql().exec("CREATE VIEW v AS SELECT a FROM " + other + ".x");
    sql().exec("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id)");
    sql().exec("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    MysqlRunner& into = target();
    my::Connection t = target_sql();
    my::Connection locker = server().root();
    locker.exec("LOCK TABLES " + other + ".x WRITE");
    const pid_t pid = spawn_restore_child();
    ASSERT_GT(pid, 0);
    std::optional<std::string> waiting;
    for (int i = 0; i < 600 && !waiting; ++i) {
        waiting = t.query_value("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '" + target_ +
                                "' AND INFO LIKE 'CREATE%VIEW%' AND STATE LIKE 'Waiting for table metadata lock%'");
        if (!waiting) std::this_thread::sleep_for(50ms);
    }
    connpool::testing::kill_and_reap(pid);
    ASSERT_TRUE(waiting) << "the child never reached the view";
    // A crash takes the session with it (the server would otherwise finish its statement, and
    // its restore lock would hold the next restore off until then).
    server().root().exec("KILL " + *waiting);
    locker.exec("UNLOCK TABLES");
    const auto count = [&](const std::string& table, const std::string& where) {
        return t.query_value("SELECT COUNT(*) FROM information_schema." + table + " WHERE " + where).value_or("");
    };
    EXPECT_EQ(count("TABLES", "TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('t', 'audit')"), "2");
    EXPECT_EQ(count("TABLES", "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'v'"), "0");
    EXPECT_EQ(count("TRIGGERS", "EVENT_OBJECT_SCHEMA = DATABASE()"), "0");
    EXPECT_EQ(count("TABLES", "TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '#connpool-restore-%-finish'"), "1");

    // The next restore finishes it (the objects it had left), then refuses to restore over it.
    try {
        auto again = my::restore_database(into, dir_ / "set");
        FAIL() << "restored over the finished restore";
    } catch (const my::Error& e) {
        EXPECT_EQ(e.code(), 1050u) << e.what();
    }
    EXPECT_EQ(t.query_value("SELECT a FROM v"), "7");
    EXPECT_EQ(count("ROUTINES", "ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME = 'p'"), "1");
    EXPECT_EQ(count("TRIGGERS", "EVENT_OBJECT_SCHEMA = DATABASE() AND TRIGGER_NAME = 'tr'"), "1");
    EXPECT_EQ(count("EVENTS", "EVENT_SCHEMA = DATABASE() AND EVENT_NAME = 'e'"), "1");
    EXPECT_EQ(count("TABLES", "TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '#connpool%'"), "0");
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM t"), "2");
    t.exec("INSERT INTO t VALUES (3)");
    EXPECT_EQ(t.query_value("SELECT what FROM audit"), "3");
}

TEST_F(MysqlDatabaseJobs, a_second_restore_into_the_same_database_is_refused_while_one_runs) {
    sql().exec("CREATE TABLE t (id INT)");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    MysqlRunner& into = target();
    my::Connection other = target_sql();
    other.exec("DO GET_LOCK(" + other.quote_string(my::detail::restore_lock_name(target_)) + ", 0)");
    try {
        auto restore = my::restore_database(into, dir_ / "set");
        FAIL() << "started";
    } catch (const my::Error& e) {
        EXPECT_NE(std::string(e.what()).find("another restore_database into this database is running"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(target_pool_->stats().in_use, 0u);
    other.exec("DO RELEASE_ALL_LOCKS()");
    auto restore = my::restore_database(into, dir_ / "set");
    EXPECT_EQ(restore.wait(), JobState::succeeded) << restore.error();
}

TEST_F(MysqlDatabaseJobs, a_restore_whose_view_cannot_be_created_fails_and_leaves_the_target_as_it_was) {
    // v reads a table of another database, gone by the time the set is restored.
    const std::string other = db_ + "_x";
    server().root().exec("CREATE DATABASE " + other + "; CREATE TABLE " + other + ".x (a INT)");
    sql().exec("CREATE TABLE t (id INT); INSERT INTO t VALUES (1); CREATE VIEW v AS SELECT * FROM " + other + ".x");
    sql().exec("CREATE PROCEDURE p() SELECT 1");
    {
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    server().root().exec("DROP DATABASE " + other);
    auto restore = my::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::failed);
    EXPECT_NE(restore.error().find("creating the views failed"), std::string::npos) << restore.error();
    EXPECT_NE(restore.error().find("the database is as it was"), std::string::npos) << restore.error();
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"), "0");
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"), "0");
}

TEST(MysqlDefiner, the_definer_clause_is_found_in_the_head_of_each_kind_of_create_statement) {
    using my::detail::find_definer;
    using my::detail::without_definer;
    const std::string view = "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1";
    ASSERT_TRUE(find_definer(view));
    EXPECT_EQ(find_definer(view)->account, "root@localhost");
    EXPECT_EQ(without_definer(view), "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1");
    EXPECT_EQ(find_definer("CREATE DEFINER=`we``ird`@`h\"st` PROCEDURE `p`() BEGIN END")->account, "we`ird@h\"st");
    EXPECT_EQ(find_definer("CREATE DEFINER=`a role` FUNCTION f() RETURNS INT RETURN 1")->account, "a role");
    EXPECT_EQ(find_definer("create definer = 'it''s'@'%' trigger t before insert on x for each row set @a = 1")->account,
              "it's@%");
    EXPECT_EQ(find_definer("CREATE DEFINER=CURRENT_USER() EVENT e ON SCHEDULE EVERY 1 DAY DO DO 1")->account, "CURRENT_USER");
    EXPECT_EQ(without_definer("CREATE DEFINER=`u`@`%` EVENT `e` ON SCHEDULE EVERY 1 DAY DO DO 1"),
              "CREATE EVENT `e` ON SCHEDULE EVERY 1 DAY DO DO 1");
    // Only the head counts: a body that mentions DEFINER is not a clause, nor is a statement without one.
    const std::string body = "CREATE VIEW `v` AS SELECT 'DEFINER=`x`@`y`' AS a";
    EXPECT_FALSE(find_definer(body));
    EXPECT_EQ(without_definer(body), body);
    EXPECT_FALSE(find_definer("CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @DEFINER = 1"));
    EXPECT_FALSE(find_definer("DROP VIEW v"));
    EXPECT_FALSE(find_definer("CREATE DEFINER=`unterminated@x VIEW v AS SELECT 1"));
}

/// A set whose objects were created by the test user, and a second user who may do anything in
/// the target database but not give objects to another account.
class MysqlDatabaseDefiners : public MysqlDatabaseJobs {
protected:
    void SetUp() override {
        MysqlDatabaseJobs::SetUp();
        if (IsSkipped()) return;
        sql().exec("CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 10), (2, 20)");
        sql().exec("CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(20))");
        sql().exec("CREATE SQL SECURITY DEFINER VIEW v AS SELECT SUM(n) AS total FROM t");
        sql().exec("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (what) VALUES (NEW.id)");
        sql().exec("CREATE PROCEDURE p(OUT x INT) SELECT COUNT(*) INTO x FROM t");
        sql().exec("CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x + 1");
        sql().exec("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit");
        auto backup = my::backup_database(runner(), dir_ / "set");
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
        target();
        user_ = "r" + db_;
        auto root = server().root();
        root.exec("CREATE USER '" + user_ + "'@'%' IDENTIFIED BY 'another-Pa55'");
        root.exec("GRANT ALL PRIVILEGES ON " + target_ + ".* TO '" + user_ + "'@'%'");
    }
    void TearDown() override {
        restorer_runner_.reset();
        restorer_pool_.reset();
        if (!user_.empty()) {
            try {
                server().root().exec("DROP USER IF EXISTS '" + user_ + "'@'%'");
            } catch (const std::exception&) {
            }
        }
        MysqlDatabaseJobs::TearDown();
    }

    /// A runner whose connections to the target log in as the second user.
    MysqlRunner& restorer() {
        my::ConnectOptions as = server().tcp(target_);
        as.user = user_;
        as.password = "another-Pa55";
        restorer_pool_.emplace(my::Factory(as), mysql_pool_options(3));
        restorer_runner_.emplace(*restorer_pool_);
        return *restorer_runner_;
    }

    std::string user_;
    std::optional<MysqlPool> restorer_pool_;
    std::optional<MysqlRunner> restorer_runner_;
};

TEST_F(MysqlDatabaseDefiners, a_restore_as_a_user_who_may_not_keep_the_definers_is_refused_before_any_table_is_touched) {
    try {
        auto restore = my::restore_database(restorer(), dir_ / "set");
        FAIL() << "started: " << connpool::to_string(restore.wait()) << " " << restore.error();
    } catch (const my::Error& e) {
        EXPECT_EQ(e.code(), 1227u) << e.what();
        const std::string what = e.what();
        EXPECT_NE(what.find("DEFINER=`connpool`@`%`"), std::string::npos) << what;
        EXPECT_NE(what.find("Definers::current_user"), std::string::npos) << what;
        EXPECT_NE(what.find("nothing was changed"), std::string::npos) << what;
    }
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"), "0");
    EXPECT_EQ(restorer_pool_->stats().in_use, 0u);
}

TEST_F(MysqlDatabaseDefiners, with_definers_current_user_the_restoring_user_defines_every_object_and_they_work) {
    my::DatabaseRestoreOptions options;
    options.definers = my::Definers::current_user;
    auto restore = my::restore_database(restorer(), dir_ / "set", options);
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    my::Connection t = target_sql();
    for (const auto& [table, schema_column] : std::vector<std::pair<std::string, std::string>>{
             {"VIEWS", "TABLE_SCHEMA"}, {"TRIGGERS", "TRIGGER_SCHEMA"}, {"ROUTINES", "ROUTINE_SCHEMA"}, {"EVENTS", "EVENT_SCHEMA"}})
        EXPECT_EQ(t.query_value("SELECT GROUP_CONCAT(DISTINCT DEFINER) FROM information_schema." + table + " WHERE " +
                                schema_column + " = DATABASE()"),
                  user_ + "@%")
            << table;
    EXPECT_EQ(t.query_value("SELECT total FROM v"), "30");
    t.exec("INSERT INTO t VALUES (3, 30)");
    EXPECT_EQ(t.query_value("SELECT what FROM audit"), "3");
    t.exec("CALL p(@x)");
    EXPECT_EQ(t.query_value("SELECT @x"), "3");
    EXPECT_EQ(t.query_value("SELECT f(41)"), "42");
    EXPECT_EQ(t.query_value("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()"), "DISABLED");
}

TEST_F(MysqlDatabaseDefiners, a_user_who_may_give_objects_to_another_account_keeps_the_sets_definers) {
    // A view of the second user's: the test user (ALL ON *.*, so SET USER) restores it as it is.
    sql().exec("CREATE DEFINER='" + user_ + "'@'%' SQL SECURITY INVOKER VIEW w AS SELECT COUNT(*) AS n FROM t");
    auto backup = my::backup_database(runner(), dir_ / "set2");
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    auto restore = my::restore_database(*target_runner_, dir_ / "set2");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'w'"),
              user_ + "@%");
    EXPECT_EQ(t.query_value("SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'v'"),
              "connpool@%");
    EXPECT_EQ(t.query_value("SELECT n FROM w"), "2");
    // The probe that asked the server left nothing behind.
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME "
                            "LIKE '#connpool%'"),
              "0");
}

TEST_F(MysqlDatabaseJobs, a_set_of_chosen_tables_takes_the_views_and_triggers_it_can_restore_and_lists_the_others) {
    sql().exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2); CREATE TABLE `u``s` (id INT)");
    sql().exec("CREATE TABLE audit (what INT)");
    sql().exec("CREATE VIEW `of t` AS SELECT COUNT(*) AS n FROM t");
    sql().exec("CREATE VIEW `of u` AS SELECT * FROM `u``s`");
    sql().exec("CREATE VIEW `of of t` AS SELECT n * 10 AS m FROM `of t`");
    sql().exec("CREATE VIEW `of both` AS SELECT n FROM `of t` JOIN `u``s`");
    sql().exec("CREATE TRIGGER `on t` AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id)");
    sql().exec("CREATE TRIGGER `on u` AFTER INSERT ON `u``s` FOR EACH ROW INSERT INTO audit VALUES (NEW.id)");
    sql().exec("CREATE PROCEDURE p() SELECT COUNT(*) FROM `u``s`");
    my::DatabaseBackupOptions options;
    options.tables = {my::Table{"t"}, my::Table{"audit"}};
    {
        auto backup = my::backup_database(runner(), dir_ / "set", options);
        ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    }
    auto restore = my::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    my::Connection t = target_sql();
    EXPECT_EQ(t.query_value("SELECT m FROM `of of t`"), "20");
    EXPECT_EQ(t.query_value("SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE "
                            "TABLE_SCHEMA = DATABASE()"),
              "audit,of of t,of t,t");
    EXPECT_EQ(t.query_value("SELECT GROUP_CONCAT(TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
                            "DATABASE()"),
              "on t");
    EXPECT_EQ(t.query_value("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"), "1");
    t.exec("INSERT INTO t VALUES (3)");
    EXPECT_EQ(t.query_value("SELECT what FROM audit"), "3");
    // What the set left out, it says.
    std::ifstream in(dir_ / "set" / "schema.json");
    const auto schema = nlohmann::json::parse(in);
    std::vector<std::string> left;
    for (const auto& o : schema.at("left_out")) left.push_back(o.at("kind").get<std::string>() + " " + o.at("name").get<std::string>());
    std::sort(left.begin(), left.end());
    EXPECT_EQ(left, (std::vector<std::string>{"trigger on u", "view of both", "view of u"}));
}

TEST(MysqlViewReads, the_relations_a_view_reads_come_from_its_canonical_definition) {
    const std::set<std::string> relations{"t", "b`q", "v", "db"};
    EXPECT_EQ(my::detail::view_reads("select `b`.`a` AS `a`,(select count(0) from `db`.`t`) AS `n` from (`db`.`b``q` `b` "
                                     "join `mysql`.`user` `u` on(1 = 0)) where `db`.`v`.`x` = 'db.`nope`'",
                                     "db", relations),
              (std::set<std::string>{"t", "b`q", "v"}));
    EXPECT_TRUE(my::detail::view_reads("select 1 AS `1`", "db", relations).empty());
}

TEST_F(MysqlDatabaseJobs, a_chosen_table_that_does_not_exist_is_refused_before_anything_is_written) {
    sql().exec("CREATE TABLE t (id INT)");
    my::DatabaseBackupOptions options;
    options.tables = {my::Table{"t"}, my::Table{"nope`s"}};
    try {
        auto backup = my::backup_database(runner(), dir_ / "set", options);
        FAIL() << "started";
    } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("`nope``s`"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir_ / "set"));
    EXPECT_EQ(pool_->stats().in_use, 0u);
}

} // namespace

TEST_F(MysqlDatabaseJobs, a_backup_and_a_restore_open_no_table_of_another_database) {
    // information_schema queries that the server cannot answer by lookup open every table of
    // every database (views included, with Aria temporary tables for their text columns): slow
    // on a server with many databases, and where mariadbd crashed. Another database's tables and
    // views, out of the table cache, must stay unopened.
    auto root = server().root();
    const std::string other = db_ + "_other";
    root.exec("CREATE DATABASE " + other);
    for (int i = 0; i < 40; ++i) root.exec("CREATE TABLE " + other + ".t" + std::to_string(i) + " (id INT PRIMARY KEY)");
    for (int i = 0; i < 10; ++i) root.exec("CREATE VIEW " + other + ".v" + std::to_string(i) + " AS SELECT id FROM " + other + ".t" + std::to_string(i));
    sql().exec("CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(40))");
    sql().exec("INSERT INTO big SELECT seq, CONCAT('row ', seq) FROM seq_1_to_5000");
    sql().exec("CREATE TABLE log (id INT PRIMARY KEY AUTO_INCREMENT, n INT)");
    sql().exec("CREATE TRIGGER logged AFTER INSERT ON big FOR EACH ROW INSERT INTO log (n) VALUES (NEW.id)");
    sql().exec("ANALYZE TABLE big");
    const auto opened = [&](const char* what) { return std::stoull(root.query("SHOW GLOBAL STATUS LIKE '" + std::string(what) + "'")[0][1].value_or("0")); };
    root.exec("FLUSH TABLES");
    const auto views = opened("Opened_views"), definitions = opened("Opened_table_definitions");

    my::DatabaseBackupOptions options;
    options.chunk_bytes = 16 * 1024; // the chunk planner's key lookup runs too
    auto backup = my::backup_database(runner(), dir_ / "set", options);
    ASSERT_EQ(backup.wait(), JobState::succeeded) << backup.error();
    auto restore = my::restore_database(target(), dir_ / "set");
    ASSERT_EQ(restore.wait(), JobState::succeeded) << restore.error();
    EXPECT_EQ(opened("Opened_views") - views, 0u);
    // This database's and the target's few tables, and the server's own (mysql.proc for the
    // routines); not the other database's 50.
    EXPECT_LT(opened("Opened_table_definitions") - definitions, 40u);
    root.exec("DROP DATABASE " + other);
}
