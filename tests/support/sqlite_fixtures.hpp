#pragma once

// Helpers for the SQLite adapter tests: a unique temporary directory per test (ctest runs tests
// in parallel), demo databases with a few tables, indexes and thousands of rows, a raw SQLite
// handle for looking at files without going through the pool, content fingerprints (schema,
// row counts and a digest of every row), and small file utilities.

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sqlite3.h>

namespace connpool::testing {

namespace fs = std::filesystem;

using SqlitePool = connpool::Pool<connpool::sqlite::Connection, connpool::sqlite::Factory>;
using SqliteRunner = connpool::JobRunner<SqlitePool>;

/// Pool options for the adapter tests: no maintenance thread, a generous acquire timeout that
/// only guards against deadlocks.
inline connpool::PoolOptions sqlite_pool_options(std::size_t max_size) {
    connpool::PoolOptions o;
    o.max_size = max_size;
    o.acquire_timeout = std::chrono::seconds{60};
    o.maintenance_interval = std::chrono::milliseconds{0};
    return o;
}

/// Runner options that deliver every progress report (no throttling), so tests see each step.
inline connpool::RunnerOptions every_report() {
    connpool::RunnerOptions o;
    o.progress_interval = std::chrono::milliseconds{0};
    return o;
}

/// `open == idle + in_use` and `created - destroyed == open`, with nothing in flight.
inline void expect_pool_consistent(const connpool::PoolStats& s) {
    EXPECT_EQ(s.open, s.idle + s.in_use);
    EXPECT_EQ(s.created - s.destroyed, s.open);
    EXPECT_LE(s.open, s.max_size);
}

/// A fresh, uniquely named directory under the system temp directory, removed (with everything
/// in it, whatever its permissions) on destruction.
class TempDir {
public:
    TempDir() {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        std::string label = info != nullptr ? std::string(info->test_suite_name()) + "-" + info->name() : "test";
        for (char& c : label)
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
        if (label.size() > 80) label.resize(80);
        static std::atomic<unsigned> counter{0};
        std::random_device rd;
        for (int attempt = 0;; ++attempt) {
            std::ostringstream name;
            name << "connpool-sqlite-" << label << "-" << ::getpid() << "-" << counter.fetch_add(1) << "-" << std::hex
                 << rd();
            path_ = fs::temp_directory_path() / name.str();
            std::error_code ec;
            if (fs::create_directory(path_, ec) && !ec) break;
            if (attempt > 100) throw std::runtime_error("cannot create a temp directory under " + fs::temp_directory_path().string());
        }
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::replace);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        // A test may have made a subdirectory read-only; give everything back to the owner first.
        fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
        for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::recursive_directory_iterator();
             it.increment(ec)) {
            std::error_code ignored;
            if (it->is_directory(ignored)) fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ignored);
        }
        fs::remove_all(path_, ec);
    }

    [[nodiscard]] const fs::path& path() const noexcept { return path_; }
    [[nodiscard]] fs::path operator/(const fs::path& name) const { return path_ / name; }

    /// Creates (if needed) and returns a subdirectory.
    [[nodiscard]] fs::path subdir(const std::string& name) const {
        fs::create_directories(path_ / name);
        return path_ / name;
    }

private:
    fs::path path_;
};

