// The main example: online backups of several live SQLite databases at once, through one pool
// smaller than the number of databases, with live progress; then one backup is restored into a
// fresh database and checked against the backup.
//
//   build/default/examples/backup_demo                  # 6 databases x 8 MB, pool of 3
//   build/default/examples/backup_demo --help
//
// How it fits together:
//
//   writer threads ──(one Pool per database, sqlite::Factory)──► orders_N.db   (keep writing)
//   backup jobs ──► JobRunner ──► Pool<WorkerConnection> (max_size = --pool-size)
//                                   └─ a worker opens the job's database, runs sqlite::backup_to
//   restore job ──► JobRunner ──► Pool over restored.db (sqlite::Factory) ─ sqlite::restore_from
//   Monitor thread: snapshot() of both runners every 100 ms ──► ProgressView (terminal or lines)
//
// Why a WorkerConnection: a Pool's connections must be interchangeable, but a sqlite::Connection
// belongs to one database file, and sqlite::backup_to copies its connection's "main" database.
// So the backup pool holds workers that can reach any demo database: each opens (and keeps,
// until a job for another database comes) a sqlite::Connection to the database its job is about.
// The pool then limits how many backups run at once (--pool-size), the JobRunner queues the
// rest, and every job still runs the adapter's own backup body (temp file, fsync, check, rename).

#include <connpool.hpp>
#include <connpool/sqlite.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv> // std::from_chars: strict parsing of flag values
#include <chrono>
#include <csignal> // SIGINT: Ctrl-C cancels the jobs instead of killing the process mid-file
#include <cstdint>
#include <cstdio>
#include <cstdlib> // std::getenv: TERM, NO_COLOR
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <sys/ioctl.h> // TIOCGWINSZ: the terminal's width, so live lines never wrap
#include <unistd.h>    // isatty

#include <sqlite3.h>

#include "progress_view.hpp"

namespace {

namespace fs = std::filesystem;
namespace sqlite = connpool::sqlite;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// ---- command line -----------------------------------------------------------------------------

constexpr std::string_view usage_text = R"(usage: backup_demo [options]

Creates a few demo SQLite databases (once), keeps writing to them while it backs them all up at
once through a connection pool smaller than the number of databases (so jobs queue), shows each
job's progress, then restores one backup into a fresh database and verifies it.

options:
  --databases N       demo databases to create and back up, 1-64 (default 6)
  --size-mb M         size of each demo database in MB, 1-1024 (default 8)
  --pool-size K       connections in the backup pool, 1-64; below N, jobs queue (default 3)
  --out DIR           work folder: databases, backups/, restored.db (default ./connpool-demo)
  --pages-per-step P  pages a backup or restore step copies, 1-1000000 or -1 = all (default 32)
  --pause-ms MS       pause between steps, so there is something to watch; 0 = full speed,
                      at most 10000 (default 40)
  --help              show this text

The databases are reused by later runs with the same --size-mb. Exit status: 0 if every backup,
the restore and its verification succeeded; 1 if anything failed; 2 for a bad option; 130 when
interrupted (Ctrl-C cancels the jobs; their files are left out, never half-written).
)";

struct Settings {
    int databases = 6;
    int size_mb = 8;
    int pool_size = 3;
    fs::path out = "connpool-demo";
    int pages_per_step = 32;
    int pause_ms = 40;
};

/// A bad command line; main() prints it and exits with status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

int parse_int(std::string_view flag, std::string_view text, int min, int max, bool allow_minus_one = false) {
    int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    const bool whole = ec == std::errc{} && end == text.data() + text.size();
    if (!whole || ((value < min || value > max) && !(allow_minus_one && value == -1))) {
        throw UsageError("invalid value '" + std::string(text) + "' for " + std::string(flag) + ": expected a whole number from " +
                         std::to_string(min) + " to " + std::to_string(max) + (allow_minus_one ? ", or -1" : ""));
    }
    return value;
}

/// Returns the settings, or nothing when --help was asked for (the text is printed then).
std::optional<Settings> parse_command_line(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(usage_text.data(), stdout);
            return std::nullopt;
        }
        // Both "--flag value" and "--flag=value".
        std::string_view flag = arg;
        std::optional<std::string_view> value;
        if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
            flag = arg.substr(0, eq);
            value = arg.substr(eq + 1);
        }
        const auto next = [&]() -> std::string_view {
            if (value) return *value;
            if (i + 1 >= argc) throw UsageError("option " + std::string(flag) + " needs a value");
            return argv[++i];
        };
        if (flag == "--databases") {
            s.databases = parse_int(flag, next(), 1, 64);
        } else if (flag == "--size-mb") {
            s.size_mb = parse_int(flag, next(), 1, 1024);
        } else if (flag == "--pool-size") {
            s.pool_size = parse_int(flag, next(), 1, 64);
        } else if (flag == "--pages-per-step") {
            s.pages_per_step = parse_int(flag, next(), 1, 1'000'000, /*allow_minus_one=*/true);
        } else if (flag == "--pause-ms") {
            s.pause_ms = parse_int(flag, next(), 0, 10'000);
        } else if (flag == "--out") {
            const auto dir = next();
            if (dir.empty()) throw UsageError("invalid value '' for --out: expected a folder");
            s.out = fs::path(dir);
        } else {
            throw UsageError("unknown option '" + std::string(arg) + "'");
        }
    }
    return s;
}

