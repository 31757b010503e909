// Cost of the monitoring sinks (connpool::monitor), kept apart from backup_benchmark.cpp.
//
// Rendering (target: <= 10 ms for a pool and 10,000 jobs):
//   BM_PrometheusRender/jobs:N   render_prometheus() of a MetricsSnapshot with one pool and N
//                                running jobs (every job has its per-job series)
//   BM_HubScrape/jobs:N          what a scrape does: Hub::metrics() with N live tracked jobs, then
//                                render_prometheus()
//   BM_JsonLinesProgressLine     one "job.progress" line written by JsonLinesSink (to a null stream)
//
// Backup overhead with every sink attached (target: <= 5 % against the raw loop), the method of
// backup_benchmark.cpp on a database of its own (one table of random blobs with an index;
// CONNPOOL_BENCH_DB_MB, default 16 here, cached in $TMPDIR/connpool-bench):
//   BM_Raw/step:S             mkstemp beside the destination, sqlite3_backup_step(S) until done,
//                             journal_mode=DELETE, close, fsync, rename, fsync of the directory; an
//                             idle second thread exists meanwhile, as in any process with a pool
//   BM_Connpool/step:S        runner.submit(sqlite::backup_to(dest, {S, overwrite, verify=none}),
//                             callback).wait() on a warm pool and runner, no monitoring
//   BM_ConnpoolAllSinks/step:S  the same with the pool instrumented by a Hub and the job tracked by
//                             it, and all three sinks attached: JsonLinesSink (every delivered
//                             callback, to a file), a live TerminalView redrawn every 100 ms
//                             from snapshots (to /dev/null), and a TextfileWriter rewriting a
//                             .prom file every 100 ms
//   BM_SinkOverhead/rounds:N  the figure to quote: N rounds, each running one backup of each of
//                             the three above in a random order, timed by the process's CPU
//                             clock (all threads: the runner's worker, the sinks' threads) and by
//                             the wall clock; reports the median over rounds of the per-round
//                             ratios sinks/raw and connpool/raw (and their quartiles). Pairing
//                             within a round makes load that drifts over seconds (other builds
//                             on the machine) cancel; the median drops the rounds a burst hit.
//   CONNPOOL_BENCH_DB_MB=100 build/default/benchmarks/monitor_benchmark
//       --benchmark_filter=SinkOverhead --benchmark_min_time=0.001    (one command line)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <ostream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <sqlite3.h>

#include <connpool/jobs.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/terminal.hpp>
#include <connpool/pool.hpp>
#include <connpool/sqlite.hpp>

