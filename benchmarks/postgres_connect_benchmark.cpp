// The seeds' claim, measured: many small operations against a real PostgreSQL 15 over loopback
// TCP with SCRAM, through a pool of 4 kept connections vs. a new connection per operation, beside
// pgbench's own -C vs. kept-connection figures measured in the same run on the same server.
//
// Both sides run the same code (Pool, Lease, JobRunner); "per operation" uses a factory whose
// reset() refuses every returned connection, so each operation connects (SCRAM handshake and
// backend start) and the pool never reuses one. Operations: a short statement (pgbench -S's
// SELECT on pgbench_accounts), and a backup_table job of a 10-row table.
//
// Run: build/default/benchmarks/postgres_connect_benchmark [--benchmark_repetitions=5]
// The server comes from tests/support/pg_server.hpp (initdb in a temp dir, stopped at exit).
// CONNPOOL_PG_BENCH_SECONDS sets pgbench's -T (default 5).

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/postgres.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>

#include <unistd.h>

#include "pg_server.hpp"

namespace {

namespace pg = connpool::postgres;
using connpool::testing::PgServer;

/// The same factory, but every returned connection is refused: one connection per operation.
struct ConnectPerOperation {
    pg::Factory inner;
    pg::Connection create() const { return inner.create(); }
    bool reset(pg::Connection&) const noexcept { return false; }
};

template <class F>
using PoolOf = connpool::Pool<pg::Connection, F>;

connpool::PoolOptions options4() {
    connpool::PoolOptions o;
    o.max_size = 4;
    o.acquire_timeout = std::chrono::seconds{60};
    o.maintenance_interval = std::chrono::milliseconds{0};
    return o;
}

PgServer& server() {
    static PgServer& s = [] () -> PgServer& {
        PgServer& srv = PgServer::instance();
        if (!srv.error().empty()) {
            std::fprintf(stderr, "no PostgreSQL server: %s\n", srv.error().c_str());
            std::exit(1);
        }
        srv.psql("CREATE DATABASE bench");
        connpool::testing::run_shell(srv.tool_env() + connpool::testing::pg_bindir() + "/pgbench -q -i -s 1 bench",
                                     srv.dir() / "pgbench.log");
        srv.psql("CREATE TABLE tiny (id int, v text); INSERT INTO tiny SELECT i, 'row ' || i FROM generate_series(1, 10) i",
                 "bench");
        return srv;
    }();
    return s;
}

pg::Factory bench_factory() { return pg::Factory(server().conninfo("bench")); }

template <class Pool>
void statements(benchmark::State& state, Pool& pool) {
    std::mt19937 rng(static_cast<unsigned>(state.thread_index()));
    std::uniform_int_distribution<int> aid(1, 100000);
    for (auto _ : state) {
        auto lease = pool.acquire();
        benchmark::DoNotOptimize(
            lease->query("SELECT abalance FROM pgbench_accounts WHERE aid = $1", {std::to_string(aid(rng))}));
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_statement_pool_of_4(benchmark::State& state) {
    static PoolOf<pg::Factory> pool(bench_factory(), options4());
    statements(state, pool);
}

void BM_statement_connect_per_operation(benchmark::State& state) {
    static PoolOf<ConnectPerOperation> pool(ConnectPerOperation{bench_factory()}, options4());
    statements(state, pool);
}

/// Where the tiny backups go: the temp directory (a disk, where fsync waits for the device), or
/// /dev/shm (tmpfs: fsync returns at once), to separate the connection's cost from the disk's.
std::filesystem::path backup_base(bool tmpfs) {
    return tmpfs && std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                              : std::filesystem::temp_directory_path();
}

template <class Pool>
void tiny_backups(benchmark::State& state, Pool& pool, bool tmpfs = false) {
    static std::atomic<int> next{0};
    connpool::JobRunner runner(pool);
    const auto dir = backup_base(tmpfs) / ("connpool-bench-tiny-" + std::to_string(next++));
    std::filesystem::create_directories(dir);
    pg::TableBackupOptions o;
    o.overwrite = true;
    for (auto _ : state) {
        auto h = runner.submit(pg::backup_table({"tiny"}, dir / "tiny.copy", o));
        if (h.wait() != connpool::JobState::succeeded) state.SkipWithError(h.error().c_str());
    }
    std::filesystem::remove_all(dir);
    state.SetItemsProcessed(state.iterations());
}

void BM_tiny_backup_pool_of_4(benchmark::State& state) {
    static PoolOf<pg::Factory> pool(bench_factory(), options4());
    tiny_backups(state, pool);
}

void BM_tiny_backup_connect_per_operation(benchmark::State& state) {
    static PoolOf<ConnectPerOperation> pool(ConnectPerOperation{bench_factory()}, options4());
    tiny_backups(state, pool);
}

void BM_tiny_backup_pool_of_4_tmpfs(benchmark::State& state) {
    static PoolOf<pg::Factory> pool(bench_factory(), options4());
    tiny_backups(state, pool, true);
}

void BM_tiny_backup_connect_per_operation_tmpfs(benchmark::State& state) {
    static PoolOf<ConnectPerOperation> pool(ConnectPerOperation{bench_factory()}, options4());
    tiny_backups(state, pool, true);
}

// Where one tiny backup's time goes, one thread, kept connection: the whole job (disk, tmpfs),
// one round trip, and the durable-file steps alone (write, fsync, rename, directory fsync), also
// on 4 threads: on a disk, that is the bound of the 4-thread tiny backups (they publish as many
// files), whatever the connection costs.
void BM_breakdown_tiny_backup(benchmark::State& state) {
    static PoolOf<pg::Factory> pool(bench_factory(), options4());
    tiny_backups(state, pool, state.range(0) == 1);
}

void BM_breakdown_round_trip(benchmark::State& state) {
    static PoolOf<pg::Factory> pool(bench_factory(), options4());
    auto lease = pool.acquire();
    for (auto _ : state) benchmark::DoNotOptimize(lease->query_value("SELECT 1"));
}

void BM_breakdown_durable_file(benchmark::State& state) {
    // A directory per thread: the 4-thread run is the disk's bound for the 4-thread tiny backups
    // (each publishes one file: fsync of the file, rename, fsync of the directory).
    const auto dir = backup_base(state.range(0) == 1) /
                     ("connpool-bench-durable-" + std::to_string(::getpid()) + "-" + std::to_string(state.thread_index()));
    std::filesystem::create_directories(dir);
    const std::string bytes(200, 'x');
    for (auto _ : state) {
        connpool::io::TempFile temp(dir / "f.copy", connpool::io::Publish::replace);
        if (::write(temp.fd(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) state.SkipWithError("write");
        temp.sync();
        temp.publish();
    }
    std::filesystem::remove_all(dir);
    state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_breakdown_tiny_backup)->ArgName("tmpfs")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_breakdown_round_trip)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_breakdown_durable_file)->ArgName("tmpfs")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_breakdown_durable_file)->ArgName("tmpfs")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime()->Threads(4);

/// The compression default's measurement: one backup of `rows()` pgbench_accounts-like rows per
/// iteration, at zstd level state.range(0) (0 = none); reports the file's size against the data's.
int rows() {
    const char* env = std::getenv("CONNPOOL_PG_BENCH_ROWS");
    return env != nullptr ? std::max(1, std::atoi(env)) : 1'000'000;
}

void BM_backup_rows_compression(benchmark::State& state) {
    static bool made = [] {
        if (server().psql("CREATE TABLE accounts AS SELECT i AS aid, i % 10 AS bid, (i::bigint * 7919) % 100000 - 50000 AS abalance, "
                      "now() - i * interval '1 second' AS updated, 'customer ' || md5(i::text) AS filler FROM "
                      "generate_series(1, " + std::to_string(rows()) + ") i",
                      "bench") != 0)
            std::fprintf(stderr, "creating the accounts table failed: %s\n",
                         connpool::testing::slurp(server().dir() / "psql.log").c_str());
        return true;
    }();
    (void)made;
    static PoolOf<pg::Factory> pool(bench_factory(), options4());
    connpool::JobRunner runner(pool);
    const auto file = std::filesystem::temp_directory_path() / "connpool-bench-accounts.copy";
    pg::TableBackupOptions o;
    o.overwrite = true;
    o.compression = state.range(0) == 0 ? pg::Compression::none : pg::Compression::zstd;
    o.zstd_level = state.range(0) == 0 ? 1 : static_cast<int>(state.range(0));
    std::uint64_t data = 0;
    for (auto _ : state) {
        auto h = runner.submit(pg::backup_table({"accounts"}, file, o));
        if (h.wait() != connpool::JobState::succeeded) {
            state.SkipWithError(h.error().c_str());
            return;
        }
        data = h.progress().done;
    }
    state.counters["file_MB"] = static_cast<double>(std::filesystem::file_size(file)) / 1e6;
    state.counters["data_MB"] = static_cast<double>(data) / 1e6;
    state.SetBytesProcessed(static_cast<std::int64_t>(data) * state.iterations());
    std::filesystem::remove(file);
}
BENCHMARK(BM_backup_rows_compression)->Arg(0)->Arg(1)->Arg(3)->Arg(9)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK(BM_statement_pool_of_4)->Threads(4)->UseRealTime();
BENCHMARK(BM_statement_connect_per_operation)->Threads(4)->UseRealTime();
BENCHMARK(BM_tiny_backup_pool_of_4)->Threads(4)->UseRealTime();
BENCHMARK(BM_tiny_backup_connect_per_operation)->Threads(4)->UseRealTime();
BENCHMARK(BM_tiny_backup_pool_of_4_tmpfs)->Threads(4)->UseRealTime();
BENCHMARK(BM_tiny_backup_connect_per_operation_tmpfs)->Threads(4)->UseRealTime();

/// Runs pgbench -S -c 4 -j 4 for `seconds` (with -C when `connect`); returns its tps, or -1.
double pgbench_tps(bool connect, int seconds) {
    const auto log = server().dir() / (connect ? "pgbench-C.log" : "pgbench.log");
    std::filesystem::remove(log);
    connpool::testing::run_shell(server().tool_env() + connpool::testing::pg_bindir() + "/pgbench -n -S -c 4 -j 4 -T " +
                                     std::to_string(seconds) + (connect ? " -C" : "") + " bench",
                                 log);
    const std::string text = connpool::testing::slurp(log);
    std::smatch m;
    if (std::regex_search(text, m, std::regex(R"(tps = ([0-9.]+) \((without initial connection time|excluding connections establishing|including reconnection times)\))")))
        return std::stod(m[1]);
    if (std::regex_search(text, m, std::regex(R"(tps = ([0-9.]+))"))) return std::stod(m[1]);
    std::fprintf(stderr, "pgbench gave no tps:\n%s\n", text.c_str());
    return -1;
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    (void)server();
    benchmark::RunSpecifiedBenchmarks();
    const char* env = std::getenv("CONNPOOL_PG_BENCH_SECONDS");
    const int seconds = env != nullptr ? std::max(1, std::atoi(env)) : 5;
    const double kept = pgbench_tps(false, seconds);
    const double per_connect = pgbench_tps(true, seconds);
    std::printf("pgbench -S -c 4 -j 4 -T %d: kept connections %.0f tps, -C (connect per transaction) %.0f tps, ratio %.1fx\n",
                seconds, kept, per_connect, per_connect > 0 ? kept / per_connect : 0.0);
    benchmark::Shutdown();
    return 0;
}