// ---- Ctrl-C ---------------------------------------------------------------------------------

// A lock-free atomic is safe to set from a signal handler and to read from any thread.
std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_interrupt(int signal_number) {
    interrupted.store(true);
    std::signal(signal_number, SIG_DFL); // a second Ctrl-C kills at once
}

/// Thrown where the program notices an interrupt outside the jobs (e.g. while creating data).
struct Interrupted {};

// ---- a little SQLite C API help -------------------------------------------------------------------

/// A prepared statement (finalized on destruction); errors throw, naming the SQL.
class Statement {
public:
    Statement(sqlite3* db, const char* sql) : db_(db), sql_(sql) {
        check(sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr));
    }
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement() { sqlite3_finalize(stmt_); }

    Statement& bind(int index, std::int64_t value) {
        check(sqlite3_bind_int64(stmt_, index, value));
        return *this;
    }
    Statement& bind(int index, std::string_view text) {
        check(sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
        return *this;
    }

    /// Steps once: true with a row to read, false when done.
    bool step() {
        const int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc != SQLITE_DONE) check(rc);
        return false;
    }

    /// Runs a statement that returns no rows, and resets it for the next bindings.
    void run() {
        while (step()) {
        }
        sqlite3_reset(stmt_);
    }

    [[nodiscard]] sqlite3_stmt* get() const noexcept { return stmt_; }

private:
    void check(int rc) const {
        if (rc == SQLITE_OK) return;
        throw std::runtime_error(std::string("SQL failed (") + sqlite3_errmsg(db_) + "): " + sql_);
    }

    sqlite3* db_;
    const char* sql_;
    sqlite3_stmt* stmt_ = nullptr;
};

// ---- demo data ---------------------------------------------------------------------------------

// Bump when the generated schema or data changes, so existing work folders are rebuilt.
constexpr std::int64_t demo_format = 1;

// How every demo database connection is opened: WAL, so the writers and the backups' readers
// don't block each other (an online backup of a WAL database reads a snapshot per step).
const sqlite::FactoryOptions demo_db_options{.busy_timeout = 5s, .wal = true};

constexpr const char* demo_schema = R"sql(
CREATE TABLE customers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE,
    country     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    placed_at   INTEGER NOT NULL,
    status      TEXT NOT NULL,
    total_cents INTEGER NOT NULL
);
CREATE TABLE order_items (
    id          INTEGER PRIMARY KEY,
    order_id    INTEGER NOT NULL REFERENCES orders(id),
    sku         TEXT NOT NULL,
    quantity    INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    note        TEXT
);
CREATE INDEX customers_by_country ON customers(country);
CREATE INDEX orders_by_customer   ON orders(customer_id);
CREATE INDEX orders_by_time       ON orders(placed_at);
CREATE INDEX items_by_order       ON order_items(order_id);
CREATE INDEX items_by_sku         ON order_items(sku);
CREATE TABLE demo_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql";

/// Random but reproducible shop data (one generator per database, seeded by its number).
class ShopData {
public:
    explicit ShopData(std::uint64_t seed) : rng_(seed) {}

    std::int64_t between(std::int64_t lo, std::int64_t hi) {
        return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng_);
    }

    template <std::size_t N>
    std::string_view pick(const std::array<std::string_view, N>& options) {
        return options[static_cast<std::size_t>(between(0, N - 1))];
    }

    std::string name() { return std::string(pick(first_names)) + " " + std::string(pick(last_names)); }
    std::string_view country() { return pick(countries); }
    std::string_view status() { return pick(statuses); }
    std::string sku() { return "SKU-" + std::to_string(between(10000, 14999)); }

    /// A free-text note of 0-12 words: the variable-length column that gives rows realistic bulk.
    std::string note() {
        std::string text;
        for (auto n = between(0, 12); n > 0; --n) text += std::string(pick(words)) + (n > 1 ? " " : "");
        return text;
    }

