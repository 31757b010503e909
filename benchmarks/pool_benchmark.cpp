// Acquire+release throughput and acquire-wait latency: connpool::Pool against a naive
// mutex + condition_variable + deque pool (naive_pool.hpp), in the same binary and run.
//
// Benchmarks, for each threads x pool-size configuration T x P in kConfigs:
//   BM_Naive/TxP, BM_Connpool/TxP
//       T threads share one pool of P connections and loop on
//       `auto lease = pool.acquire(); benchmark::DoNotOptimize(lease.get());`.
//       items_per_second is aggregate acquire+release cycles per wall-clock second (UseRealTime:
//       Google Benchmark sums the threads' cycles and averages their real times). No clock is
//       read per iteration. Extra counters:
//         span_items_per_second  all cycles over thread 0's wall-clock span of the whole loop
//                                (see Run); a conservative cross-check on items_per_second.
//         p50_ns p99_ns max_ns   BM_Connpool only: pool.stats() acquire waits at the end of the
//                                run (the pool's histogram; fast-path acquires count as 0).
//         warm_max_ns            BM_Connpool only: stats' max right after warming, before timing
//                                (warming creates connections, and the stats can't be reset).
//   BM_Naive_Wait/TxP, BM_Connpool_Wait/TxP
//       The same loop, but every acquire is timed with steady_clock into a per-thread buffer;
//       p50_ns, p99_ns and max_ns are over all acquires of all threads (exact, nearest rank).
//       The clock reads cost time: compare their throughput only with each other.
//   truncated=1 on any of them means the run hit its wall-clock budget (see Run) and was cut
//   short; its numbers are still valid rates over the part that ran.
//
// Every benchmark creates its pool in thread 0, warms it (P connections open) before timing,
// and destroys it in thread 0 after the timed loop, once all threads are done.
// Unless --benchmark_min_time is given, it defaults to 0.5 s per benchmark here.
//
//   build/default/benchmarks/pool_benchmark [--benchmark_filter=1x1]
//   python3 benchmarks/compare.py build/default/benchmarks/pool_benchmark [reps]

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <connpool/pool.hpp>

#include "naive_pool.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kAcquireTimeout = 10s;
constexpr double kDefaultMinTime = 0.5; // seconds per benchmark unless given on the command line
double run_budget_seconds = 2.0;        // set in main(): max(2 s, 4 x min_time)

struct Config {
    int threads;
    std::size_t pool_size;
};
constexpr Config kConfigs[] = {{1, 1}, {2, 2}, {4, 2}, {16, 4}, {64, 8}, {64, 64}};
// One thread alternating between this many pools of one connection each (BM_*/altN): the
// fast path must survive a thread that uses several pools.
constexpr std::size_t kAlternations[] = {2, 8};

// A stand-in for a driver's connection handle (PGconn*, sqlite3*, ...): cheap to move.
struct FakeConnection {
    std::uint64_t id = 0;
};
using Conn = std::unique_ptr<FakeConnection>;

struct FakeFactory {
    Conn create() {
        static std::atomic<std::uint64_t> next_id{0};
        return std::make_unique<FakeConnection>(FakeConnection{next_id.fetch_add(1) + 1});
    }
};

// ---- the two pools behind one interface ---------------------------------------------------

struct ConnpoolImpl {
    using Pool = connpool::Pool<Conn, FakeFactory>;
    static std::unique_ptr<Pool> make(std::size_t size) {
        // The defaults users get, except size and timeout: max_lifetime, idle_timeout and the
        // maintenance thread are on.
        connpool::PoolOptions options;
        options.max_size = size;
        options.acquire_timeout = kAcquireTimeout;
        return std::make_unique<Pool>(FakeFactory{}, std::move(options));
    }
    static std::size_t open(const Pool& pool) { return pool.stats().open; }
};