namespace {

namespace fs = std::filesystem;
namespace sq = connpool::sqlite;
namespace monitor = connpool::monitor;
using namespace std::chrono_literals;

// ---- rendering ------------------------------------------------------------------------------

monitor::MetricsSnapshot snapshot_with_jobs(std::size_t n) {
    monitor::MetricsSnapshot m;
    monitor::PoolSnapshot pool;
    pool.name = "backups";
    pool.stats = connpool::PoolStats{.max_size = 64, .open = 64, .idle = 0, .in_use = 64, .waiting = 12, .created = 70,
                                     .destroyed = 6, .acquired = 123456};
    pool.acquire_wait.bounds.assign(monitor::acquire_wait_bounds.begin(), monitor::acquire_wait_bounds.end());
    pool.acquire_wait.counts.assign(pool.acquire_wait.bounds.size() + 1, 100);
    m.pools.push_back(pool);
    for (std::size_t i = 0; i < n; ++i) {
        connpool::Progress p;
        p.id = i + 1;
        p.name = "customer_" + std::to_string(i) + ".db";
        p.state = connpool::JobState::running;
        p.done = i * 7;
        p.total = i * 10 + 10;
        p.unit = "pages";
        p.elapsed = std::chrono::milliseconds(i);
        p.waited = std::chrono::milliseconds(i / 2);
        p.eta = std::chrono::milliseconds(i * 3);
        m.jobs.push_back(std::move(p));
        m.last_success.push_back({"customer_" + std::to_string(i) + ".db", connpool::JobKind::backup,
                                  std::chrono::system_clock::now()});
    }
    m.jobs_by_state[1] = n;
    return m;
}

void BM_PrometheusRender(benchmark::State& state) {
    const auto m = snapshot_with_jobs(static_cast<std::size_t>(state.range(0)));
    std::size_t bytes = 0;
    for (auto _ : state) {
        std::string text = monitor::render_prometheus(m);
        bytes = text.size();
        benchmark::DoNotOptimize(text);
    }
    state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_PrometheusRender)->ArgName("jobs")->Arg(100)->Arg(10'000)->Unit(benchmark::kMillisecond);

/// A pool whose connections are nothing: for jobs that only report progress.
struct NullConnection {};
struct NullFactory {
    NullConnection create() const { return {}; }
};

void BM_HubScrape(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    monitor::Hub hub({.keep_ended = 100});
    // Feed the hub as a runner would, without running anything: one queued and one running
    // callback per job.
    std::vector<connpool::ProgressCallback> tracked;
    for (std::size_t i = 0; i < n; ++i) {
        tracked.push_back(hub.track());
        connpool::Progress p;
        p.id = i + 1;
        p.name = "customer_" + std::to_string(i) + ".db";
        tracked.back()(p);
        p.state = connpool::JobState::running;
        p.total = 1000;
        p.done = 10;
        p.unit = "pages";
        tracked.back()(p);
    }
    connpool::Pool pool{NullFactory{}, hub.instrument("backups", {.max_size = 4})};
    const auto watch = hub.watch("backups", pool);
    for (int i = 0; i < 100; ++i) (void)pool.acquire();
    for (auto _ : state) {
        std::string text = monitor::render_prometheus(hub.metrics());
        benchmark::DoNotOptimize(text);
    }
}
BENCHMARK(BM_HubScrape)->ArgName("jobs")->Arg(10'000)->Unit(benchmark::kMillisecond);

/// A stream that drops what it is given (the sink's own cost, not the disk's).
class NullBuffer : public std::streambuf {
protected:
    int overflow(int c) override { return c; }
    std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

void BM_JsonLinesProgressLine(benchmark::State& state) {
    NullBuffer buffer;
    std::ostream out(&buffer);
    monitor::JsonLinesSink sink(out, {.progress_interval = 0ms});
    connpool::Progress p;
    p.id = 1;
    p.name = "orders.db";
    p.state = connpool::JobState::running;
    p.total = 24418;
    p.unit = "pages";
    p.eta = 2s;
    for (auto _ : state) {
        ++p.done;
        sink.on_job({monitor::JobEventType::progress, 1, &p, std::chrono::system_clock::now()});
    }
}
BENCHMARK(BM_JsonLinesProgressLine);

// ---- backups ----------------------------------------------------------------------------------

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

void check(sqlite3* db, int rc, const char* what) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        fail(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
}

struct Source {
    fs::path dir;
    fs::path path;
    std::uint64_t bytes = 0;
};

/// The source database, built once per size and kept (under its final name only when complete).
const Source& source() {
    static const Source s = [] {
        Source s;
        std::uint64_t mb = 16;
        if (const char* env = std::getenv("CONNPOOL_BENCH_DB_MB"); env != nullptr && *env != '\0') mb = std::stoull(env);
        s.dir = fs::temp_directory_path() / "connpool-bench";
        fs::create_directories(s.dir);
        s.path = s.dir / ("monitor-source-" + std::to_string(mb) + "mb.db");
        if (!fs::exists(s.path)) {
            const fs::path temp = s.dir / (".monitor-source-" + std::to_string(::getpid()) + ".db");
            sqlite3* db = nullptr;
            check(db, sqlite3_open(temp.c_str(), &db), "open");
            const std::string rows = std::to_string(mb * 1'000'000 / 1100);
            const std::string sql = "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;"
                                    "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, payload BLOB);"
                                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < " + rows +
                                    ") INSERT INTO t SELECT i, abs(random()) % 100000, randomblob(1000) FROM n;"
                                    "CREATE INDEX t_k ON t(k); COMMIT;";
            check(db, sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), "build the source");
            sqlite3_close(db);
            fs::rename(temp, s.path);
        }
        s.bytes = fs::file_size(s.path);
        std::ifstream warm(s.path, std::ios::binary); // both sides read it from the page cache
        std::vector<char> chunk(1 << 20);
        while (warm.read(chunk.data(), static_cast<std::streamsize>(chunk.size()))) {
        }
        return s;
    }();
    return s;
}

fs::path destination() { return source().dir / ("monitor-copy-" + std::to_string(::getpid()) + ".db"); }

void fsync_path(const fs::path& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) fail("cannot fsync " + path.string());
    ::close(fd);
}

/// An idle thread, so the raw loop runs in a multi-threaded process as the contenders do.
class Bystander {
public:
    Bystander() : thread_([this] {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stop_; });
    }) {}
    ~Bystander() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::thread thread_;
};