private:
    static constexpr std::array<std::string_view, 12> first_names{
        "Ada", "Alan", "Barbara", "Dennis", "Edsger", "Frances", "Grace", "Ken", "Leslie", "Margaret", "Niklaus", "Radia"};
    static constexpr std::array<std::string_view, 12> last_names{
        "Lovelace", "Turing", "Liskov", "Ritchie", "Dijkstra", "Allen", "Hopper", "Thompson", "Lamport", "Hamilton", "Wirth", "Perlman"};
    static constexpr std::array<std::string_view, 10> countries{"DE", "FR", "GB", "US", "CA", "JP", "BR", "IN", "NL", "SE"};
    static constexpr std::array<std::string_view, 5> statuses{"placed", "paid", "shipped", "delivered", "returned"};
    static constexpr std::array<std::string_view, 16> words{
        "gift", "wrap", "fragile", "leave", "at", "door", "express", "please", "call", "before", "delivery", "blue",
        "large", "spare", "refill", "thanks"};

    std::mt19937_64 rng_;
};

/// Places orders: one order row and its 1-`max_items` items, with prepared statements reused
/// across orders (preparing costs more than inserting a row).
class OrderWriter {
public:
    explicit OrderWriter(sqlite3* db)
        : db_(db),
          order_(db, "INSERT INTO orders (customer_id, placed_at, status, total_cents) VALUES (?, ?, ?, ?)"),
          item_(db, "INSERT INTO order_items (order_id, sku, quantity, price_cents, note) VALUES (?, ?, ?, ?, ?)") {}

    /// Inserts one order for a random customer among ids 1-`customers`.
    void place(ShopData& data, std::int64_t customers, std::int64_t placed_at, int max_items) {
        struct Item {
            std::int64_t quantity, price;
        };
        std::array<Item, 8> items{};
        const auto count = static_cast<std::size_t>(data.between(1, std::min(max_items, 8)));
        std::int64_t total = 0;
        for (std::size_t i = 0; i < count; ++i) {
            items[i] = {data.between(1, 5), data.between(199, 19999)};
            total += items[i].quantity * items[i].price;
        }
        order_.bind(1, data.between(1, customers)).bind(2, placed_at).bind(3, data.status()).bind(4, total).run();
        const std::int64_t order_id = sqlite3_last_insert_rowid(db_);
        for (std::size_t i = 0; i < count; ++i)
            item_.bind(1, order_id).bind(2, data.sku()).bind(3, items[i].quantity).bind(4, items[i].price).bind(5, data.note()).run();
    }

private:
    sqlite3* db_;
    Statement order_;
    Statement item_;
};

/// Creates the demo database `db` of about `size_mb` MB, calling `progress(fraction)` as it
/// grows. It is built under a temporary name and renamed at the end, so an interrupted run never
/// leaves a half-built database that a later run would reuse.
void create_demo_database(const fs::path& db, int size_mb, std::uint64_t seed, const std::function<void(double)>& progress) {
    const fs::path temp = db.parent_path() / ("." + db.filename().string() + ".creating");
    const auto remove_temp = [&] {
        for (const char* suffix : {"", "-journal", "-wal", "-shm"}) fs::remove(temp.string() + suffix);
    };
    remove_temp();
    try {
        sqlite::Connection c = sqlite::Factory{temp}.create();
        // A throwaway file until the rename: no journal, no syncs, a big cache; the data goes in
        // as one transaction, indexes maintained as rows arrive (as in a live database).
        c.exec("PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
               "PRAGMA cache_size = -65536;");
        c.exec(demo_schema);
        c.exec("BEGIN");
        ShopData data(seed);
        Statement customer(c.handle(), "INSERT INTO customers (name, email, country, created_at) VALUES (?, ?, ?, ?)");
        OrderWriter orders(c.handle());
        const std::int64_t target_bytes = std::int64_t{size_mb} * 1024 * 1024;
        const std::int64_t page_size = c.query_int("PRAGMA page_size");
        std::int64_t customers = 0;
        std::int64_t when = 1'600'000'000; // seconds since 1970: the shop opened in September 2020
        for (;;) {
            // One batch: 20 new customers, 200 orders among all customers so far.
            for (int i = 0; i < 20; ++i) {
                ++customers;
                const std::string name = data.name();
                std::string email = name;
                std::replace(email.begin(), email.end(), ' ', '.');
                email += "." + std::to_string(customers) + "@example.com";
                customer.bind(1, name).bind(2, email).bind(3, data.country()).bind(4, when).run();
            }
            for (int i = 0; i < 200; ++i) orders.place(data, customers, when += data.between(1, 600), 6);
            const std::int64_t bytes = c.query_int("PRAGMA page_count") * page_size;
            progress(std::min(1.0, static_cast<double>(bytes) / static_cast<double>(target_bytes)));
            if (bytes >= target_bytes) break;
            if (interrupted.load()) throw Interrupted{};
        }
        c.exec("INSERT INTO demo_meta (key, value) VALUES ('format', " + std::to_string(demo_format) + "), ('size_mb', " +
               std::to_string(size_mb) + ")");
        c.exec("COMMIT");
        c.exec("PRAGMA journal_mode = WAL"); // recorded in the file: every later connection uses WAL
    } catch (...) {
        remove_temp();
        throw;
    }
    fs::rename(temp, db);
}