struct NaiveImpl {
    using Pool = bench::NaivePool<Conn, FakeFactory>;
    static std::unique_ptr<Pool> make(std::size_t size) {
        return std::make_unique<Pool>(FakeFactory{}, size, kAcquireTimeout);
    }
    static std::size_t open(const Pool& pool) { return pool.open(); }
};

// The pool all threads of the running benchmark share. Written by thread 0 only: before the
// timed loop (whose start is a barrier for all threads) and after it (so is its end).
template <class Impl>
struct Shared {
    static inline std::unique_ptr<typename Impl::Pool> pool;
};

// Thread 0, before the loop: a new pool with `size` connections open and idle.
template <class Impl>
bool set_up(benchmark::State& state, std::size_t size) {
    auto& pool = Shared<Impl>::pool;
    pool = Impl::make(size);
    {
        std::vector<decltype(pool->acquire())> held;
        held.reserve(size);
        for (std::size_t i = 0; i < size; ++i) held.push_back(pool->acquire());
    } // all given back
    if (Impl::open(*pool) != size) {
        state.SkipWithError("warming the pool did not open max_size connections");
        return false;
    }
    return true;
}

// ---- one run of a benchmark (Google Benchmark runs each several times) ---------------------
//
// Wall-clock budget: Google Benchmark picks the iteration count of a run from the previous,
// shorter one. A pool whose throughput collapses only once threads contend long enough makes
// that estimate overshoot by orders of magnitude (a run planned for 0.5 s taking minutes).
// So thread 0 starts a watchdog that, after run_budget_seconds, raises `stop`; iterations
// after that do nothing and are not counted as cycles. Each iteration reads `stop` (a relaxed
// load of a line nobody writes during a healthy run): the same negligible cost for both pools.
//
// Span: thread 0 reads the clock before the loop (after set-up) and after it (past the closing
// barrier, so every thread is done). All threads' cycles over that span cannot be inflated by
// threads that did not overlap in time, which Google Benchmark's per-thread-averaged real time
// can be when threads outnumber cores. The span includes the other threads' arrival at the
// starting barrier, so span_items_per_second errs low.
struct Run {
    alignas(64) std::atomic<bool> stop{false};
    alignas(64) std::mutex mutex; // guards everything below
    std::condition_variable changed;
    bool finished = false;  // thread 0 left the loop: the watchdog may go
    bool truncated = false; // the watchdog raised `stop`
    int deposited = 0;      // threads that have added their results below
    std::uint64_t cycles = 0;
    std::vector<std::uint32_t> waits_ns; // _Wait variants only
    std::thread watchdog;

    // Thread 0, before the loop.
    void begin() {
        stop.store(false, std::memory_order_relaxed);
        std::lock_guard lock(mutex);
        finished = truncated = false;
        deposited = 0;
        cycles = 0;
        waits_ns.clear();
        watchdog = std::thread([this] {
            std::unique_lock lock(mutex);
            const auto budget = std::chrono::duration<double>(run_budget_seconds);
            if (!changed.wait_for(lock, budget, [this] { return finished; })) {
                truncated = true;
                stop.store(true, std::memory_order_relaxed);
            }
        });
    }

    // Every thread, after the loop.
    void deposit(std::uint64_t thread_cycles, const std::vector<std::uint32_t>& thread_waits) {
        {
            std::lock_guard lock(mutex);
            cycles += thread_cycles;
            waits_ns.insert(waits_ns.end(), thread_waits.begin(), thread_waits.end());
            ++deposited;
        }
        changed.notify_all();
    }

    // Thread 0, after its deposit: stops the watchdog and waits for every thread's results.
    std::unique_lock<std::mutex> collect(int threads) {
        {
            std::lock_guard lock(mutex);
            finished = true;
        }
        changed.notify_all();
        watchdog.join();
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return deposited == threads; });
        return lock;
    }
};
Run run;

std::uint32_t saturate_ns(steady::duration d) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    constexpr auto top = std::numeric_limits<std::uint32_t>::max(); // 4.29 s
    return ns <= 0 ? 0u : ns >= std::int64_t{top} ? top : static_cast<std::uint32_t>(ns);
}