/// A plain SQLite handle for looking at (and writing to) a database file behind the pool's back.
class RawDb {
public:
    explicit RawDb(const fs::path& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) : path_(path) {
        sqlite3* raw = nullptr;
        const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
        db_ = raw;
        if (rc != SQLITE_OK) {
            const std::string message = raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
            sqlite3_close_v2(raw);
            db_ = nullptr;
            throw std::runtime_error("test: cannot open " + path.string() + ": " + message);
        }
        sqlite3_busy_timeout(db_, 30'000);
    }
    static RawDb read_only(const fs::path& path) { return RawDb(path, SQLITE_OPEN_READONLY); }

    RawDb(RawDb&& other) noexcept : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)) {}
    RawDb& operator=(RawDb&&) = delete;
    RawDb(const RawDb&) = delete;
    RawDb& operator=(const RawDb&) = delete;
    ~RawDb() {
        if (db_ != nullptr) sqlite3_close_v2(db_);
    }

    [[nodiscard]] sqlite3* handle() const noexcept { return db_; }

    /// Runs `sql`; throws std::runtime_error with SQLite's message on failure.
    void exec(const std::string& sql) const {
        char* message = nullptr;
        const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
        if (rc != SQLITE_OK) {
            const std::string text = message != nullptr ? message : sqlite3_errstr(rc);
            sqlite3_free(message);
            throw std::runtime_error("test: SQL on " + path_.string() + " failed (" + std::to_string(rc) + "): " + text +
                                     "\n  in: " + sql);
        }
    }

    /// Returns every row of `sql`, each column as text ("NULL" for NULL).
    [[nodiscard]] std::vector<std::vector<std::string>> rows(const std::string& sql) const {
        sqlite3_stmt* stmt = nullptr;
        int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr);
        if (rc != SQLITE_OK)
            throw std::runtime_error("test: cannot prepare '" + sql + "' on " + path_.string() + ": " + sqlite3_errmsg(db_));
        std::vector<std::vector<std::string>> out;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            std::vector<std::string> row;
            for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
                const auto* text = sqlite3_column_text(stmt, i);
                row.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "NULL");
            }
            out.push_back(std::move(row));
        }
        const std::string error = sqlite3_errmsg(db_);
        sqlite3_finalize(stmt);
        if (rc != SQLITE_DONE)
            throw std::runtime_error("test: '" + sql + "' on " + path_.string() + " failed (" + std::to_string(rc) + "): " + error);
        return out;
    }

    /// Returns the first column of the first row as text ("" when there is no row).
    [[nodiscard]] std::string text(const std::string& sql) const {
        const auto r = rows(sql);
        return r.empty() || r.front().empty() ? std::string() : r.front().front();
    }

    /// Returns the first column of the first row as an integer.
    [[nodiscard]] std::int64_t integer(const std::string& sql) const { return std::stoll(text(sql)); }

private:
    sqlite3* db_ = nullptr;
    fs::path path_;
};

/// Shape of a demo database.
struct DemoSpec {
    int customers = 300;
    int orders = 3000;
    int payload_bytes = 200; // random blob per order; keep < ~1000 so there are no overflow pages
    int page_size = 0;       // 0 = SQLite's default
    bool wal = false;
    std::string tag = "demo"; // goes into the text columns, so two demo databases differ
};

/// Creates a database at `path` with two related tables, a side table, two indexes, a view and a
/// trigger, filled per `spec`. The connection is closed before returning.
inline void create_demo_db(const fs::path& path, const DemoSpec& spec = {}) {
    RawDb db(path);
    db.exec("PRAGMA synchronous=OFF");
    if (spec.page_size > 0) db.exec("PRAGMA page_size=" + std::to_string(spec.page_size));
    if (spec.wal) {
        if (db.text("PRAGMA journal_mode=WAL") != "wal") throw std::runtime_error("test: cannot enable WAL on " + path.string());
    }
    const std::string tag = spec.tag;
    db.exec("BEGIN");
    db.exec(R"sql(
        CREATE TABLE customers(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL UNIQUE,
            balance REAL NOT NULL DEFAULT 0);
        CREATE TABLE orders(
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            amount_cents INTEGER NOT NULL,
            note TEXT,
            payload BLOB);
        CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT NOT NULL);
        CREATE TABLE counters(name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX orders_by_customer ON orders(customer_id, amount_cents);
        CREATE INDEX customers_by_name ON customers(name);
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount_cents > 90000;
        CREATE TRIGGER orders_audit AFTER INSERT ON orders WHEN NEW.amount_cents > 99000
        BEGIN INSERT INTO audit(what) VALUES ('big order ' || NEW.id); END;
    )sql");
    db.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " + std::to_string(spec.customers) +
            ") INSERT INTO customers SELECT i, '" + tag + " customer ' || i, '" + tag +
            ".' || i || '@example.com', (i * 37 % 1000) / 10.0 FROM n");
    db.exec("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " + std::to_string(spec.orders) +
            ") INSERT INTO orders(id, customer_id, amount_cents, note, payload) SELECT i, 1 + (i * 7919) % " +
            std::to_string(spec.customers) + ", (i * 104729) % 100000, '" + tag + " note ' || hex(i * 31), randomblob(" +
            std::to_string(spec.payload_bytes) + ") FROM n");
    db.exec("INSERT INTO counters VALUES ('orders', (SELECT count(*) FROM orders))");
    db.exec("COMMIT");
}

