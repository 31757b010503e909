// Overhead of the job layer for a SQLite backup: connpool::JobRunner running
// connpool::sqlite::backup_to() with a progress callback, against a raw sqlite3_backup_step loop
// doing the same I/O with the same step size, in the same binary and run.
// Target (issue): for a database of about 100 MB, connpool's time <= 1.05 x the raw loop's.
//
// Source database: built once and cached between runs in the work directory, as
// backup-source-<MB>mb-v<format>.db (created under a temporary name in one transaction with
// prepared statements, then renamed, so a half-built file is never reused). Four tables with
// six secondary indexes: customers, orders, order_items (WITHOUT ROWID), events (JSON-ish payloads);
// deterministic contents, generated until the file reaches the requested size. Before any
// benchmark runs, the whole file is read once, so both sides read the source from the page cache.
//   CONNPOOL_BENCH_DB_MB   size in MB (10^6 bytes), whole number >= 1; default 100
//   CONNPOOL_BENCH_DIR     work directory; default $TMPDIR/connpool-bench (or /tmp/connpool-bench)
// Backups go to backup-copy-<pid>.db in the same directory (so on the same file system) for
// every benchmark; each is deleted after its iteration, outside the timed region.
//
// Benchmarks (S = pages per step, 256 and 64; time per backup, UseRealTime; bytes_per_second
// is source bytes copied per wall-clock second):
//   BM_Raw/step:S        the baseline, raw_backup() below: what run_backup() does, minus the
//                        job layer and its progress reporting: mkstemp in the destination's
//                        directory, sqlite3_open_v2 + PRAGMA journal_mode=OFF; synchronous=OFF,
//                        sqlite3_backup_init, sqlite3_backup_step(S) until SQLITE_DONE, finish,
//                        PRAGMA journal_mode=DELETE, close, fsync the file, rename, fsync the
//                        directory (run_backup fsyncs the directory too: same I/O on both sides).
//                        The source connection is opened like sqlite::Factory opens it. An idle
//                        second thread exists during the loop (see Bystander), as in any process
//                        with a connpool Pool, so both sides pay the kernel's multi-threaded costs.
//   BM_Connpool/step:S   runner.submit(sqlite::backup_to(dest, {S, overwrite, verify=none}),
//                        callback).wait() on a warm Pool<sqlite::Connection> + JobRunner with
//                        default options (so callbacks are throttled to one per 100 ms, plus
//                        every state change). The callback stores the Progress it gets under a
//                        mutex, as a UI or monitor would. This pair is the <= 5 % claim.
//   Informational (not part of the claim):
//   BM_RawOneThread/step:S           BM_Raw in a process with no other thread: the kernel's
//                                    single-threaded fast paths (~3-4 % here) that a program
//                                    with a pool never gets; connpool against it is reported too.
//   BM_ConnpoolEveryReport/step:S    the same with RunnerOptions::progress_interval = 0: a
//                                    callback after every step (the worst case of the layer).
//   BM_ConnpoolVerifyPages/step:256  verify = Check::pages (BackupOptions' default: page checksums
//                                    as written, compared with the file read back, + a schema read).
//   BM_ConnpoolVerifyPagesFromStorage/step:256  the same, read back from the device
//                                    (BackupOptions::verify_from_storage).
//   BM_ConnpoolVerifyQuick/step:256  verify = Check::quick (the copy is quick_check-ed).
//   BM_ConnpoolVerifyIntegrity/step:256  verify = Check::integrity (the default before issue 8).
//   BM_SqliteCliBackup/step:256      `sqlite3 SRC ".backup DEST"`, a whole process per backup (the
//                                    CLI's own step size): the tool users compare with. Issue 8's
//                                    target: BM_ConnpoolVerifyPages <= 1.5 x this, same run.
//   BM_SqliteCliVacuumInto/step:256  `sqlite3 SRC "VACUUM INTO 'DEST'"`, likewise.
//   Diagnostics that take the contender's cost apart (step 256):
//   BM_RawOnWorker       the raw loop, handed to a long-lived thread through a mutex and a
//                        condition variable (JobRunner's hand-off, nothing else of the layer).
//   BM_AdapterInline     sqlite::detail::run_backup() with a ProgressReporter, the same callback
//                        and throttle, called on the benchmark's thread (with a Bystander, as
//                        BM_Raw): the adapter and progress code without runner, pool or hand-off
//                        (uses connpool::detail internals).
// The pool, runner and source connections are created per run (one repetition) outside the
// timed loop, and every run makes one untimed backup first (see timed_backups), so the timed
// ones meet a warm, idle runner and a source connection with its page cache, as in a
// long-lived service.
//
// Each iteration is one whole backup. Unless --benchmark_min_time is given, it defaults to
// 0.001 s here, i.e. one backup per repetition: use --benchmark_repetitions for statistics and
// --benchmark_enable_random_interleaving=true so noise hits all benchmarks alike (compare_backup.py
// does both). Counters, per backup: cpu_ms = CPU time of the whole process (all threads; the
// CPU column is only the calling thread's, ~0 for connpool, whose backup runs on the runner's
// thread), minflt = minor page faults, callbacks = progress callbacks received (connpool
// variants); seq = the order in which runs happened (for pairing neighbours). For the sqlite3
// shell, cpu_ms and minflt include the shell process's own (getrusage RUSAGE_CHILDREN).
//   CONNPOOL_BENCH_MALLOC=fixed    fix glibc's malloc thresholds so freed memory is never given
//                                  back to the kernel (see main()); default: glibc's behaviour
//
//   build/default/benchmarks/backup_benchmark --benchmark_repetitions=10
//       --benchmark_enable_random_interleaving=true   (one command line)
//   python3 benchmarks/compare_backup.py build/default/benchmarks/backup_benchmark [reps]

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <malloc.h> // mallopt
#include <signal.h>
#include <sys/resource.h> // getrusage
#include <sys/wait.h>     // waitpid
#include <time.h>         // clock_gettime
#include <unistd.h>