/// Returns whether `db` is a demo database built by this program with `size_mb` (reuse it), false
/// if it does not exist or is one of ours of another size or format (rebuild it). Throws if the
/// file is something else, which this program must not overwrite.
bool reusable_demo_database(const fs::path& db, int size_mb) {
    if (!fs::exists(db)) return false;
    try {
        sqlite::Connection c = sqlite::Factory{db, {.open_flags = SQLITE_OPEN_READWRITE}}.create();
        return c.query_int("SELECT value FROM demo_meta WHERE key = 'format'") == demo_format &&
               c.query_int("SELECT value FROM demo_meta WHERE key = 'size_mb'") == size_mb;
    } catch (const sqlite::Error&) {
        throw std::runtime_error("'" + db.string() +
                                 "' exists but is not a demo database made by this program; "
                                 "remove it or choose another --out");
    }
}

void remove_database_files(const fs::path& db) {
    for (const char* suffix : {"", "-journal", "-wal", "-shm"}) fs::remove(db.string() + suffix);
}

// ---- the application's own traffic ------------------------------------------------------------------

/// One database's "application": a thread that keeps placing orders and shipping old ones in
/// short transactions, through the database's own pool, until stopped.
struct Writer {
    fs::path db;
    connpool::Pool<sqlite::Connection, sqlite::Factory> pool;
    std::atomic<bool> stop{false};
    std::uint64_t transactions = 0; // written by the thread; read after join()
    std::string error;              // likewise
    std::thread thread;

    Writer(fs::path path, std::uint64_t seed)
        : db(std::move(path)), pool(sqlite::Factory{db, demo_db_options}, connpool::PoolOptions{.max_size = 2}) {
        thread = std::thread([this, seed] { run(seed); });
    }

    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    ~Writer() { join(); }

    /// Stops the thread and waits for it. Idempotent.
    void join() {
        stop.store(true);
        if (thread.joinable()) thread.join();
    }

private:
    void run(std::uint64_t seed) {
        ShopData data(seed);
        try {
            while (!stop.load()) {
                {
                    auto lease = pool.acquire(); // a lease per transaction, as an application would
                    sqlite3* h = lease->handle();
                    // IMMEDIATE takes the write lock up front, so the transaction cannot fail
                    // half-way with SQLITE_BUSY when upgrading from read to write.
                    lease->exec("BEGIN IMMEDIATE");
                    const auto customers = lease->query_int("SELECT max(id) FROM customers");
                    const auto orders = lease->query_int("SELECT max(id) FROM orders");
                    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count();
                    OrderWriter writer(h);
                    for (int i = 0; i < 5; ++i) writer.place(data, customers, now, 4);
                    Statement ship(h, "UPDATE orders SET status = 'shipped' WHERE id = ?");
                    for (int i = 0; i < 5; ++i) ship.bind(1, data.between(1, orders)).run();
                    lease->exec("COMMIT");
                }
                ++transactions;
                // Every commit makes an online backup of this database that is under way start
                // over (SQLite's rule: its copy must be one snapshot). Writing about once a
                // second shows restarts without starving the backups.
                const auto pause = std::chrono::milliseconds(data.between(300, 1200));
                for (auto slept = 0ms; slept < pause && !stop.load(); slept += 20ms) std::this_thread::sleep_for(20ms);
            }
        } catch (const std::exception& e) {
            error = e.what(); // the lease rolled back (sqlite::Factory::reset) when it went out of scope
        }
    }
};

// ---- backup workers: the pool smaller than the number of databases -----------------------------------

/// A backup worker's connection. It is not tied to one database: the job it runs says which demo
/// database to back up, and the worker opens a sqlite::Connection to it (kept while the next
/// job is about the same database). Move-only, used by one thread at a time, like any leased
/// connection.
class WorkerConnection {
public:
    /// Returns a connection to `db`, opening it unless the worker has it open already. Throws
    /// OperationError if it cannot: a database that cannot be opened is that job's failure,
    /// not a broken worker, so the runner keeps the worker.
    sqlite::Connection& open(const fs::path& db) {
        if (!current_ || current_->path() != db) {
            current_.reset();
            try {
                current_.emplace(sqlite::Factory{db, demo_db_options}.create());
            } catch (const sqlite::Error& e) {
                throw connpool::OperationError(e.what());
            }
        }
        return *current_;
    }