/// Row count and a digest (FNV-1a over every column of every row, in rowid order) of one table.
struct TableDigest {
    std::int64_t rows = 0;
    std::uint64_t hash = 0;
    friend bool operator==(const TableDigest&, const TableDigest&) = default;
};

/// Everything a database holds that a backup must preserve: its schema and each table's digest.
struct Fingerprint {
    std::vector<std::string> schema;            // "type|name|tbl_name|sql", sorted
    std::map<std::string, TableDigest> tables;  // by table name
    friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
};

inline std::ostream& operator<<(std::ostream& out, const Fingerprint& f) {
    out << "{schema: " << f.schema.size() << " entries; tables:";
    for (const auto& [name, d] : f.tables) out << " " << name << "=" << d.rows << " rows/#" << std::hex << d.hash << std::dec;
    return out << "}";
}

inline TableDigest table_digest(sqlite3* db, const std::string& table, bool without_rowid) {
    TableDigest digest;
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](const void* data, std::size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < n; ++i) {
            h ^= p[i];
            h *= 1099511628211ULL;
        }
    };
    // WITHOUT ROWID tables (all with a primary key here) are ordered by their first column.
    const std::string sql = "SELECT * FROM \"" + table + "\" ORDER BY " + (without_rowid ? "1" : "rowid");
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK)
        throw std::runtime_error(std::string("test: cannot digest ") + table + ": " + sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ++digest.rows;
        for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
            const int type = sqlite3_column_type(stmt, i);
            mix(&type, sizeof type);
            switch (type) {
            case SQLITE_INTEGER: {
                const auto v = sqlite3_column_int64(stmt, i);
                mix(&v, sizeof v);
                break;
            }
            case SQLITE_FLOAT: {
                const double v = sqlite3_column_double(stmt, i);
                mix(&v, sizeof v);
                break;
            }
            case SQLITE_TEXT:
            case SQLITE_BLOB: {
                const void* p = sqlite3_column_blob(stmt, i);
                const int n = sqlite3_column_bytes(stmt, i);
                mix(&n, sizeof n);
                if (n > 0) mix(p, static_cast<std::size_t>(n));
                break;
            }
            default: break;
            }
        }
    }
    const std::string error = sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) throw std::runtime_error("test: digesting " + table + " failed: " + error);
    digest.hash = h;
    return digest;
}

/// Returns the fingerprint of the database behind `db`.
inline Fingerprint fingerprint(sqlite3* db) {
    Fingerprint f;
    sqlite3_stmt* stmt = nullptr;
    const char* sql = "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name";
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK)
        throw std::runtime_error(std::string("test: cannot read the schema: ") + sqlite3_errmsg(db));
    std::vector<std::pair<std::string, bool>> tables; // name, WITHOUT ROWID
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        std::string entry;
        for (int i = 0; i < 4; ++i) {
            const auto* t = sqlite3_column_text(stmt, i);
            entry += (i == 0 ? "" : "|") + std::string(t != nullptr ? reinterpret_cast<const char*>(t) : "");
        }
        f.schema.push_back(entry);
        const std::string type = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
        const std::string name = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1));
        const auto* create = sqlite3_column_text(stmt, 3);
        const bool without_rowid =
            create != nullptr && std::strstr(reinterpret_cast<const char*>(create), "WITHOUT ROWID") != nullptr;
        if (type == "table" && name.rfind("sqlite_", 0) != 0) tables.emplace_back(name, without_rowid);
    }
    sqlite3_finalize(stmt);
    for (const auto& [name, without_rowid] : tables) f.tables[name] = table_digest(db, name, without_rowid);
    return f;
}

/// Returns the fingerprint of the database file at `path` (opened read-only).
inline Fingerprint fingerprint(const fs::path& path) { return fingerprint(RawDb::read_only(path).handle()); }