#include <sqlite3.h>

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

namespace {

namespace fs = std::filesystem;
namespace sq = connpool::sqlite;

constexpr int kFormat = 1;                       // bump when the generated schema or data change
constexpr int kUserVersion = 0x43500000 + kFormat; // marks a completely built source ("CP")
constexpr const char* kDefaultMinTime = "0.001"; // one backup per repetition

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

std::string errno_text() { return std::strerror(errno); }

// ---- settings ------------------------------------------------------------------------------

struct Settings {
    std::uint64_t db_mb = 100;
    fs::path dir;
};

Settings read_settings() {
    Settings s;
    if (const char* mb = std::getenv("CONNPOOL_BENCH_DB_MB"); mb != nullptr && *mb != '\0') {
        char* end = nullptr;
        errno = 0;
        const unsigned long long value = std::strtoull(mb, &end, 10);
        if (errno != 0 || end == mb || *end != '\0' || value < 1 || value > 100'000)
            fail(std::string("CONNPOOL_BENCH_DB_MB must be a whole number of MB from 1 to 100000, got '") + mb + "'");
        s.db_mb = value;
    }
    if (const char* dir = std::getenv("CONNPOOL_BENCH_DIR"); dir != nullptr && *dir != '\0') {
        s.dir = dir;
    } else {
        std::error_code ec;
        fs::path tmp = fs::temp_directory_path(ec);
        s.dir = (ec ? fs::path("/tmp") : tmp) / "connpool-bench";
    }
    std::error_code ec;
    fs::create_directories(s.dir, ec);
    if (!fs::is_directory(s.dir)) fail("cannot create the work directory '" + s.dir.string() + "'");
    return s;
}

// ---- small SQLite helpers ------------------------------------------------------------------

struct CloseDb {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, CloseDb>;

struct FinalizeStmt {
    void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, FinalizeStmt>;

[[noreturn]] void fail_sqlite(sqlite3* db, int rc, const std::string& what) {
    fail(what + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) + " (SQLite code " +
         std::to_string(rc) + ")");
}

Db open_db(const fs::path& path, int flags) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    Db db(raw);
    if (rc != SQLITE_OK) fail_sqlite(db.get(), rc, "cannot open '" + path.string() + "'");
    sqlite3_extended_result_codes(db.get(), 1);
    return db;
}

void exec(sqlite3* db, const char* sql) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
        const std::string text = message != nullptr ? message : sqlite3_errstr(rc);
        sqlite3_free(message);
        fail(std::string(sql) + ": " + text);
    }
}

Stmt prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    Stmt stmt(raw);
    if (rc != SQLITE_OK) fail_sqlite(db, rc, std::string("cannot prepare ") + sql);
    return stmt;
}

std::int64_t query_int(sqlite3* db, const char* sql) {
    Stmt stmt = prepare(db, sql);
    const int rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_ROW) return sqlite3_column_int64(stmt.get(), 0);
    if (rc != SQLITE_DONE) fail_sqlite(db, rc, sql);
    return 0;
}

void fsync_path(const fs::path& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
        const std::string text = errno_text();
        if (fd >= 0) ::close(fd);
        fail("cannot fsync '" + path.string() + "': " + text);
    }
    ::close(fd);
}

// ---- the source database: built once, cached on disk -----------------------------------------

struct Source {
    fs::path path;
    std::uint64_t bytes = 0;
    std::uint64_t pages = 0;
    std::int64_t page_size = 0;
    bool built_now = false;
    double build_seconds = 0;
};

