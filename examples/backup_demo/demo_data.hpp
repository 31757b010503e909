#pragma once

// The demo's data: the shop schema, a reproducible generator that fills a database to a size,
// and the "application" threads that keep writing to the databases while they are backed up.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <sqlite3.h>

#include <connpool.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/sqlite.hpp>

namespace demo {

namespace fs = std::filesystem;
namespace sqlite = connpool::sqlite;
using namespace std::chrono_literals;

// A lock-free atomic is safe to set from a signal handler and to read from any thread.
inline std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);

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
inline constexpr std::int64_t demo_format = 1;

// How every demo database connection is opened: WAL, so the writers and the backups' readers
// don't block each other (an online backup of a WAL database reads a snapshot per step).
inline const sqlite::FactoryOptions demo_db_options{.busy_timeout = 5s, .wal = true};

inline constexpr const char* demo_schema = R"sql(
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
inline void create_demo_database(const fs::path& db, int size_mb, std::uint64_t seed, const std::function<void(double)>& progress) {
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
inline bool reusable_demo_database(const fs::path& db, int size_mb) {
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

inline void remove_database_files(const fs::path& db) {
    for (const char* suffix : {"", "-journal", "-wal", "-shm"}) fs::remove(db.string() + suffix);
}

// ---- the application's own traffic ------------------------------------------------------------------

/// One database's "application": a thread that keeps placing orders and shipping old ones in
/// short transactions, through the database's own pool, until stopped.
struct Writer {
    fs::path db;
    connpool::Pool<sqlite::Connection, sqlite::Factory> pool;
    connpool::monitor::Watch watch; // after the pool: stops watching it first
    std::atomic<bool> stop{false};
    std::uint64_t transactions = 0; // written by the thread; read after join()
    std::string error;              // likewise
    std::thread thread;

    /// Starts writing to `path`; its pool reports to `hub` as pool "app <file name>".
    Writer(fs::path path, std::uint64_t seed, const connpool::monitor::Hub& hub)
        : db(std::move(path)),
          pool(sqlite::Factory{db, demo_db_options}, hub.instrument("app " + db.filename().string(), {.max_size = 2})),
          watch(hub.watch("app " + db.filename().string(), pool)) {
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

/// Makes sure the demo databases exist, showing one progress line while it creates them.
inline void prepare_databases(const std::vector<fs::path>& dbs, int size_mb, bool live, std::FILE* out) {
    std::vector<std::size_t> missing;
    for (std::size_t i = 0; i < dbs.size(); ++i) {
        if (reusable_demo_database(dbs[i], size_mb)) continue;
        remove_database_files(dbs[i]); // one of ours, but of another size or format
        missing.push_back(i);
    }
    if (missing.empty()) {
        std::fprintf(out, "using %zu existing demo databases in %s (%d MB each)\n", dbs.size(), dbs.front().parent_path().c_str(),
                    size_mb);
        return;
    }
    const auto started = std::chrono::steady_clock::now();
    for (std::size_t n = 0; n < missing.size(); ++n) {
        const fs::path& db = dbs[missing[n]];
        const auto show = [&](double fraction) {
            if (!live) return;
            std::fprintf(out, "\r\x1b[2Kcreating demo databases: %s %3d%% (%zu of %zu)", db.filename().c_str(),
                        static_cast<int>(fraction * 100), n + 1, missing.size());
            std::fflush(out);
        };
        if (!live) std::fprintf(out, "creating demo database %s (%d MB)\n", db.c_str(), size_mb);
        create_demo_database(db, size_mb, missing[n] + 1, show);
    }
    if (live) std::fprintf(out, "\r\x1b[2K");
    std::fprintf(out, "created %zu demo database%s in %s (%d MB each) in %.1f s\n", missing.size(), missing.size() == 1 ? "" : "s",
                dbs.front().parent_path().c_str(), size_mb, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

} // namespace demo