/// Returns "ok" or the problems `PRAGMA integrity_check` lists (or the error it raised).
inline std::string integrity_check(const fs::path& path) {
    try {
        const auto rows = RawDb::read_only(path).rows("PRAGMA integrity_check");
        std::string out;
        for (const auto& r : rows) out += (out.empty() ? "" : "\n") + r.front();
        return out;
    } catch (const std::exception& e) {
        return std::string("error: ") + e.what();
    }
}

/// Returns the whole content of a file (empty if it cannot be read).
inline std::string file_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const fs::path& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("test: cannot write " + path.string());
}

/// Returns the names of the entries of `dir`, sorted.
inline std::vector<std::string> dir_entries(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

/// Returns the entries of `dir` that look like backup temp files (".<name>.tmp-XXXXXX" and
/// SQLite's companions of them).
inline std::vector<std::string> temp_files(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& name : dir_entries(dir))
        if (!name.empty() && name.front() == '.' && name.find(".tmp-") != std::string::npos) out.push_back(name);
    return out;
}

/// Returns `st_mode & 0777` of `path`.
inline unsigned file_mode(const fs::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 0xFFFFu;
    return static_cast<unsigned>(st.st_mode) & 0777u;
}

/// Returns SQLite's header bytes 18 and 19 (file format write/read version: 1 = rollback
/// journal, 2 = WAL).
inline std::pair<int, int> format_versions(const fs::path& path) {
    const std::string bytes = file_bytes(path);
    if (bytes.size() < 100) return {-1, -1};
    return {static_cast<unsigned char>(bytes[18]), static_cast<unsigned char>(bytes[19])};
}

/// Collects every Progress a job's callback receives (callbacks of one job never overlap, but
/// the test thread reads while the job may still report, hence the mutex).
class ProgressLog {
public:
    void add(const connpool::Progress& p) {
        std::lock_guard lock(mu_);
        log_.push_back(p);
    }
    [[nodiscard]] std::vector<connpool::Progress> all() const {
        std::lock_guard lock(mu_);
        return log_;
    }
    [[nodiscard]] connpool::ProgressCallback callback() {
        return [this](const connpool::Progress& p) { add(p); };
    }

private:
    mutable std::mutex mu_;
    std::vector<connpool::Progress> log_;
};

/// Hands a JobHandle from the submitting thread to the job's own callbacks, which may run on
/// the runner's thread before submit() has even returned.
class HandleSlot {
public:
    void set(connpool::JobHandle handle) {
        {
            std::lock_guard lock(mu_);
            handle_ = std::move(handle);
        }
        cv_.notify_all();
    }
    /// Waits (deadlock guard: 60 s) for the handle; an invalid handle if it never came.
    [[nodiscard]] connpool::JobHandle get() const {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::seconds{60}, [&] { return handle_.valid(); });
        return handle_;
    }

private:
    mutable std::mutex mu_;
    mutable std::condition_variable cv_;
    connpool::JobHandle handle_;
};

/// A one-shot flag one thread raises and another waits for (with a deadlock guard).
class Signal {
public:
    void raise() {
        {
            std::lock_guard lock(mu_);
            raised_ = true;
        }
        cv_.notify_all();
    }
    /// Returns whether the flag was raised within `timeout`.
    bool wait(std::chrono::milliseconds timeout = std::chrono::seconds{60}) const {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, timeout, [&] { return raised_; });
    }

private:
    mutable std::mutex mu_;
    mutable std::condition_variable cv_;
    bool raised_ = false;
};

/// How long a test waits for a job before declaring a deadlock; never a speed assertion.
inline constexpr std::chrono::seconds job_deadline{120};

/// Waits for `handle` with the deadlock guard; fails the test (and returns failed) on timeout.
inline connpool::JobState wait_job(const connpool::JobHandle& handle) {
    if (!handle.wait_for(job_deadline)) {
        ADD_FAILURE() << "job did not end within " << job_deadline.count() << " s (deadlock?)";
        handle.cancel();
        return connpool::JobState::failed;
    }
    return handle.wait();
}

} // namespace connpool::testing