    /// Rolls back a transaction a job left open; false if that failed (then the pool retires it).
    [[nodiscard]] bool reset() noexcept {
        if (!current_ || sqlite3_get_autocommit(current_->handle()) != 0) return true;
        return sqlite3_exec(current_->handle(), "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK;
    }

private:
    std::optional<sqlite::Connection> current_;
};

/// Makes workers for the backup pool. A new worker holds no SQLite connection yet.
struct WorkerFactory {
    WorkerConnection create() const { return {}; }
    bool reset(WorkerConnection& worker) const noexcept { return worker.reset(); }
};

/// Counts the backups running at once. Counted inside the job's operation, which runs only
/// while its lease is held, so the peak is exact: never more than the pool's max_size.
class Concurrency {
public:
    /// Marks one operation running until the returned guard goes out of scope.
    [[nodiscard]] auto enter() {
        const int now = running_.fetch_add(1) + 1;
        int peak = peak_.load();
        while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
        }
        const auto leave = [this](Concurrency*) { running_.fetch_sub(1); };
        return std::unique_ptr<Concurrency, decltype(leave)>(this, leave);
    }

    /// Returns the most operations that ran at the same time.
    [[nodiscard]] int peak() const noexcept { return peak_.load(); }

private:
    std::atomic<int> running_{0};
    std::atomic<int> peak_{0};
};

/// Turns the adapter's job for one database (a Job<sqlite::Connection>) into a job for the
/// worker pool: the worker opens `db`, then the adapter's own operation runs on that connection.
connpool::Job<WorkerConnection> on_database(fs::path db, connpool::Job<sqlite::Connection> job, Concurrency& concurrency) {
    return {std::move(job.name), job.kind,
            [db = std::move(db), run = std::move(job.run), &concurrency](WorkerConnection& worker,
                                                                          connpool::ProgressReporter& reporter) {
                const auto running = concurrency.enter();
                run(worker.open(db), reporter);
            }};
}

/// Remembers, from a job's progress callbacks, when its last page was copied: what the job did
/// after that (check the copy, fsync, rename) is the summary's "check s" column. Callbacks run on
/// the runner's threads, so the value is an atomic; one job's callbacks never overlap.
struct CopiedAt {
    std::atomic<std::int64_t> elapsed_ns{-1};

    connpool::ProgressCallback callback() {
        return [this](const connpool::Progress& p) {
            // Reaching 100 % is always delivered, even between throttled callbacks. A restart
            // raises the total again, so only the last attempt's last page counts; the phase
            // changes after it ("verifying", "syncing") are the part being measured.
            if (p.state == connpool::JobState::running && p.total != 0 && p.done == p.total &&
                (p.phase.empty() || p.phase == "copying"))
                elapsed_ns.store(p.elapsed.count());
        };
    }
};

// ---- verification -----------------------------------------------------------------------------------

/// What a database holds: its schema and, per table, the row count and an order-independent
/// checksum of every value (a sum of per-row hashes).
struct Contents {
    std::string schema;
    struct Table {
        std::string name;
        std::int64_t rows = 0;
        std::uint64_t checksum = 0;
        bool operator==(const Table&) const = default;
    };
    std::vector<Table> tables;
    bool operator==(const Contents&) const = default;
};

/// FNV-1a, 64 bit: enough to notice any changed value, and short enough to write here.
std::uint64_t fnv1a(std::uint64_t hash, const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
    return hash;
}

Contents read_contents(sqlite3* db) {
    Contents contents;
    std::vector<std::string> names;
    {
        Statement schema(db, "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name");
        while (schema.step()) {
            for (int col = 0; col < 3; ++col)
                contents.schema += reinterpret_cast<const char*>(sqlite3_column_text(schema.get(), col)) + std::string("\n");
            const std::string_view type = reinterpret_cast<const char*>(sqlite3_column_text(schema.get(), 0));
            const std::string name = reinterpret_cast<const char*>(sqlite3_column_text(schema.get(), 1));
            if (type == "table" && !name.starts_with("sqlite_")) names.push_back(name);
        }
    }
    for (const auto& name : names) {
        Contents::Table table{name};
        std::string quoted = "\"";
        for (char ch : name) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
        const std::string sql = "SELECT * FROM " + quoted + "\"";
        Statement rows(db, sql.c_str());
        const int columns = sqlite3_column_count(rows.get());
        while (rows.step()) {
            std::uint64_t row = 0xcbf29ce484222325ULL;
            for (int col = 0; col < columns; ++col) {
                const int type = sqlite3_column_type(rows.get(), col);
                row = fnv1a(row, &type, sizeof type); // so 1 and '1' differ
                const void* bytes = sqlite3_column_blob(rows.get(), col);
                row = fnv1a(row, bytes, static_cast<std::size_t>(sqlite3_column_bytes(rows.get(), col)));
            }
            table.checksum += row; // a sum: the same rows in any order give the same checksum
            ++table.rows;
        }
        contents.tables.push_back(std::move(table));
    }
    return contents;
}