// splitmix64: fast, deterministic, good enough for test data.
class Rng {
public:
    explicit Rng(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    std::int64_t between(std::int64_t lo, std::int64_t hi) { // inclusive
        return lo + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
    }
    template <class T, std::size_t N>
    const T& pick(const std::array<T, N>& items) {
        return items[static_cast<std::size_t>(next() % N)];
    }

private:
    std::uint64_t state_;
};

constexpr std::array<std::string_view, 16> kFirst{"Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances",
                                                  "Grace", "Hedy", "John", "Ken", "Leslie", "Margaret", "Niklaus",
                                                  "Radia", "Tim"};
constexpr std::array<std::string_view, 16> kLast{"Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra",
                                                 "Allen", "Hopper", "Lamarr", "Backus", "Thompson", "Lamport",
                                                 "Hamilton", "Wirth", "Perlman", "Berners-Lee"};
constexpr std::array<std::string_view, 8> kDomains{"example.com", "example.org", "mail.example.net", "corp.example",
                                                   "example.de", "example.fr", "example.co.uk", "example.io"};
constexpr std::array<std::string_view, 10> kCountries{"DE", "FR", "GB", "US", "CA", "JP", "BR", "IN", "AU", "NL"};
constexpr std::array<std::string_view, 5> kStatuses{"pending", "paid", "shipped", "delivered", "cancelled"};
constexpr std::array<std::string_view, 6> kEventKinds{"created", "payment_authorized", "payment_captured",
                                                      "picked", "shipped", "delivered"};
constexpr std::array<std::string_view, 12> kStreets{"Main Street", "High Street", "Station Road", "Church Lane",
                                                    "Mill Road", "Park Avenue", "Elm Street", "Oak Drive",
                                                    "Lindenstrasse", "Rue de la Paix", "Baker Street", "Queen Street"};
constexpr std::array<std::string_view, 8> kAgents{
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "shop-backend/2.14.3 (+https://example.com/bot)",
    "curl/8.4.0",
    "okhttp/4.12.0",
    "python-requests/2.31.0"};
constexpr std::array<std::string_view, 16> kWords{"gift", "wrap", "please", "leave", "at", "door", "fragile",
                                                  "call", "before", "delivery", "neighbour", "accepts", "parcel",
                                                  "back", "entrance", "thanks"};

std::string hex(std::uint64_t v, int digits) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out(static_cast<std::size_t>(digits), '0');
    for (int i = digits - 1; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = kHex[v & 15];
    return out;
}

void bind_text(sqlite3_stmt* stmt, int index, std::string_view text) {
    sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

void step_done(sqlite3* db, sqlite3_stmt* stmt, const char* what) {
    const int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) fail_sqlite(db, rc, what);
    sqlite3_reset(stmt);
}

// Builds the source database at `temp` until it has at least `target_bytes`.
void build_source(const fs::path& temp, std::uint64_t target_bytes, std::uint64_t db_mb) {
    Db db = open_db(temp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
    // Scratch file until renamed: no journal, no syncs; a big cache so nothing spills mid-build.
    exec(db.get(), "PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
                   "PRAGMA cache_size=-262144; PRAGMA temp_store=MEMORY");
    exec(db.get(), R"sql(
        BEGIN;
        CREATE TABLE customers(
            id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, country TEXT NOT NULL,
            created_at INTEGER NOT NULL, address TEXT NOT NULL);
        CREATE UNIQUE INDEX customers_email ON customers(email);
        CREATE INDEX customers_country ON customers(country, created_at);
        CREATE TABLE orders(
            id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
            created_at INTEGER NOT NULL, status TEXT NOT NULL, total_cents INTEGER NOT NULL,
            currency TEXT NOT NULL, note TEXT);
        CREATE INDEX orders_customer ON orders(customer_id, created_at);
        CREATE INDEX orders_status ON orders(status, created_at);
        CREATE TABLE order_items(
            order_id INTEGER NOT NULL REFERENCES orders(id), line INTEGER NOT NULL, sku TEXT NOT NULL,
            quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL, PRIMARY KEY(order_id, line)) WITHOUT ROWID;
        CREATE INDEX order_items_sku ON order_items(sku);
        CREATE TABLE events(
            id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), at INTEGER NOT NULL,
            kind TEXT NOT NULL, payload TEXT NOT NULL);
        CREATE INDEX events_order ON events(order_id, at);
        CREATE TABLE bench_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    )sql");
    Stmt customer = prepare(db.get(), "INSERT INTO customers VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    Stmt order = prepare(db.get(), "INSERT INTO orders VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    Stmt item = prepare(db.get(), "INSERT INTO order_items VALUES(?1, ?2, ?3, ?4, ?5)");
    Stmt event = prepare(db.get(), "INSERT INTO events VALUES(?1, ?2, ?3, ?4, ?5)");
    Stmt page_count = prepare(db.get(), "PRAGMA page_count");

    Rng rng(20240607);
    std::int64_t order_id = 0, event_id = 0;
    const std::int64_t epoch = 1'600'000'000;
    std::string text;
    for (std::int64_t c = 1;; ++c) {
        if (c % 32 == 0) {
            if (sqlite3_step(page_count.get()) != SQLITE_ROW) fail_sqlite(db.get(), SQLITE_ERROR, "PRAGMA page_count");
            const auto pages = static_cast<std::uint64_t>(sqlite3_column_int64(page_count.get(), 0));
            sqlite3_reset(page_count.get());
            if (pages * 4096 >= target_bytes) break;
        }
        const std::string_view first = rng.pick(kFirst), last = rng.pick(kLast);
        const std::int64_t joined = epoch + rng.between(0, 100'000'000);
        sqlite3_bind_int64(customer.get(), 1, c);
        text.assign(first).append(" ").append(last);
        bind_text(customer.get(), 2, text);
        text.assign(first).append(".").append(last).append(".").append(hex(rng.next(), 6)).append(std::to_string(c));
        text.append("@").append(rng.pick(kDomains));
        std::transform(text.begin(), text.end(), text.begin(), [](char ch) {
            return static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        });
        bind_text(customer.get(), 3, text);
        bind_text(customer.get(), 4, rng.pick(kCountries));
        sqlite3_bind_int64(customer.get(), 5, joined);
        text.assign(std::to_string(rng.between(1, 250))).append(" ").append(rng.pick(kStreets)).append(", ");
        text.append(std::to_string(rng.between(10000, 99999))).append(" City ").append(hex(rng.next(), 4));
        bind_text(customer.get(), 6, text);
        step_done(db.get(), customer.get(), "insert customer");

        const std::int64_t orders = rng.between(1, 9);
        for (std::int64_t o = 0; o < orders; ++o) {
            const std::int64_t oid = ++order_id;
            const std::int64_t placed = joined + rng.between(0, 50'000'000);
            const std::int64_t lines = rng.between(1, 6);
            std::int64_t total = 0;
            for (std::int64_t l = 1; l <= lines; ++l) {
                const std::int64_t qty = rng.between(1, 5), price = rng.between(99, 49'999);
                total += qty * price;
                sqlite3_bind_int64(item.get(), 1, oid);
                sqlite3_bind_int64(item.get(), 2, l);
                text.assign("SKU-").append(hex(rng.next() % 50'000, 5)).append("-").append(rng.pick(kCountries));
                bind_text(item.get(), 3, text);
                sqlite3_bind_int64(item.get(), 4, qty);
                sqlite3_bind_int64(item.get(), 5, price);
                step_done(db.get(), item.get(), "insert order item");
            }
            sqlite3_bind_int64(order.get(), 1, oid);
            sqlite3_bind_int64(order.get(), 2, c);
            sqlite3_bind_int64(order.get(), 3, placed);
            bind_text(order.get(), 4, rng.pick(kStatuses));
            sqlite3_bind_int64(order.get(), 5, total);
            bind_text(order.get(), 6, rng.next() % 3 == 0 ? "USD" : "EUR");
            if (rng.next() % 4 == 0) {
                text.clear();
                for (std::int64_t w = rng.between(3, 12); w > 0; --w) text.append(rng.pick(kWords)).append(" ");
                bind_text(order.get(), 7, text);
            } else {
                sqlite3_bind_null(order.get(), 7);
            }
            step_done(db.get(), order.get(), "insert order");

            std::int64_t at = placed;
            for (std::int64_t e = rng.between(1, 6); e > 0; --e) {
                at += rng.between(60, 200'000);
                sqlite3_bind_int64(event.get(), 1, ++event_id);
                sqlite3_bind_int64(event.get(), 2, oid);
                sqlite3_bind_int64(event.get(), 3, at);
                const std::string_view kind = rng.pick(kEventKinds);
                bind_text(event.get(), 4, kind);
                text.assign(R"({"kind":")").append(kind).append(R"(","ip":"10.)");
                text.append(std::to_string(rng.between(0, 255))).append(".").append(std::to_string(rng.between(0, 255)));
                text.append(".").append(std::to_string(rng.between(1, 254))).append(R"(","agent":")");
                text.append(rng.pick(kAgents)).append(R"(","request_id":")").append(hex(rng.next(), 16));
                text.append(hex(rng.next(), 16)).append(R"(","amount_cents":)").append(std::to_string(total)).append("}");
                bind_text(event.get(), 5, text);
                step_done(db.get(), event.get(), "insert event");
            }
        }
    }
    const std::string meta = "INSERT INTO bench_meta VALUES('format', '" + std::to_string(kFormat) +
                             "'), ('db_mb', '" + std::to_string(db_mb) + "')";
    exec(db.get(), meta.c_str());
    exec(db.get(), "ANALYZE");
    exec(db.get(), ("PRAGMA user_version=" + std::to_string(kUserVersion)).c_str());
    exec(db.get(), "COMMIT");
    customer.reset();
    order.reset();
    item.reset();
    event.reset();
    page_count.reset();
    if (const int rc = sqlite3_close(db.release()); rc != SQLITE_OK) fail_sqlite(nullptr, rc, "closing the new source");
    fsync_path(temp, O_RDONLY);
}

// Returns the source's page count and size if `path` is a completely built source of `db_mb` MB.
bool valid_source(const fs::path& path, std::uint64_t db_mb, Source& out) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) return false;
    try {
        Db db = open_db(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
        if (query_int(db.get(), "PRAGMA user_version") != kUserVersion) return false;
        if (query_int(db.get(), "SELECT CAST(value AS INTEGER) FROM bench_meta WHERE key = 'db_mb'") !=
            static_cast<std::int64_t>(db_mb))
            return false;
        out.pages = static_cast<std::uint64_t>(query_int(db.get(), "PRAGMA page_count"));
        out.page_size = query_int(db.get(), "PRAGMA page_size");
    } catch (const std::exception&) {
        return false;
    }
    out.path = path;
    out.bytes = out.pages * static_cast<std::uint64_t>(out.page_size);
    return out.bytes == size && out.bytes >= db_mb * 1'000'000;
}

// Reads the whole file once, so it is in the page cache before anything is timed. (A small
// buffer: one of 128 KiB or more would be mmapped, and freeing it would raise glibc's malloc
// thresholds, changing how the benchmarks' own memory behaves.)
void warm_page_cache(const fs::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot read '" + path.string() + "': " + errno_text());
    std::vector<char> buffer(64 * 1024);
    while (::read(fd, buffer.data(), buffer.size()) > 0) {
    }
    ::close(fd);
}

// Files this benchmark leaves behind if killed: "backup-copy-<pid>.db", the adapter's and the
// baseline's ".backup-copy-<pid>.db.tmp-XXXXXX", and ".build-<pid>-backup-source-...". Removes
// those of processes that no longer exist.
void sweep_stale_files(const fs::path& dir) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const std::string name = entry.path().filename().string();
        std::size_t at = std::string::npos;
        for (std::string_view prefix : {"backup-copy-", ".backup-copy-", ".build-"})
            if (name.starts_with(prefix)) at = prefix.size();
        if (at == std::string::npos) continue;
        const long pid = std::strtol(name.c_str() + at, nullptr, 10);
        if (pid <= 0 || pid == static_cast<long>(::getpid())) continue;
        if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(entry.path(), ec);
    }
}

Source prepare_source(const Settings& settings) {
    const fs::path path =
        settings.dir / ("backup-source-" + std::to_string(settings.db_mb) + "mb-v" + std::to_string(kFormat) + ".db");
    Source source;
    if (!valid_source(path, settings.db_mb, source)) {
        std::fprintf(stderr, "backup_benchmark: building %s (%llu MB, once; reused by later runs)...\n",
                     path.c_str(), static_cast<unsigned long long>(settings.db_mb));
        const auto start = std::chrono::steady_clock::now();
        const fs::path temp = settings.dir / (".build-" + std::to_string(::getpid()) + "-" + path.filename().string());
        std::error_code ec;
        fs::remove(temp, ec);
        try {
            build_source(temp, settings.db_mb * 1'000'000, settings.db_mb);
        } catch (...) {
            fs::remove(temp, ec);
            throw;
        }
        fs::rename(temp, path); // atomic: another process building the same file meanwhile is harmless
        fsync_path(settings.dir, O_RDONLY | O_DIRECTORY);
        if (!valid_source(path, settings.db_mb, source)) fail("the new source '" + path.string() + "' is not valid");
        source.built_now = true;
        source.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::fprintf(stderr, "backup_benchmark: built in %.1f s\n", source.build_seconds);
    }
    warm_page_cache(path);
    return source;
}

// ---- shared by all benchmarks --------------------------------------------------------------

Source g_source;
fs::path g_dest;     // backup-copy-<pid>.db in the work directory
double g_seq = 0;    // runs so far (every benchmark function call), for the seq counter

// Process-wide CPU time (all threads: connpool's backup runs on the runner's thread, so the CPU
// column of Google Benchmark, which is the calling thread's, shows ~0 for it) and minor page
// faults over the timed part of each iteration; reported per backup.
class Probe {
public:
    void begin() { read(cpu0_, faults0_); }
    void end() {
        double cpu;
        long faults;
        read(cpu, faults);
        cpu_ms_ += cpu - cpu0_;
        faults_ += static_cast<double>(faults - faults0_);
        ++n_;
    }
    void report(benchmark::State& state) const {
        if (n_ == 0) return;
        state.counters["cpu_ms"] = cpu_ms_ / n_;
        state.counters["minflt"] = faults_ / n_;
    }

private:
    static void read(double& cpu_ms, long& faults) {
        rusage usage{};
        ::getrusage(RUSAGE_SELF, &usage);
        faults = usage.ru_minflt;
        timespec ts{};
        ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        cpu_ms = static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
        // Plus the CPU time of the child processes waited for (the sqlite3 shell runs), so the
        // CLI's cpu_ms is the whole tool's, as connpool's is.
        rusage children{};
        ::getrusage(RUSAGE_CHILDREN, &children);
        faults += children.ru_minflt;
        const auto ms = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e3 + t.tv_usec / 1e3; };
        cpu_ms += ms(children.ru_utime) + ms(children.ru_stime);
    }
    double cpu0_ = 0, cpu_ms_ = 0, faults_ = 0;
    long faults0_ = 0;
    int n_ = 0;
};

// Source connections are opened the way sqlite::Factory opens them (default FactoryOptions).
constexpr int kSourceFlags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;

// Checks the copy (untimed) and deletes it; returns what is wrong, if anything. (VACUUM INTO
// writes a rebuilt database, whose size differs from the source's.)
std::string check_and_remove_copy(bool same_size = true) {
    std::error_code ec;
    const auto size = fs::file_size(g_dest, ec);
    std::string problem;
    if (ec) {
        problem = "no backup at '" + g_dest.string() + "': " + ec.message();
    } else if (same_size && size != g_source.bytes) {
        problem = "the backup has " + std::to_string(size) + " bytes, the source " + std::to_string(g_source.bytes);
    }
    fs::remove(g_dest, ec);
    // Let the file system settle (the copy's deletion, its journal commit and any discards)
    // before the next timed backup, so one iteration's clean-up does not slow the next.
    if (const int fd = ::open(g_dest.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
        ::syncfs(fd);
        ::close(fd);
    }
    return problem;
}

// ---- the baseline --------------------------------------------------------------------------

// What sqlite::detail::run_backup() does for an absent destination with overwrite = true and
// verify = none, without the job layer: no ProgressReporter (no stop checks, no page counting,
// no progress), no option checks, no error-message strings built up front, no pre-flight
// checks of the destination. Returns the number of sqlite3_backup_step calls.
int raw_backup(sqlite3* source, const fs::path& dest, int pages_per_step) {
    const fs::path dir = dest.parent_path();
    std::string temp = (dir / ("." + dest.filename().string() + ".tmp-XXXXXX")).string();
    const int fd = ::mkstemp(temp.data());
    if (fd < 0) fail("mkstemp in '" + dir.string() + "': " + errno_text());
    ::close(fd);
    int steps = 0;
    try {
        Db db = open_db(temp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        exec(db.get(), "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF");
        sqlite3_backup* backup = sqlite3_backup_init(db.get(), "main", source, "main");
        if (backup == nullptr) fail_sqlite(db.get(), sqlite3_errcode(db.get()), "sqlite3_backup_init");
        int rc;
        do {
            rc = sqlite3_backup_step(backup, pages_per_step);
            ++steps;
        } while (rc == SQLITE_OK);
        const int finish_rc = sqlite3_backup_finish(backup);
        if (rc != SQLITE_DONE) fail_sqlite(db.get(), rc, "sqlite3_backup_step");
        if (finish_rc != SQLITE_OK) fail_sqlite(db.get(), finish_rc, "sqlite3_backup_finish");
        exec(db.get(), "PRAGMA journal_mode=DELETE");
        if (const int close_rc = sqlite3_close(db.release()); close_rc != SQLITE_OK)
            fail_sqlite(nullptr, close_rc, "closing the copy");
        fsync_path(temp, O_RDONLY);
        if (::rename(temp.c_str(), dest.c_str()) != 0) fail("rename to '" + dest.string() + "': " + errno_text());
    } catch (...) {
        std::error_code ec;
        fs::remove(temp, ec);
        throw;
    }
    fsync_path(dir, O_RDONLY | O_DIRECTORY);
    return steps;
}

// The timed loop every benchmark shares: `backup()` (timed) makes one copy and returns what went
// wrong, if anything; `check()` (untimed) looks at the outcome; then the copy is checked and
// deleted, untimed. One untimed backup comes first, so the timed ones find what a long-lived
// service has after its first backup: the source connection's page cache filled (allocated
// from the arena of the thread that runs backups), the runner's thread warm.
template <class Backup, class Check>
void timed_backups(benchmark::State& state, Backup&& backup, Check&& check, bool same_size = true) {
    {
        std::string problem;
        try {
            problem = backup();
        } catch (const std::exception& e) {
            problem = e.what();
        }
        if (problem.empty()) problem = check();
        if (problem.empty()) problem = check_and_remove_copy(same_size);
        if (!problem.empty()) {
            state.SkipWithError(("warm-up backup: " + problem).c_str());
            return;
        }
    }
    Probe probe;
    for (auto _ : state) {
        probe.begin();
        std::string problem;
        try {
            problem = backup();
        } catch (const std::exception& e) {
            problem = e.what();
        }
        probe.end();
        state.PauseTiming();
        if (problem.empty()) problem = check();
        if (problem.empty()) problem = check_and_remove_copy(same_size);
        state.ResumeTiming();
        if (!problem.empty()) {
            state.SkipWithError(problem.c_str());
            break;
        }
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(g_source.bytes));
    probe.report(state);
    state.counters["seq"] = ++g_seq;
}

Db open_source() {
    Db source = open_db(g_source.path, kSourceFlags);
    sqlite3_busy_timeout(source.get(), 5000);
    return source;
}

// An idle thread, blocked on a condition variable for as long as it lives. A process with more
// than one thread pays more in the kernel for every read and write (on Linux, for one, a file
// descriptor table shared by threads makes each pread/pwrite take and drop a reference on the
// file: ~60 ns a call measured here, on ~50k calls per 100 MB backup). Any process that has a
// connpool Pool has other threads (its maintenance thread; the runner's), so the baseline runs
// with one too, unless it is BM_RawOneThread.
class Bystander {
public:
    Bystander() : thread_([this] {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stop_; });
    }) {}
    Bystander(const Bystander&) = delete;
    Bystander& operator=(const Bystander&) = delete;
    ~Bystander() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::thread thread_; // last: starts after the members it uses exist
};

struct RawVariant {
    int pages_per_step = 256;
    bool one_thread = false; // true: no Bystander, the process has only this thread
};

void BM_Raw(benchmark::State& state, RawVariant variant) {
    const int pages_per_step = variant.pages_per_step;
    Db source;
    std::optional<Bystander> bystander;
    try {
        source = open_source();
        if (!variant.one_thread) bystander.emplace();
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    int steps = 0;
    timed_backups(
        state,
        [&] {
            steps = raw_backup(source.get(), g_dest, pages_per_step);
            return std::string();
        },
        [] { return std::string(); });
    state.counters["steps"] = steps;
}

// ---- diagnostics: the contender's cost taken apart ------------------------------------------

// One long-lived thread that runs what it is handed and reports back through a mutex and a
// condition variable: the hand-off JobRunner does, without anything else of the job layer.
class Worker {
public:
    Worker() : thread_([this] { loop(); }) {}
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

    // Runs `task` on the worker and waits for it; returns what it returned.
    std::string run(std::function<std::string()> task) {
        std::unique_lock lock(mutex_);
        task_ = std::move(task);
        done_ = false;
        cv_.notify_all();
        cv_.wait(lock, [&] { return done_; });
        return std::move(result_);
    }

private:
    void loop() {
        std::unique_lock lock(mutex_);
        for (;;) {
            cv_.wait(lock, [&] { return stop_ || task_; });
            if (stop_) return;
            auto task = std::move(task_);
            task_ = nullptr;
            lock.unlock();
            std::string result;
            try {
                result = task();
            } catch (const std::exception& e) {
                result = e.what();
            }
            lock.lock();
            result_ = std::move(result);
            done_ = true;
            cv_.notify_all();
        }
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::function<std::string()> task_;
    std::string result_;
    bool done_ = false;
    bool stop_ = false;
    std::thread thread_; // last: starts after the members it uses exist
};

// The raw loop, run on another thread (source connection opened on this one, as the pool does).
void BM_RawOnWorker(benchmark::State& state, int pages_per_step) {
    Db source;
    std::unique_ptr<Worker> worker;
    try {
        source = open_source();
        worker = std::make_unique<Worker>();
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    timed_backups(
        state,
        [&] {
            return worker->run([&] {
                raw_backup(source.get(), g_dest, pages_per_step);
                return std::string();
            });
        },
        [] { return std::string(); });
}

// ---- the contender -------------------------------------------------------------------------

using SqlitePool = connpool::Pool<sq::Connection, sq::Factory>;
using Runner = connpool::JobRunner<SqlitePool>;

// What a progress callback typically does: keep the latest progress for a UI or monitor to read.
struct ProgressBoard {
    std::mutex mutex;
    connpool::Progress latest;
    std::uint64_t callbacks = 0;

    void operator()(const connpool::Progress& p) {
        std::lock_guard lock(mutex);
        latest = p;
        ++callbacks;
    }

    // Untimed, after a backup: was its completion reported? Resets the count.
    std::string check(std::uint64_t& calls) {
        std::lock_guard lock(mutex);
        calls = callbacks;
        callbacks = 0;
        if (latest.state != connpool::JobState::succeeded || latest.done != g_source.pages ||
            latest.total != g_source.pages)
            return "the last progress callback did not show the whole backup done";
        return {};
    }
};

// The adapter's operation with its progress reporting, called on this thread: what the job
// does inside the runner, without the runner, the pool and the thread hand-off. Uses
// connpool::detail::JobControl (the state a JobRunner keeps per job), so it follows connpool's
// internals.
void BM_AdapterInline(benchmark::State& state, int pages_per_step) {
    std::optional<sq::Connection> connection;
    std::optional<Bystander> bystander; // as BM_Raw: the process has another thread
    try {
        connection.emplace(sq::Factory{g_source.path}.create());
        bystander.emplace();
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    const sq::BackupOptions options{.pages_per_step = pages_per_step, .overwrite = true, .verify = sq::Check::none};
    const auto sink = std::make_shared<const connpool::CallbackErrorSink>();
    ProgressBoard board;
    std::uint64_t callbacks = 0;
    std::uint64_t id = 0;
    timed_backups(
        state,
        [&] {
            connpool::detail::JobControl control(++id, g_dest.filename().string(), connpool::JobKind::backup,
                                                 std::ref(board), sink, std::chrono::milliseconds{100});
            control.announce();
            control.start();
            connpool::ProgressReporter reporter(control);
            sq::detail::run_backup(*connection, g_dest, options, reporter);
            control.finish(connpool::JobState::succeeded);
            return std::string();
        },
        [&] { return board.check(callbacks); });
    state.counters["callbacks"] = static_cast<double>(callbacks);
}

struct Variant {
    int pages_per_step = 256;
    sq::Check verify = sq::Check::none;
    bool from_storage = false; // BackupOptions::verify_from_storage
    std::chrono::milliseconds progress_interval{100}; // RunnerOptions' default
};

void BM_Connpool(benchmark::State& state, Variant variant) {
    std::unique_ptr<SqlitePool> pool;
    std::unique_ptr<Runner> runner;
    try {
        pool = std::make_unique<SqlitePool>(sq::Factory{g_source.path}, connpool::PoolOptions{});
        connpool::RunnerOptions options;
        options.progress_interval = variant.progress_interval;
        runner = std::make_unique<Runner>(*pool, std::move(options));
        { auto lease = pool->acquire(); } // the connection is opened here, as BM_Raw's is
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
        return;
    }
    const sq::BackupOptions options{.pages_per_step = variant.pages_per_step,
                                    .overwrite = true,
                                    .verify = variant.verify,
                                    .verify_from_storage = variant.from_storage};
    ProgressBoard board;
    std::uint64_t callbacks = 0;
    timed_backups(
        state,
        [&] {
            const auto handle = runner->submit(sq::backup_to(g_dest, options), std::ref(board));
            if (handle.wait() != connpool::JobState::succeeded) return "backup job: " + handle.error();
            return std::string();
        },
        [&] { return board.check(callbacks); });
    state.counters["callbacks"] = static_cast<double>(callbacks);
    runner.reset();
    pool.reset();
}

// The sqlite3 command-line shell, as a user comparing tools runs it: one whole process per
// backup (`sqlite3 SRC ".backup 'DEST'"` or `sqlite3 SRC "VACUUM INTO 'DEST'"`), timed from fork
// to exit. Neither verifies its copy; .backup writes through a rollback journal with
// synchronous=FULL, VACUUM INTO writes a rebuilt (possibly smaller) file.
std::string run_cli(const std::string& command) {
    const pid_t pid = ::fork();
    if (pid < 0) return std::string("fork: ") + errno_text();
    if (pid == 0) {
        const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null_fd >= 0) ::dup2(null_fd, STDOUT_FILENO);
        ::execlp("sqlite3", "sqlite3", "-batch", g_source.path.c_str(), command.c_str(), static_cast<char*>(nullptr));
        std::_Exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return "the sqlite3 shell is not installed (Debian: sqlite3)";
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "sqlite3 " + command + " failed";
    return {};
}

void BM_SqliteCli(benchmark::State& state, bool vacuum) {
    const std::string dest = g_dest.string();
    const std::string command = vacuum ? "VACUUM INTO '" + dest + "'" : ".backup '" + dest + "'";
    timed_backups(state, [&] { return run_cli(command); }, [] { return std::string(); }, !vacuum);
}

void register_all() {
    const auto add = [](const std::string& name, auto fn, auto arg) {
        benchmark::RegisterBenchmark(name.c_str(), fn, arg)->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    for (const int step : {256, 64}) {
        const std::string s = "/step:" + std::to_string(step);
        add("BM_Raw" + s, BM_Raw, RawVariant{.pages_per_step = step});
        add("BM_RawOneThread" + s, BM_Raw, RawVariant{.pages_per_step = step, .one_thread = true});
        add("BM_Connpool" + s, BM_Connpool, Variant{.pages_per_step = step});
        add("BM_ConnpoolEveryReport" + s, BM_Connpool,
            Variant{.pages_per_step = step, .progress_interval = std::chrono::milliseconds{0}});
    }
    add("BM_RawOnWorker/step:256", BM_RawOnWorker, 256);
    add("BM_AdapterInline/step:256", BM_AdapterInline, 256);
    add("BM_ConnpoolVerifyPages/step:256", BM_Connpool, Variant{.pages_per_step = 256, .verify = sq::Check::pages});
    add("BM_ConnpoolVerifyPagesFromStorage/step:256", BM_Connpool,
        Variant{.pages_per_step = 256, .verify = sq::Check::pages, .from_storage = true});
    add("BM_ConnpoolVerifyQuick/step:256", BM_Connpool, Variant{.pages_per_step = 256, .verify = sq::Check::quick});
    add("BM_ConnpoolVerifyIntegrity/step:256", BM_Connpool,
        Variant{.pages_per_step = 256, .verify = sq::Check::integrity});
    add("BM_SqliteCliBackup/step:256", BM_SqliteCli, false);
    add("BM_SqliteCliVacuumInto/step:256", BM_SqliteCli, true);
}

} // namespace

int main(int argc, char** argv) {
    std::vector<char*> args(argv, argv + argc);
    bool has_min_time = false;
    for (int i = 1; i < argc; ++i)
        if (std::string_view(argv[i]).starts_with("--benchmark_min_time=")) has_min_time = true;
    std::string default_min_time = std::string("--benchmark_min_time=") + kDefaultMinTime;
    if (!has_min_time) args.push_back(default_min_time.data());
    int args_count = static_cast<int>(args.size());
    args.push_back(nullptr);
    benchmark::Initialize(&args_count, args.data());
    if (benchmark::ReportUnrecognizedArguments(args_count, args.data())) return 1;

    // glibc returns freed heap memory to the kernel depending on the process's allocation history
    // (its mmap and trim thresholds adapt as it runs) and on which thread's arena it is in. When
    // it does, a backup page-faults in again the SQLite page cache it allocates (the copy's
    // connection, and a fresh source connection's: up to ~1000 faults, 3-5 ms per 100 MB backup
    // here, seen on the first backup of a new connection or thread, which timed_backups() makes
    // untimed). That is part of what users get, so it stays by default; CONNPOOL_BENCH_MALLOC=fixed
    // fixes the thresholds (freed memory is never trimmed, in any arena) for both sides.
    const char* malloc_mode = std::getenv("CONNPOOL_BENCH_MALLOC");
    const bool fixed_malloc = malloc_mode != nullptr && std::string_view(malloc_mode) == "fixed";
    if (fixed_malloc) {
        ::mallopt(M_MMAP_THRESHOLD, 32 << 20); // the largest glibc allows; implies fixed thresholds
        ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
    }

    try {
        const Settings settings = read_settings();
        sweep_stale_files(settings.dir);
        g_source = prepare_source(settings);
        g_dest = settings.dir / ("backup-copy-" + std::to_string(::getpid()) + ".db");
        std::error_code ec;
        fs::remove(g_dest, ec);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "backup_benchmark: %s\n", e.what());
        return 1;
    }
    benchmark::AddCustomContext("source_db", g_source.path.string());
    benchmark::AddCustomContext("source_bytes", std::to_string(g_source.bytes));
    benchmark::AddCustomContext("source_pages", std::to_string(g_source.pages));
    benchmark::AddCustomContext("page_size", std::to_string(g_source.page_size));
    benchmark::AddCustomContext("sqlite_version", sqlite3_libversion());
    benchmark::AddCustomContext("malloc", fixed_malloc ? "fixed thresholds, no trimming (CONNPOOL_BENCH_MALLOC=fixed)"
                                                       : "glibc default");
    benchmark::AddCustomContext("work_dir", g_dest.parent_path().string());
    if (g_source.built_now) benchmark::AddCustomContext("source_build_seconds", std::to_string(g_source.build_seconds));

    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    std::error_code ec;
    fs::remove(g_dest, ec);
    return 0;
}