// Nearest rank, as connpool's own histogram does: the ceil(q * n)-th smallest.
std::uint32_t percentile(std::vector<std::uint32_t>& v, double q) {
    if (v.empty()) return 0;
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    rank = std::clamp<std::size_t>(rank, 1, v.size());
    const auto nth = v.begin() + static_cast<std::ptrdiff_t>(rank - 1);
    std::nth_element(v.begin(), nth, v.end());
    return *nth;
}

// One acquire+release per iteration. With TimeEachAcquire (the _Wait variants), each acquire
// is bracketed by steady_clock reads. A failure (an acquire timeout) raises `stop` for all, so
// every thread still runs out its loop and reaches the closing barrier before thread 0 tears
// the pool down.
template <class Impl, bool TimeEachAcquire>
void BM_Pool(benchmark::State& state, std::size_t pool_size) {
    constexpr bool is_connpool = std::is_same_v<Impl, ConnpoolImpl>;
    std::chrono::nanoseconds warm_max{};
    steady::time_point start{};
    if (state.thread_index() == 0) {
        run.begin();
        if (!set_up<Impl>(state, pool_size)) run.stop.store(true, std::memory_order_relaxed);
        if constexpr (is_connpool) warm_max = Shared<Impl>::pool->stats().acquire_wait_max;
        start = steady::now();
    }
    std::vector<std::uint32_t> waits;
    if constexpr (TimeEachAcquire) {
        // Sized (and its pages touched) up front, so the loop neither allocates nor faults.
        waits.resize(static_cast<std::size_t>(state.max_iterations));
    }
    std::size_t done = 0; // _Wait: cycles completed; else counted from `skipped`
    benchmark::IterationCount skipped = 0;

    for (auto _ : state) {
        if (run.stop.load(std::memory_order_relaxed)) [[unlikely]] {
            ++skipped;
            continue;
        }
        try {
            if constexpr (TimeEachAcquire) {
                std::uint32_t waited;
                {
                    const auto t0 = steady::now();
                    auto lease = Shared<Impl>::pool->acquire();
                    const auto t1 = steady::now();
                    benchmark::DoNotOptimize(lease.get());
                    waited = saturate_ns(t1 - t0);
                }
                waits[done++] = waited;
            } else {
                auto lease = Shared<Impl>::pool->acquire();
                benchmark::DoNotOptimize(lease.get());
            }
        } catch (const std::exception& e) {
            ++skipped;
            state.SkipWithError(e.what());
            run.stop.store(true, std::memory_order_relaxed);
        }
    }

    const steady::time_point end = steady::now(); // used by thread 0 only
    const auto cycles = static_cast<std::uint64_t>(state.iterations() - skipped);
    state.SetItemsProcessed(static_cast<std::int64_t>(cycles));
    if constexpr (TimeEachAcquire) waits.resize(done);
    run.deposit(cycles, waits);
    waits = {};
    if (state.thread_index() != 0) return;

    auto lock = run.collect(state.threads());
    if constexpr (TimeEachAcquire) {
        auto& all = run.waits_ns;
        state.counters["p50_ns"] = percentile(all, 0.50);
        state.counters["p99_ns"] = percentile(all, 0.99);
        state.counters["max_ns"] = all.empty() ? 0.0 : *std::max_element(all.begin(), all.end());
        all = {};
    } else {
        const std::chrono::duration<double> span = end - start;
        state.counters["span_items_per_second"] =
            span.count() > 0 ? static_cast<double>(run.cycles) / span.count() : 0.0;
        if constexpr (is_connpool) {
            if (const auto& pool = Shared<Impl>::pool) {
                const connpool::PoolStats st = pool->stats();
                state.counters["p50_ns"] = static_cast<double>(st.acquire_wait_p50.count());
                state.counters["p99_ns"] = static_cast<double>(st.acquire_wait_p99.count());
                state.counters["max_ns"] = static_cast<double>(st.acquire_wait_max.count());
                state.counters["warm_max_ns"] = static_cast<double>(warm_max.count());
            }
        }
    }
    if (run.truncated) state.counters["truncated"] = 1;
    lock.unlock();
    Shared<Impl>::pool.reset();
}