struct Verification {
    bool ok = false;
    std::string text;
};

/// Checks `restored` against the backup it came from: integrity, schema, rows and values.
Verification verify_restore(const fs::path& restored, const fs::path& backup) {
    const sqlite::FactoryOptions read_only{.open_flags = SQLITE_OPEN_READONLY};
    sqlite::Connection r = sqlite::Factory{restored, read_only}.create();
    sqlite::Connection b = sqlite::Factory{backup, read_only}.create();
    if (auto problems = sqlite::check_problems(r.handle(), sqlite::Check::integrity, "integrity check of the restore");
        !problems.empty())
        return {false, "integrity check failed:\n" + problems};
    const Contents got = read_contents(r.handle());
    const Contents want = read_contents(b.handle());
    if (got.schema != want.schema) return {false, "the schema differs from the backup's"};
    if (got.tables != want.tables) {
        std::string text = "contents differ from the backup:";
        for (std::size_t i = 0; i < std::max(got.tables.size(), want.tables.size()); ++i) {
            const auto* g = i < got.tables.size() ? &got.tables[i] : nullptr;
            const auto* w = i < want.tables.size() ? &want.tables[i] : nullptr;
            if (g && w && *g == *w) continue;
            const std::string& name = g ? g->name : w->name;
            if (!g || !w) {
                text += "\n  table " + name + (g ? " is not in the backup" : " is missing");
            } else if (g->rows != w->rows) {
                text += "\n  " + name + ": " + std::to_string(g->rows) + " rows, the backup has " + std::to_string(w->rows);
            } else {
                text += "\n  " + name + ": the same " + std::to_string(g->rows) + " rows, but different values";
            }
        }
        return {false, text};
    }
    std::int64_t rows = 0;
    for (const auto& t : got.tables) rows += t.rows;
    return {true, "integrity ok; " + std::to_string(got.tables.size()) + " tables, " + monitor::format_count(static_cast<std::uint64_t>(rows)) +
                      " rows, every value matches the backup"};
}

// ---- output -----------------------------------------------------------------------------------------

/// Returns whether stdout is a terminal that understands cursor movement.
bool stdout_is_terminal() {
    const char* term = std::getenv("TERM");
    return ::isatty(STDOUT_FILENO) == 1 && !(term != nullptr && std::string_view(term) == "dumb");
}

