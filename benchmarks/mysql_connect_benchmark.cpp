// Issue 11's benchmark 1, measured: many small operations (one primary-key SELECT each) against a
// real MariaDB over loopback TCP with password authentication (mysql_native_password), from 4
// threads, three ways in the same run on the same server:
//   - pool of 4: Pool<mysql::Connection> with 4 kept connections (each lease's return runs the
//     factory's reset(): mysql_reset_connection, one round trip; and, as a second pool figure,
//     with FactoryOptions::reset_connection = false, which rolls back only an open transaction);
//   - per operation: the same Pool code with a factory whose reset() refuses every connection,
//     so each operation connects (TCP + handshake + authentication) and closes;
//   - ceiling: one connection kept per thread, no pool (the most that avoiding connects can give).
// After the runs it prints each one's ops/s, pool / per-operation, ceiling / per-operation, and
// the pool's speed-up as a percentage of the ceiling's (issue 11's target: >= 80 %).
//
// Run: build/default/benchmarks/mysql_connect_benchmark [--benchmark_repetitions=5]
// The server comes from tests/support/mariadb_server.hpp (mariadb-install-db into a temp dir,
// stopped at exit). CONNPOOL_MYSQL_BENCH_ROWS sets the table's size (default 100000).

#include <connpool/mysql.hpp>
#include <connpool/pool.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "mariadb_server.hpp"

namespace {

namespace my = connpool::mysql;
using connpool::testing::MariadbServer;

/// The same factory, but every returned connection is refused: one connection per operation.
struct ConnectPerOperation {
    my::Factory inner;
    my::Connection create() const { return inner.create(); }
    bool reset(my::Connection&) const noexcept { return false; }
};

template <class F>
using PoolOf = connpool::Pool<my::Connection, F>;

connpool::PoolOptions options4() {
    connpool::PoolOptions o;
    o.max_size = 4;
    o.acquire_timeout = std::chrono::seconds{60};
    o.maintenance_interval = std::chrono::milliseconds{0};
    return o;
}

int rows() {
    const char* env = std::getenv("CONNPOOL_MYSQL_BENCH_ROWS");
    return env != nullptr ? std::max(1, std::atoi(env)) : 100'000;
}

MariadbServer& server() {
    static MariadbServer& s = []() -> MariadbServer& {
        MariadbServer& srv = MariadbServer::instance();
        if (!srv.error().empty()) {
            std::fprintf(stderr, "no MariaDB server: %s\n", srv.error().c_str());
            std::exit(1);
        }
        auto c = my::Factory(srv.tcp()).create();
        c.exec("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, filler CHAR(84) NOT NULL) ENGINE=InnoDB");
        c.exec("INSERT INTO accounts SELECT seq, CAST(seq * 7919 % 100000 AS SIGNED) - 50000, REPEAT('x', 84) FROM seq_1_to_" +
               std::to_string(rows()));
        return srv;
    }();
    return s;
}

my::Factory bench_factory(bool reset_connection = true) {
    my::FactoryOptions o;
    o.reset_connection = reset_connection;
    return my::Factory(server().tcp(), o);
}

/// One small operation: a primary-key lookup on `c`.
void operation(my::Connection& c, std::mt19937& rng) {
    std::uniform_int_distribution<int> id(1, rows());
    benchmark::DoNotOptimize(c.query_value("SELECT balance FROM accounts WHERE id = " + std::to_string(id(rng))));
}

template <class Pool>
void through_pool(benchmark::State& state, Pool& pool) {
    std::mt19937 rng(static_cast<unsigned>(state.thread_index()));
    for (auto _ : state) {
        auto lease = pool.acquire();
        operation(*lease, rng);
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_statement_pool_of_4(benchmark::State& state) {
    static PoolOf<my::Factory> pool(bench_factory(), options4());
    through_pool(state, pool);
}

void BM_statement_pool_of_4_rollback_only_reset(benchmark::State& state) {
    static PoolOf<my::Factory> pool(bench_factory(false), options4());
    through_pool(state, pool);
}

void BM_statement_connect_per_operation(benchmark::State& state) {
    static PoolOf<ConnectPerOperation> pool(ConnectPerOperation{bench_factory()}, options4());
    through_pool(state, pool);
}

void BM_statement_ceiling_kept_connection_per_thread(benchmark::State& state) {
    std::mt19937 rng(static_cast<unsigned>(state.thread_index()));
    auto c = bench_factory().create();
    for (auto _ : state) operation(c, rng);
    state.SetItemsProcessed(state.iterations());
}

// Where a pooled operation's time goes, one thread, kept connection: the statement alone, the
// statement through the pool, and the two reset() flavours alone.
void BM_breakdown_statement(benchmark::State& state) { BM_statement_ceiling_kept_connection_per_thread(state); }

void BM_breakdown_statement_through_pool(benchmark::State& state) {
    static PoolOf<my::Factory> pool(bench_factory(false), options4());
    through_pool(state, pool);
}

void BM_breakdown_reset_connection(benchmark::State& state) {
    const my::Factory f = bench_factory(state.range(0) == 1);
    auto c = f.create();
    for (auto _ : state)
        if (!f.reset(c)) state.SkipWithError("reset failed");
}

BENCHMARK(BM_breakdown_statement)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_breakdown_statement_through_pool)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_breakdown_reset_connection)->ArgName("reset_connection")->Arg(1)->Arg(0)->Unit(benchmark::kMicrosecond)->UseRealTime();

BENCHMARK(BM_statement_ceiling_kept_connection_per_thread)->Threads(4)->UseRealTime();
BENCHMARK(BM_statement_pool_of_4)->Threads(4)->UseRealTime();
BENCHMARK(BM_statement_pool_of_4_rollback_only_reset)->Threads(4)->UseRealTime();
BENCHMARK(BM_statement_connect_per_operation)->Threads(4)->UseRealTime();

/// The console reporter, also keeping each benchmark's ops/s (the median when repeated).
class Recorder : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& run : runs) {
            const auto it = run.counters.find("items_per_second");
            if (it == run.counters.end()) continue;
            const std::string name = run.run_name.function_name;
            if (run.run_type == Run::RT_Aggregate) {
                if (run.aggregate_name == "median") medians_[name] = it->second.value;
            } else {
                last_[name] = it->second.value;
            }
        }
        ConsoleReporter::ReportRuns(runs);
    }

    /// Returns the ops/s of `name` (median of repetitions, else the last run); 0 if it did not run.
    [[nodiscard]] double ops(const std::string& name) const {
        if (const auto m = medians_.find(name); m != medians_.end()) return m->second;
        const auto l = last_.find(name);
        return l != last_.end() ? l->second : 0.0;
    }