void raw_backup(sqlite3* src, const fs::path& dest, int step) {
    std::string temp = (dest.parent_path() / ".raw-XXXXXX").string();
    const int fd = ::mkstemp(temp.data());
    if (fd < 0) fail("mkstemp");
    ::close(fd);
    sqlite3* out = nullptr;
    check(out, sqlite3_open(temp.c_str(), &out), "open the copy");
    check(out, sqlite3_exec(out, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", nullptr, nullptr, nullptr), "pragmas");
    sqlite3_backup* b = sqlite3_backup_init(out, "main", src, "main");
    if (b == nullptr) fail("backup_init");
    int rc = SQLITE_OK;
    while ((rc = sqlite3_backup_step(b, step)) == SQLITE_OK) {
    }
    sqlite3_backup_finish(b);
    check(out, rc, "backup_step");
    check(out, sqlite3_exec(out, "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr), "journal_mode");
    sqlite3_close(out);
    fsync_path(temp, O_RDONLY);
    fs::rename(temp, dest);
    fsync_path(dest.parent_path(), O_RDONLY | O_DIRECTORY);
}

void set_counters(benchmark::State& state) {
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * source().bytes));
}

void BM_Raw(benchmark::State& state) {
    const auto& src = source();
    sqlite3* db = nullptr;
    check(db, sqlite3_open_v2(src.path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), "open the source");
    const fs::path dest = destination();
    Bystander bystander;
    raw_backup(db, dest, static_cast<int>(state.range(0))); // warm, untimed
    for (auto _ : state) {
        raw_backup(db, dest, static_cast<int>(state.range(0)));
        state.PauseTiming();
        fs::remove(dest);
        state.ResumeTiming();
    }
    sqlite3_close(db);
    set_counters(state);
}

/// A pool, runner and (optionally) every sink, as a backup process sets them up; backup() runs
/// one backup through them.
class Contender {
public:
    Contender(const fs::path& dest, int step, bool sinks) : dest_(dest), step_(step), sinks_(sinks) {
        const auto& src = source();
        json_.open(src.dir / "monitor-bench.jsonl", std::ios::trunc);
        if (sinks_) hub_.add(std::make_shared<monitor::JsonLinesSink>(json_, monitor::JsonLinesOptions{.progress_interval = 0ms}));
        connpool::PoolOptions options{.max_size = 1};
        pool_.emplace(sq::Factory{src.path}, sinks_ ? hub_.instrument("bench", options) : options);
        if (sinks_) pool_watch_ = hub_.watch("bench", *pool_);
        runner_.emplace(*pool_);
        if (sinks_) runner_watch_ = hub_.watch(*runner_);
        null_ = std::fopen("/dev/null", "w");
        if (sinks_) {
            view_.emplace(null_, monitor::TerminalOptions{.live = true, .width = 100});
            screen_.emplace(*view_, [this] { return runner_->snapshot(); }, 100ms);
            textfile_.emplace(src.dir / "monitor-bench.prom", [this] { return monitor::render_prometheus(hub_.metrics()); }, 100ms);
        }
    }
    Contender(const Contender&) = delete;
    Contender& operator=(const Contender&) = delete;
    ~Contender() {
        screen_.reset();
        textfile_.reset();
        runner_watch_.reset();
        runner_.reset();
        pool_watch_.reset();
        pool_.reset();
        std::fclose(null_);
    }

    void backup() {
        auto job = sq::backup_to(dest_, {.pages_per_step = step_, .overwrite = true, .verify = sq::Check::none});
        const auto callback = [this](const connpool::Progress& p) {
            std::lock_guard lock(mu_);
            last_ = p; // as a UI or monitor would
        };
        const auto end = runner_->submit(std::move(job), sinks_ ? hub_.track(callback) : connpool::ProgressCallback(callback)).wait();
        if (end != connpool::JobState::succeeded) fail("backup " + std::string(connpool::to_string(end)));
    }

private:
    using BenchPool = connpool::Pool<sq::Connection, sq::Factory>;
    fs::path dest_;
    int step_;
    bool sinks_;
    monitor::Hub hub_;
    std::ofstream json_;
    std::optional<BenchPool> pool_;
    monitor::Watch pool_watch_;
    std::optional<connpool::JobRunner<BenchPool>> runner_;
    monitor::Watch runner_watch_;
    std::FILE* null_ = nullptr;
    std::optional<monitor::TerminalView> view_;
    std::optional<monitor::TerminalMonitor> screen_;
    std::optional<monitor::TextfileWriter> textfile_;
    std::mutex mu_;
    connpool::Progress last_;
};

/// Runs the timed backups through a warm pool and runner, with or without every sink attached.
void connpool_backups(benchmark::State& state, bool sinks) {
    const fs::path dest = destination();
    Contender contender(dest, static_cast<int>(state.range(0)), sinks);
    contender.backup(); // warm, untimed
    for (auto _ : state) {
        contender.backup();
        state.PauseTiming();
        fs::remove(dest);
        state.ResumeTiming();
    }
    set_counters(state);
}

void BM_Connpool(benchmark::State& state) { connpool_backups(state, false); }
void BM_ConnpoolAllSinks(benchmark::State& state) { connpool_backups(state, true); }

BENCHMARK(BM_Raw)->ArgName("step")->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Connpool)->ArgName("step")->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConnpoolAllSinks)->ArgName("step")->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);