std::size_t terminal_width() {
    winsize size{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
    return 100;
}

double mib(std::uintmax_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

std::uintmax_t file_size_or_zero(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    return ec ? 0 : size;
}

/// Makes sure the demo databases exist, showing one progress line while it creates them.
void prepare_databases(const std::vector<fs::path>& dbs, int size_mb, bool live) {
    std::vector<std::size_t> missing;
    for (std::size_t i = 0; i < dbs.size(); ++i) {
        if (reusable_demo_database(dbs[i], size_mb)) continue;
        remove_database_files(dbs[i]); // one of ours, but of another size or format
        missing.push_back(i);
    }
    if (missing.empty()) {
        std::printf("using %zu existing demo databases in %s (%d MB each)\n", dbs.size(), dbs.front().parent_path().c_str(),
                    size_mb);
        return;
    }
    const auto started = clock_type::now();
    for (std::size_t n = 0; n < missing.size(); ++n) {
        const fs::path& db = dbs[missing[n]];
        const auto show = [&](double fraction) {
            if (!live) return;
            std::printf("\r\x1b[2Kcreating demo databases: %s %3d%% (%zu of %zu)", db.filename().c_str(),
                        static_cast<int>(fraction * 100), n + 1, missing.size());
            std::fflush(stdout);
        };
        if (!live) std::printf("creating demo database %s (%d MB)\n", db.c_str(), size_mb);
        create_demo_database(db, size_mb, missing[n] + 1, show);
    }
    if (live) std::printf("\r\x1b[2K");
    std::printf("created %zu demo database%s in %s (%d MB each) in %.1f s\n", missing.size(), missing.size() == 1 ? "" : "s",
                dbs.front().parent_path().c_str(), size_mb, seconds(clock_type::now() - started));
}

/// Prints one row per backup job; `copied_at[i]` says when job i had copied its last page.
void print_summary(const std::vector<connpool::Progress>& jobs, const std::vector<fs::path>& files,
                   const std::vector<CopiedAt>& copied_at, std::uint32_t page_size) {
    std::printf("\n%-14s %7s %6s %7s %6s %7s %7s %8s %6s  %s\n", "database", "size MB", "pages", "copied", "time s", "MiB/s",
                "check s", "restarts", "wait s", "state");
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const auto& p = jobs[i];
        // A failed job leaves no file, but an earlier run's backup may be there: don't report it.
        const auto bytes = p.state == connpool::JobState::succeeded ? file_size_or_zero(files[i]) : 0;
        const auto copied_ns = copied_at[i].elapsed_ns.load();
        char check[16] = "-";
        if (copied_ns >= 0) std::snprintf(check, sizeof check, "%.2f", seconds(p.elapsed - std::chrono::nanoseconds{copied_ns}));
        std::printf("%-14s %7.1f %6s %7s %6.2f %7.1f %7s %8llu %6.2f  %s\n", p.name.c_str(), mib(bytes),
                    monitor::format_count(bytes / page_size).c_str(), monitor::format_count(p.done).c_str(), seconds(p.elapsed),
                    p.rate * page_size / (1024.0 * 1024.0), check, static_cast<unsigned long long>(p.restarts),
                    seconds(p.waited), std::string(connpool::to_string(p.state)).c_str());
        if (p.state == connpool::JobState::failed) std::printf("    error: %s\n", p.error.c_str());
    }
    std::printf("(copied: pages read, counting those read again after a restart; MiB/s: copied / time; "
                "check s: checking, syncing and renaming the copy)\n");
}

int run(const Settings& settings) {
    const auto started = clock_type::now();
    const bool live = stdout_is_terminal();
    const fs::path& work = settings.out;
    fs::create_directories(work / "backups");

    std::vector<fs::path> dbs;
    std::vector<fs::path> backup_files;
    for (int i = 1; i <= settings.databases; ++i) {
        dbs.push_back(work / ("orders_" + std::to_string(i) + ".db"));
        backup_files.push_back(work / "backups" / dbs.back().filename());
    }
    prepare_databases(dbs, settings.size_mb, live);
    const sqlite::FactoryOptions existing{.open_flags = SQLITE_OPEN_READWRITE}; // never creates a file
    const auto page_size =
        static_cast<std::uint32_t>(sqlite::Factory{dbs.front(), existing}.create().query_int("PRAGMA page_size"));

    if (settings.pool_size >= settings.databases)
        std::printf("note: --pool-size %d is not below --databases %d, so no backup will wait for a connection\n",
                    settings.pool_size, settings.databases);
    std::printf("backing up %d databases through a pool of %d while they are being written to%s\n\n", settings.databases,
                settings.pool_size, live ? " (Ctrl-C cancels)" : "");

    // The applications start writing first; the backups then copy databases in use.
    std::deque<Writer> writers; // a deque: Writers don't move (their threads point at them)
    for (std::size_t i = 0; i < dbs.size(); ++i) writers.emplace_back(dbs[i], 1000 + i);

    // Declared before the runners: their jobs and callbacks use these until the runners are gone.
    Concurrency concurrency;
    std::vector<CopiedAt> copied_at(dbs.size()); // never resized: callbacks point into it

    connpool::Pool workers{WorkerFactory{}, connpool::PoolOptions{.max_size = static_cast<std::size_t>(settings.pool_size)}};
    connpool::JobRunner backup_runner{workers};
    const fs::path restored = work / "restored.db";
    remove_database_files(restored);
    connpool::Pool restore_pool{sqlite::Factory{restored}, connpool::PoolOptions{.max_size = 1}};
    connpool::JobRunner restore_runner{restore_pool};

    // Declared after the runners, so its thread stops before they go.
    monitor::ProgressView view(stdout, {.live = live,
                                        .width = live ? terminal_width() : 100,
                                        .page_size = page_size,
                                        .color = std::getenv("NO_COLOR") == nullptr}); // no-color.org
    monitor::Monitor screen(
        view,
        [&] {
            auto jobs = backup_runner.snapshot();
            for (auto& p : restore_runner.snapshot()) jobs.push_back(std::move(p));
            return jobs;
        },
        live ? 100ms : 250ms); // the plain view prints at most once a second per job anyway

    // Waits for `handles`, cancelling everything on Ctrl-C.
    const auto wait_for = [&](const std::vector<connpool::JobHandle>& handles) {
        for (const auto& h : handles) {
            while (!h.wait_for(50ms)) {
                if (interrupted.load()) {
                    backup_runner.cancel_all();
                    restore_runner.cancel_all();
                }
            }
        }
    };

    const sqlite::BackupOptions backup_options{.pages_per_step = settings.pages_per_step,
                                               .pause = std::chrono::milliseconds(settings.pause_ms),
                                               .overwrite = true}; // each run replaces the last run's backups
    std::vector<connpool::JobHandle> backups;
    for (std::size_t i = 0; i < dbs.size(); ++i) {
        backups.push_back(backup_runner.submit(on_database(dbs[i], sqlite::backup_to(backup_files[i], backup_options), concurrency),
                                               copied_at[i].callback()));
    }
    wait_for(backups);
    for (auto& w : writers) w.join(); // the writing stops once every backup has been taken

    // Restore the first backup into a fresh database, through an ordinary sqlite::Factory pool.
    const fs::path& restore_source = backup_files.front();
    std::optional<connpool::JobHandle> restore;
    if (!interrupted.load() && backups.front().state() == connpool::JobState::succeeded) {
        auto job = sqlite::restore_from(restore_source, {.pages_per_step = settings.pages_per_step,
                                                         .pause = std::chrono::milliseconds(settings.pause_ms)});
        job.name = restored.filename().string();
        restore = restore_runner.submit(std::move(job));
        wait_for({*restore});
    }
    screen.stop(); // draws the final frame

    // ---- the summary ----
    bool ok = true;
    std::vector<connpool::Progress> jobs;
    for (const auto& h : backups) jobs.push_back(h.progress());
    print_summary(jobs, backup_files, copied_at, page_size);
    for (const auto& p : jobs) ok = ok && p.state == connpool::JobState::succeeded;

    std::printf("\n");
    if (!restore) {
        std::printf("restore: skipped (%s)\n", interrupted.load() ? "interrupted" : "its backup failed");
        ok = false;
    } else if (const auto p = restore->progress(); p.state != connpool::JobState::succeeded) {
        std::printf("restore: %s into %s %s\n", restore_source.c_str(), restored.c_str(),
                    std::string(connpool::to_string(p.state)).c_str());
        if (!p.error.empty()) std::printf("    error: %s\n", p.error.c_str());
        ok = false;
    } else {
        std::printf("restore: %s -> %s, %s pages in %.2f s\n", restore_source.c_str(), restored.c_str(),
                    monitor::format_count(p.done).c_str(), seconds(p.elapsed));
        const auto result = verify_restore(restored, restore_source);
        std::printf("verify:  %s: %s\n", result.text.c_str(), result.ok ? "verified OK" : "VERIFICATION FAILED");
        ok = ok && result.ok;
        // The backup is a point in time; the source kept changing after it was taken.
        const auto orders_now = sqlite::Factory{dbs.front(), existing}.create().query_int("SELECT count(*) FROM orders");
        const auto orders_then = sqlite::Factory{restored, existing}.create().query_int("SELECT count(*) FROM orders");
        if (orders_now > orders_then)
            std::printf("         (%s has %lld orders more than its backup: placed after the backup was taken)\n",
                        dbs.front().filename().c_str(), static_cast<long long>(orders_now - orders_then));
    }

    std::uint64_t transactions = 0;
    for (const auto& w : writers) {
        transactions += w.transactions;
        if (!w.error.empty()) {
            std::printf("writer on %s failed: %s\n", w.db.c_str(), w.error.c_str());
            ok = false;
        }
    }
    std::printf("writers: %llu transactions on %zu databases while the backups ran\n",
                static_cast<unsigned long long>(transactions), writers.size());
    const auto stats = workers.stats();
    std::printf("backup pool: max_size %zu, %llu connections created, %llu leases, %llu discarded\n", stats.max_size,
                static_cast<unsigned long long>(stats.created), static_cast<unsigned long long>(stats.acquired),
                static_cast<unsigned long long>(stats.discarded));
    const auto longest = std::max_element(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.waited < b.waited; });
    std::printf("queuing: at most %d of %zu backups ran at once; the longest wait for a connection was %.2f s (%s)\n",
                concurrency.peak(), jobs.size(), seconds(longest->waited), longest->name.c_str());
    std::printf("done in %.1f s: %s\n", seconds(clock_type::now() - started),
                interrupted.load() ? "interrupted" : ok ? "all succeeded" : "FAILED");
    if (interrupted.load()) return 130;
    return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    std::optional<Settings> settings;
    try {
        settings = parse_command_line(argc, argv);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "backup_demo: %s\nTry 'backup_demo --help'.\n", e.what());
        return 2;
    }
    if (!settings) return 0; // --help
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    try {
        return run(*settings);
    } catch (const Interrupted&) {
        std::printf("\ninterrupted\n");
        return 130;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "\nbackup_demo: %s\n", e.what());
        return 1;
    }
}