private:
    std::map<std::string, double> medians_;
    std::map<std::string, double> last_;
};

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    (void)server();
    Recorder recorder;
    benchmark::RunSpecifiedBenchmarks(&recorder);
    const double ceiling = recorder.ops("BM_statement_ceiling_kept_connection_per_thread");
    const double pool = recorder.ops("BM_statement_pool_of_4");
    const double rollback_only = recorder.ops("BM_statement_pool_of_4_rollback_only_reset");
    const double per_op = recorder.ops("BM_statement_connect_per_operation");
    if (per_op > 0 && ceiling > per_op) {
        const auto share = [&](double x) { return 100.0 * (x / per_op - 1.0) / (ceiling / per_op - 1.0); };
        std::printf("\nsmall operations, 4 threads, TCP 127.0.0.1, password auth (%s):\n",
                    my::Factory(server().tcp()).create().server_version().c_str());
        std::printf("  ceiling (kept connection per thread): %10.0f ops/s  %.2fx per-operation\n", ceiling, ceiling / per_op);
        std::printf("  pool of 4 (mysql_reset_connection):   %10.0f ops/s  %.2fx per-operation, %.0f %% of the ceiling's speed-up\n",
                    pool, pool / per_op, share(pool));
        std::printf("  pool of 4 (rollback-only reset):      %10.0f ops/s  %.2fx per-operation, %.0f %% of the ceiling's speed-up\n",
                    rollback_only, rollback_only / per_op, share(rollback_only));
        std::printf("  new connection per operation:         %10.0f ops/s\n", per_op);
    }
    benchmark::Shutdown();
    return 0;
}