double process_cpu_seconds() {
    timespec t{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

double wall_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/// Returns the q-quantile of `v` (sorted in place), by nearest rank.
double quantile(std::vector<double>& v, double q) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

void BM_SinkOverhead(benchmark::State& state) {
    const auto rounds = static_cast<std::size_t>(state.range(0));
    constexpr int step = 256;
    const fs::path dest = destination();
    const auto& src = source();
    sqlite3* db = nullptr;
    check(db, sqlite3_open_v2(src.path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), "open the source");
    Bystander bystander; // the raw loop runs in a process with threads, as the others do
    Contender plain(dest, step, false);
    Contender sinks(dest, step, true);
    std::vector<std::function<void()>> variants{[&] { raw_backup(db, dest, step); }, [&] { plain.backup(); },
                                                [&] { sinks.backup(); }};
    for (auto& v : variants) { // warm each, untimed
        v();
        fs::remove(dest);
    }
    std::mt19937 rng(12345);
    std::vector<double> cpu_sinks, cpu_plain, wall_sinks, wall_plain;
    std::array<double, 3> cpu_total{}, wall_total{};
    for (auto _ : state) {
        for (std::size_t r = 0; r < rounds; ++r) {
            std::array<int, 3> order{0, 1, 2};
            std::shuffle(order.begin(), order.end(), rng);
            std::array<double, 3> cpu{}, wall{};
            for (const int v : order) {
                const double c0 = process_cpu_seconds();
                const double w0 = wall_seconds();
                variants[static_cast<std::size_t>(v)]();
                wall[static_cast<std::size_t>(v)] = wall_seconds() - w0;
                cpu[static_cast<std::size_t>(v)] = process_cpu_seconds() - c0;
                state.PauseTiming();
                fs::remove(dest);
                state.ResumeTiming();
            }
            for (std::size_t v = 0; v < 3; ++v) {
                cpu_total[v] += cpu[v];
                wall_total[v] += wall[v];
            }
            cpu_plain.push_back(cpu[1] / cpu[0]);
            cpu_sinks.push_back(cpu[2] / cpu[0]);
            wall_plain.push_back(wall[1] / wall[0]);
            wall_sinks.push_back(wall[2] / wall[0]);
        }
    }
    sqlite3_close(db);
    const auto n = static_cast<double>(cpu_sinks.size());
    state.counters["cpu_sinks_vs_raw_p25"] = quantile(cpu_sinks, 0.25);
    state.counters["cpu_sinks_vs_raw_median"] = quantile(cpu_sinks, 0.5);
    state.counters["cpu_sinks_vs_raw_p75"] = quantile(cpu_sinks, 0.75);
    state.counters["cpu_connpool_vs_raw_median"] = quantile(cpu_plain, 0.5);
    state.counters["wall_sinks_vs_raw_median"] = quantile(wall_sinks, 0.5);
    state.counters["wall_connpool_vs_raw_median"] = quantile(wall_plain, 0.5);
    state.counters["cpu_ms_raw"] = cpu_total[0] / n * 1e3;
    state.counters["cpu_ms_connpool"] = cpu_total[1] / n * 1e3;
    state.counters["cpu_ms_sinks"] = cpu_total[2] / n * 1e3;
    state.counters["wall_ms_raw"] = wall_total[0] / n * 1e3;
    state.counters["wall_ms_sinks"] = wall_total[2] / n * 1e3;
    state.counters["rounds"] = n;
}
BENCHMARK(BM_SinkOverhead)->ArgName("rounds")->Arg(31)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