// One thread, `pools` pools of one connection each, acquiring from each in turn.
template <class Impl>
void BM_Alternate(benchmark::State& state, std::size_t pools) {
    std::vector<std::unique_ptr<typename Impl::Pool>> all;
    for (std::size_t i = 0; i < pools; ++i) {
        all.push_back(Impl::make(1));
        { auto warm = all.back()->acquire(); }
    }
    std::size_t next = 0;
    const steady::time_point start = steady::now();
    for (auto _ : state) {
        auto lease = all[next]->acquire();
        benchmark::DoNotOptimize(lease.get());
        next = next + 1 == pools ? 0 : next + 1;
    }
    const std::chrono::duration<double> span = steady::now() - start;
    state.SetItemsProcessed(state.iterations());
    state.counters["span_items_per_second"] =
        span.count() > 0 ? static_cast<double>(state.iterations()) / span.count() : 0.0;
}

using BenchmarkFn = void (*)(benchmark::State&, std::size_t);

void register_pair(const std::string& naive, const std::string& ours, BenchmarkFn naive_fn,
                   BenchmarkFn our_fn) {
    // Naive and connpool alternate per configuration, so a ratio compares runs made close
    // together in time on a noisy machine.
    for (const Config& c : kConfigs) {
        const std::string cfg = "/" + std::to_string(c.threads) + "x" + std::to_string(c.pool_size);
        for (const auto& [name, fn] : {std::pair{naive, naive_fn}, std::pair{ours, our_fn}}) {
            benchmark::RegisterBenchmark((name + cfg).c_str(), fn, c.pool_size)
                ->Threads(c.threads)
                ->UseRealTime();
        }
    }
}

} // namespace

int main(int argc, char** argv) {
    register_pair("BM_Naive", "BM_Connpool", &BM_Pool<NaiveImpl, false>,
                  &BM_Pool<ConnpoolImpl, false>);
    register_pair("BM_Naive_Wait", "BM_Connpool_Wait", &BM_Pool<NaiveImpl, true>,
                  &BM_Pool<ConnpoolImpl, true>);
    for (const std::size_t n : kAlternations) {
        const std::string cfg = "/alt" + std::to_string(n);
        benchmark::RegisterBenchmark(("BM_Naive" + cfg).c_str(), &BM_Alternate<NaiveImpl>, n)->UseRealTime();
        benchmark::RegisterBenchmark(("BM_Connpool" + cfg).c_str(), &BM_Alternate<ConnpoolImpl>, n)->UseRealTime();
    }

    // A short default minimum time, overridable on the command line (the CTest smoke test passes
    // --benchmark_min_time=0.001; a per-benchmark MinTime() would override that). The run budget
    // follows it.
    std::vector<char*> args(argv, argv + argc);
    double min_time = kDefaultMinTime;
    bool has_min_time = false;
    for (int i = 1; i < argc; ++i) {
        constexpr std::string_view flag = "--benchmark_min_time=";
        if (const std::string_view a = argv[i]; a.starts_with(flag)) {
            has_min_time = true;
            min_time = std::strtod(argv[i] + flag.size(), nullptr); // "0.5" or "0.5s"; "100x": 100
            if (a.ends_with("x") || min_time <= 0) min_time = kDefaultMinTime;
        }
    }
    run_budget_seconds = std::max(2.0, 4 * min_time);
    std::string default_min_time = "--benchmark_min_time=" + std::to_string(kDefaultMinTime);
    if (!has_min_time) args.push_back(default_min_time.data());
    int args_count = static_cast<int>(args.size());
    args.push_back(nullptr);

    benchmark::Initialize(&args_count, args.data());
    if (benchmark::ReportUnrecognizedArguments(args_count, args.data())) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
