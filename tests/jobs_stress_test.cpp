// Concurrency stress for the job layer: many submitters, cancellers, readers and throwing jobs
// on a small pool, checking per-job and global invariants afterwards; plus targeted races
// (a cancel landing just as a job starts, cancel_all racing submit, runners destroyed
// mid-flight). Runs under ThreadSanitizer in CI; CONNPOOL_STRESS_SCALE scales the work.
#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "counting_connection.hpp"

using namespace std::chrono_literals;
using connpool::JobHandle;
using connpool::JobKind;
using connpool::JobState;
using connpool::Progress;
using connpool::ProgressReporter;
using connpool::RunnerOptions;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;

namespace {

using FakePool = connpool::Pool<FakeConnection, FakeFactory>;
using Runner = connpool::JobRunner<FakePool>;
using FakeJob = connpool::Job<FakeConnection>;

constexpr auto kGuard = 20s; // deadlock guard only

long scaled(long n) {
    const char* s = std::getenv("CONNPOOL_STRESS_SCALE");
    const double k = s != nullptr ? std::atof(s) : 1.0;
    return std::max(1L, static_cast<long>(static_cast<double>(n) * (k > 0 ? k : 1.0)));
}

connpool::PoolOptions pool_options(std::size_t max_size) {
    connpool::PoolOptions o;
    o.max_size = max_size;
    o.acquire_timeout = 60s; // never reached: no job may fail for want of a connection
    o.maintenance_interval = 0ms;
    return o;
}

void update_max(std::atomic<int>& most, int now) {
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
}

/// Spins (yielding) until `flag` is set; false after kGuard.
bool spin_until(const std::atomic<bool>& flag) {
    const auto deadline = std::chrono::steady_clock::now() + kGuard;
    while (!flag.load()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::yield();
    }
    return true;
}

} // namespace

// ---- the big one ----------------------------------------------------------------------------

namespace {

enum class Plan { succeed, throw_runtime, throw_operation_error, run_until_stopped };

/// What one job did, as seen from inside its operation and its callbacks.
struct JobRecord {
    std::uint64_t index = 0;
    Plan plan = Plan::succeed;
    std::uint64_t steps = 0;
    std::uint64_t throw_at = 0;
    bool cancel_target = false; // the cancellers pick only these (cancel_all() reaches any)
    JobHandle handle;

    // Written by the operation (atomics: the test reads them while the job may still run).
    std::atomic<bool> entered{false};
    std::atomic<bool> exited{false};
    std::atomic<bool> observed_stop{false};
    std::atomic<bool> threw_runtime{false};
    std::atomic<bool> threw_operation_error{false};
    std::atomic<bool> exited_when_waited{true}; // false if wait() returned while the run was in it

    // Written only inside this job's callbacks: plain fields, so TSan sees any overlap.
    std::atomic<int> in_callback{0};
    std::atomic<int> overlaps{0};
    std::uint64_t callbacks = 0;
    std::uint64_t last_done = 0;
    std::uint64_t decreases = 0;
    std::uint64_t finals = 0;
    std::uint64_t after_final = 0;
    JobState first_state = JobState::succeeded; // replaced by the first callback
    JobState last_state = JobState::queued;
};

} // namespace

TEST(JobsStress, submitters_cancellers_and_throwing_jobs_keep_every_invariant) {
    constexpr int submitters = 8;
    constexpr std::size_t pool_size = 4;
    const long jobs_per_submitter = scaled(120);

    FakeFactory f;
    std::deque<JobRecord> records; // stable addresses
    for (long i = 0; i < submitters * jobs_per_submitter; ++i) {
        auto& r = records.emplace_back();
        r.index = static_cast<std::uint64_t>(i);
        std::minstd_rand rng(static_cast<unsigned>(i) * 7919u + 1u);
        const unsigned roll = rng() % 100;
        r.plan = roll < 10   ? Plan::throw_runtime
                 : roll < 20 ? Plan::throw_operation_error
                 : roll < 30 ? Plan::run_until_stopped
                             : Plan::succeed;
        r.steps = 1 + rng() % 40;
        r.throw_at = rng() % r.steps;
        r.cancel_target = r.plan == Plan::run_until_stopped || rng() % 100 < 15;
    }

    std::atomic<int> running{0};
    std::atomic<int> most_running{0};
    std::atomic<long> sharing_violations{0};
    std::atomic<long> sink_calls{0};
    std::atomic<long> callback_throws{0};
    std::atomic<long> snapshot_violations{0};
    std::atomic<long> ended_jobs{0}; // final callbacks delivered
    const long total_jobs = submitters * jobs_per_submitter;
    connpool::PoolStats final_stats{};
    std::uint64_t fakes_alive_at_end = 0; // FakeConnections created - destroyed, with final_stats
    {
        FakePool pool{f, pool_options(pool_size)};
        RunnerOptions o;
        o.progress_interval = 1ms;
        o.keep_ended = 64;
        o.on_callback_error = [&](const Progress&, std::exception_ptr) { sink_calls.fetch_add(1); };
        {
            Runner runner{pool, o};
            ASSERT_EQ(runner.max_running(), pool_size);

            std::mutex handles_mutex;
            std::vector<JobHandle> handles; // for the cancellers
            std::atomic<int> submitting{submitters};
            std::atomic<bool> done{false};

            auto operation = [&](JobRecord& rec) {
                return [&rec, &running, &most_running, &sharing_violations](FakeConnection& c, ProgressReporter& r) {
                    rec.entered = true;
                    update_max(most_running, running.fetch_add(1) + 1);
                    if (c.enter() != 0) sharing_violations.fetch_add(1);
                    c.uses++; // plain write: TSan flags two jobs sharing a connection
                    struct Leave {
                        JobRecord& rec;
                        FakeConnection& c;
                        std::atomic<int>& running;
                        ~Leave() {
                            c.leave();
                            running.fetch_sub(1);
                            rec.exited = true;
                        }
                    } leave{rec, c, running};
                    r.set_total(rec.steps, "rows");
                    const auto deadline = std::chrono::steady_clock::now() + kGuard;
                    for (std::uint64_t i = 0;; ++i) {
                        if (r.stop_requested()) {
                            rec.observed_stop = true;
                            return;
                        }
                        if (rec.plan == Plan::run_until_stopped) {
                            if (std::chrono::steady_clock::now() > deadline)
                                throw connpool::OperationError("never stopped (deadlock guard)");
                            if (i % 8 == 0) r.count_retry();
                            std::this_thread::yield();
                            continue;
                        }
                        if (i == rec.steps) return;
                        if (i == rec.throw_at && rec.plan == Plan::throw_runtime) {
                            rec.threw_runtime = true;
                            throw std::runtime_error("injected runtime_error " + std::to_string(rec.index));
                        }
                        if (i == rec.throw_at && rec.plan == Plan::throw_operation_error) {
                            rec.threw_operation_error = true;
                            throw connpool::OperationError("injected OperationError " + std::to_string(rec.index));
                        }
                        r.advance(1);
                        if (i % 16 == 15) std::this_thread::yield();
                    }
                };
            };
            auto callback = [&](JobRecord& rec) {
                return [&rec, &callback_throws, &ended_jobs](const Progress& p) {
                    if (rec.in_callback.fetch_add(1) != 0) rec.overlaps.fetch_add(1);
                    struct Leave {
                        std::atomic<int>& n;
                        ~Leave() { n.fetch_sub(1); }
                    } leave{rec.in_callback};
                    if (rec.callbacks++ == 0) rec.first_state = p.state;
                    if (rec.finals != 0) ++rec.after_final;
                    if (p.done < rec.last_done) ++rec.decreases;
                    rec.last_done = p.done;
                    rec.last_state = p.state;
                    if (connpool::is_final(p.state)) {
                        ++rec.finals;
                        ended_jobs.fetch_add(1);
                    }
                    if ((rec.index + rec.callbacks) % 23 == 0) {
                        callback_throws.fetch_add(1);
                        throw std::runtime_error("callback throws");
                    }
                };
            };

            std::vector<std::thread> threads;
            for (int t = 0; t < submitters; ++t) {
                threads.emplace_back([&, t] {
                    std::vector<JobRecord*> mine;
                    for (long i = 0; i < jobs_per_submitter; ++i) {
                        JobRecord& rec = records[static_cast<std::size_t>(t * jobs_per_submitter + i)];
                        const auto kind = rec.index % 2 == 0 ? JobKind::backup : JobKind::restore;
                        rec.handle = runner.submit(FakeJob{"job " + std::to_string(rec.index), kind, operation(rec)},
                                                   callback(rec));
                        if (rec.cancel_target) {
                            std::lock_guard lock(handles_mutex);
                            handles.push_back(rec.handle);
                        }
                        mine.push_back(&rec);
                    }
                    submitting.fetch_sub(1);
                    for (JobRecord* rec : mine) {
                        if (!rec->handle.wait_for(kGuard)) {
                            ADD_FAILURE() << "job " << rec->index << " never ended";
                            continue;
                        }
                        // wait() returned: the run, if it was entered, must have left.
                        if (rec->entered.load() && !rec->exited.load()) rec->exited_when_waited = false;
                    }
                });
            }
            // Cancellers: random jobs, plus one cancel_all once everything is submitted and half
            // the jobs have ended (so that plenty of them ran).
            for (int t = 0; t < 2; ++t) {
                threads.emplace_back([&, t] {
                    std::minstd_rand rng(static_cast<unsigned>(t) + 100u);
                    bool cancelled_all = t != 0;
                    while (!done.load()) {
                        std::optional<JobHandle> victim;
                        {
                            std::lock_guard lock(handles_mutex);
                            if (!handles.empty()) victim = handles[rng() % handles.size()];
                        }
                        if (victim) victim->cancel();
                        if (!cancelled_all && submitting.load() == 0 && ended_jobs.load() >= total_jobs / 2) {
                            runner.cancel_all();
                            cancelled_all = true;
                        }
                        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
                    }
                });
            }
            // A monitor: snapshots are in submission order and make sense.
            threads.emplace_back([&] {
                while (!done.load()) {
                    const auto snap = runner.snapshot();
                    for (std::size_t i = 0; i < snap.size(); ++i) {
                        const Progress& p = snap[i];
                        if (i > 0 && p.id <= snap[i - 1].id) snapshot_violations.fetch_add(1);
                        if (p.total != 0 && p.done > p.total) snapshot_violations.fetch_add(1);
                        if (p.state == JobState::queued && p.elapsed != 0ns) snapshot_violations.fetch_add(1);
                        if (p.state != JobState::failed && !p.error.empty()) snapshot_violations.fetch_add(1);
                    }
                    const auto s = pool.stats();
                    if (s.in_use > pool_size || s.open > pool_size) snapshot_violations.fetch_add(1);
                    std::this_thread::sleep_for(1ms);
                }
            });

            for (int t = 0; t < submitters; ++t) threads[static_cast<std::size_t>(t)].join();
            runner.wait_all();
            // (No lease check here: a worker that was acquiring for a job cancelled meanwhile
            // may still be handing back its unused lease. JobHandle/wait_all unit tests cover
            // "no lease out after wait" where nothing is cancelled.)
            done = true;
            for (std::size_t t = submitters; t < threads.size(); ++t) threads[t].join();
        } // ~JobRunner
        final_stats = pool.stats();
        fakes_alive_at_end = f.registry->created.load() - f.registry->destroyed.load();
    } // ~Pool

    // ---- per job ----
    long entered = 0, succeeded = 0, failed_in_run = 0, cancelled_after_start = 0, runtime_throws = 0;
    for (auto& rec : records) {
        SCOPED_TRACE("job " + std::to_string(rec.index));
        const JobState state = rec.handle.state();
        ASSERT_TRUE(connpool::is_final(state));
        EXPECT_EQ(rec.overlaps.load(), 0);
        EXPECT_EQ(rec.decreases, 0u);
        EXPECT_EQ(rec.finals, 1u);
        EXPECT_EQ(rec.after_final, 0u);
        EXPECT_EQ(rec.first_state, JobState::queued);
        EXPECT_EQ(rec.last_state, state);
        EXPECT_TRUE(rec.exited_when_waited.load()) << "wait() returned while the operation was still running";
        const std::string error = rec.handle.error();
        if (!rec.entered.load()) {
            // Never ran: only a cancellation can explain it (the pool never times out or closes).
            EXPECT_EQ(state, JobState::cancelled);
            EXPECT_EQ(error, "");
            continue;
        }
        ++entered;
        if (rec.threw_runtime.load()) {
            ++runtime_throws;
            ++failed_in_run;
            EXPECT_EQ(state, JobState::failed);
            EXPECT_EQ(error, "injected runtime_error " + std::to_string(rec.index));
        } else if (rec.threw_operation_error.load()) {
            ++failed_in_run;
            EXPECT_EQ(state, JobState::failed);
            EXPECT_EQ(error, "injected OperationError " + std::to_string(rec.index));
        } else if (rec.observed_stop.load()) {
            ++cancelled_after_start;
            EXPECT_EQ(state, JobState::cancelled);
            EXPECT_EQ(error, "");
        } else {
            ++succeeded;
            EXPECT_EQ(state, JobState::succeeded);
            EXPECT_EQ(error, "");
            const Progress p = rec.handle.progress();
            EXPECT_EQ(p.done, rec.steps);
            EXPECT_EQ(p.total, rec.steps);
        }
    }

    // ---- global ----
    EXPECT_EQ(entered, succeeded + failed_in_run + cancelled_after_start);
    EXPECT_GT(succeeded, 0);
    EXPECT_GT(failed_in_run, 0);
    EXPECT_LE(most_running.load(), static_cast<int>(pool_size));
    EXPECT_EQ(sharing_violations.load(), 0);
    EXPECT_EQ(snapshot_violations.load(), 0);
    EXPECT_EQ(sink_calls.load(), callback_throws.load());

    EXPECT_EQ(final_stats.in_use, 0u);
    EXPECT_EQ(final_stats.open, final_stats.idle);
    EXPECT_EQ(final_stats.created - final_stats.destroyed, final_stats.open);
    EXPECT_EQ(fakes_alive_at_end, final_stats.open);
    EXPECT_EQ(final_stats.discarded, static_cast<std::uint64_t>(runtime_throws));
    // A worker acquires before it takes the job, so a job cancelled meanwhile costs an unused
    // lease; every job that ran had one.
    EXPECT_GE(final_stats.acquired, static_cast<std::uint64_t>(entered));
    EXPECT_EQ(f.registry->created.load() - f.registry->destroyed.load(), 0u); // pool destroyed: all gone
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
    EXPECT_EQ(f.registry->alive_count(), 0u);
}

// ---- targeted races -------------------------------------------------------------------------

// A cancel that lands while a queued job is being started must either cancel it before it
// starts (its operation never runs) or come too late (the job runs and, never looking at
// stop_requested(), succeeds). It must never end the job `cancelled` while its operation runs
// anyway, holding a lease that wait() no longer waits for.
TEST(JobsStress, a_cancel_racing_the_start_of_a_job_either_prevents_the_run_or_lets_it_finish) {
    const long iterations = scaled(2000);
    const auto budget = std::chrono::steady_clock::now() + 3s; // whichever comes first
    FakeFactory f;
    FakePool pool{f, pool_options(1)};
    Runner runner{pool}; // one worker: jobs run one after another
    struct Victim {
        JobHandle handle;
        std::atomic<bool> entered{false};
        std::atomic<bool> exited{false};
        bool ended_while_running = false;
    };
    std::deque<Victim> victims;
    long cancelled_before = 0, too_late = 0, violations = 0;
    long delay = 0; // spin iterations between releasing the blocker and cancelling the victim

    auto check = [&](Victim& v) { // once the victim's run (if any) is certainly over
        const JobState s = v.handle.state();
        if (s == JobState::cancelled) {
            ++cancelled_before;
            if (v.entered.load() || v.ended_while_running) ++violations;
        } else if (s == JobState::succeeded) {
            ++too_late;
            if (!v.entered.load()) ++violations;
        } else {
            ++violations;
        }
    };

    long iterations_run = 0;
    // Stops early once the race has shown itself: three violations are proof enough.
    for (long i = 0; i < iterations && violations < 3 && std::chrono::steady_clock::now() < budget; ++i) {
        ++iterations_run;
        std::atomic<bool> blocker_started{false}, blocker_go{false};
        JobHandle blocker = runner.submit(FakeJob{"blocker", JobKind::backup, [&](FakeConnection&, ProgressReporter&) {
                                                      blocker_started = true;
                                                      // A pure spin (no yield), so this worker leaves it the moment
                                                      // blocker_go is set: it keeps the timing tight.
                                                      const auto deadline = std::chrono::steady_clock::now() + kGuard;
                                                      for (unsigned n = 1; !blocker_go.load(); ++n) {
                                                          if (n % 4096 == 0 && std::chrono::steady_clock::now() > deadline) break;
                                                      }
                                                  }});
        ASSERT_TRUE(spin_until(blocker_started));
        // The previous victim's run, if any, is over: the only worker is running the blocker.
        if (!victims.empty()) check(victims.back());

        Victim& v = victims.emplace_back();
        v.handle = runner.submit(FakeJob{"victim", JobKind::restore, [&v](FakeConnection&, ProgressReporter&) {
                                             v.entered = true;
                                             // Busy for a moment, never looking at stop_requested().
                                             const auto until = std::chrono::steady_clock::now() + 20us;
                                             while (std::chrono::steady_clock::now() < until) {
                                             }
                                             v.exited = true;
                                         }});
        blocker_go = true;
        for (long k = 0; k < delay; ++k) std::atomic_signal_fence(std::memory_order_seq_cst); // not optimized away
        v.handle.cancel();
        ASSERT_TRUE(v.handle.wait_for(kGuard));
        if (v.entered.load() && !v.exited.load()) v.ended_while_running = true;
        // Steer the delay towards the moment the worker starts the victim.
        if (v.handle.state() == JobState::cancelled && !v.entered.load()) {
            // Capped: when the worker shares a core with this thread, spinning longer only
            // delays it further.
            delay = std::min(delay + 1 + delay / 8, 1L << 20);
        } else {
            delay = std::max(0L, delay - 1 - delay / 8);
        }
        ASSERT_TRUE(blocker.wait_for(kGuard));
        if (victims.size() > 2) victims.pop_front();
    }
    runner.wait_all();
    // Drain: one more job behind the last victim proves its run is over.
    ASSERT_EQ(runner.submit(FakeJob{"drain", JobKind::backup, [](FakeConnection&, ProgressReporter&) {}}).wait(),
              JobState::succeeded);
    check(victims.back());
    EXPECT_EQ(violations, 0) << "in " << iterations_run << " iterations; cancelled before the start: "
                             << cancelled_before << ", too late: " << too_late;
    RecordProperty("cancelled_before", std::to_string(cancelled_before));
    RecordProperty("too_late", std::to_string(too_late));
    EXPECT_EQ(pool.stats().in_use, 0u);
}

// Every state change is delivered, starting with "queued", even for a job that cancel_all()
// reaches while submit() is still registering it.
TEST(JobsStress, every_job_reports_queued_first_even_when_cancel_all_races_submit) {
    const long jobs = scaled(20000);
    FakeFactory f;
    FakePool pool{f, pool_options(2)};
    RunnerOptions o;
    o.keep_ended = 16; // keeps cancel_all's copy of the job list short
    Runner runner{pool, o};
    struct Seen {
        std::vector<JobState> states; // written only in the job's callbacks
    };
    std::deque<Seen> seen(static_cast<std::size_t>(jobs));
    std::vector<JobHandle> handles(static_cast<std::size_t>(jobs));
    std::atomic<bool> done{false};
    std::thread canceller([&] {
        while (!done.load()) runner.cancel_all();
    });
    for (long i = 0; i < jobs; ++i) {
        Seen& s = seen[static_cast<std::size_t>(i)];
        handles[static_cast<std::size_t>(i)] =
            runner.submit(FakeJob{"j", JobKind::backup, [](FakeConnection&, ProgressReporter&) {}},
                          [&s](const Progress& p) { s.states.push_back(p.state); });
    }
    done = true;
    canceller.join();
    runner.wait_all();
    long missing_queued = 0, cancelled = 0;
    for (std::size_t i = 0; i < seen.size(); ++i) {
        ASSERT_TRUE(handles[i].wait_for(kGuard));
        if (handles[i].state() == JobState::cancelled) ++cancelled;
        const auto& states = seen[i].states;
        if (states.empty() || states.front() != JobState::queued) ++missing_queued;
    }
    EXPECT_EQ(missing_queued, 0) << "of " << jobs << " jobs (" << cancelled << " cancelled)";
    EXPECT_EQ(pool.stats().in_use, 0u);
}

// Two runners on one pool: each may run up to the pool's size, but together they can never hold
// more leases than the pool has.
TEST(JobsStress, two_runners_sharing_a_pool_never_run_more_jobs_than_it_has_connections) {
    const long jobs = scaled(200);
    FakeFactory f;
    {
        FakePool pool{f, pool_options(3)};
        std::atomic<int> running{0}, most{0};
        std::atomic<long> sharing{0};
        {
            Runner a{pool}, b{pool};
            auto op = [&](FakeConnection& c, ProgressReporter& r) {
                update_max(most, running.fetch_add(1) + 1);
                if (c.enter() != 0) sharing.fetch_add(1);
                c.uses++;
                for (int i = 0; i < 10; ++i) {
                    r.advance(1);
                    std::this_thread::yield();
                }
                c.leave();
                running.fetch_sub(1);
            };
            std::thread ta([&] {
                for (long i = 0; i < jobs; ++i) (void)a.submit(FakeJob{"a", JobKind::backup, op});
                a.wait_all();
            });
            std::thread tb([&] {
                for (long i = 0; i < jobs; ++i) (void)b.submit(FakeJob{"b", JobKind::restore, op});
                b.wait_all();
            });
            ta.join();
            tb.join();
            for (const auto& p : a.snapshot()) EXPECT_EQ(p.state, JobState::succeeded);
            for (const auto& p : b.snapshot()) EXPECT_EQ(p.state, JobState::succeeded);
        }
        EXPECT_LE(most.load(), 3);
        EXPECT_EQ(sharing.load(), 0);
        const auto s = pool.stats();
        EXPECT_GE(s.acquired, static_cast<std::uint64_t>(2 * jobs));
        EXPECT_EQ(s.in_use, 0u);
        EXPECT_EQ(s.open, s.idle);
    }
    EXPECT_EQ(f.registry->alive_count(), 0u);
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
}

// Runners destroyed while jobs are queued and running: every job ends (queued ones cancelled,
// running ones finished), every handle still answers, and the pool's books balance.
TEST(JobsStress, runners_destroyed_mid_flight_end_every_job_and_balance_the_pool) {
    const long rounds = scaled(60);
    FakeFactory f;
    {
        FakePool pool{f, pool_options(3)};
        std::minstd_rand rng(42);
        long runs = 0, discards = 0;
        for (long round = 0; round < rounds; ++round) {
            std::vector<JobHandle> handles;
            std::atomic<long> entered{0}, runtime_throws{0};
            {
                Runner runner{pool};
                const int n = 1 + static_cast<int>(rng() % 12);
                for (int i = 0; i < n; ++i) {
                    const bool throws = rng() % 5 == 0;
                    handles.push_back(runner.submit(FakeJob{"j", JobKind::backup, [&, throws](FakeConnection&, ProgressReporter& r) {
                        entered.fetch_add(1);
                        for (int k = 0; k < 20; ++k) {
                            r.advance(1);
                            std::this_thread::yield();
                        }
                        if (throws) {
                            runtime_throws.fetch_add(1);
                            throw std::runtime_error("boom");
                        }
                    }}));
                }
                if (rng() % 3 == 0) handles[rng() % handles.size()].cancel();
                // ~JobRunner here, with some jobs queued and some running.
            }
            runs += entered.load();
            discards += runtime_throws.load();
            long ended_in_run = 0;
            for (auto& h : handles) {
                ASSERT_TRUE(h.wait_for(0ms)) << "a job outlived its runner";
                const JobState s = h.state();
                ASSERT_TRUE(connpool::is_final(s));
                if (s != JobState::cancelled) ++ended_in_run;
            }
            EXPECT_EQ(ended_in_run, entered.load()) << "round " << round;
            const auto st = pool.stats();
            EXPECT_EQ(st.in_use, 0u);
            EXPECT_EQ(st.open, st.idle);
            EXPECT_EQ(st.created - st.destroyed, st.open);
        }
        const auto st = pool.stats();
        EXPECT_GE(st.acquired, static_cast<std::uint64_t>(runs));
        EXPECT_EQ(st.discarded, static_cast<std::uint64_t>(discards));
    }
    EXPECT_EQ(f.registry->alive_count(), 0u);
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
}

// A job holds exactly one lease while it runs; the runner should not take leases for jobs it
// does not run. Here the pool has one connection for the runner (the test holds the other):
// job A runs on it while job B waits, B's worker sleeping inside pool.acquire(). When A ends,
// A's worker sees B still queued and acquires as well, so two workers compete for one queued
// job: the loser gets a lease later and hands it back unused (with a real database the pool may
// even open a connection just for that). To make the interleaving certain, the pool's
// `acquired` event holds the winner (before it takes B) until the other worker is inside
// acquire() too, or 200 ms have passed (what a runner without the problem costs).
TEST(JobsStress, the_runner_takes_a_lease_only_for_a_job_it_runs) {
    const long rounds = 3;
    FakeFactory f;
    std::atomic<FakePool*> pool_ptr{nullptr};
    std::atomic<bool> armed{false};
    std::atomic<std::thread::id> a_thread{};
    auto o = pool_options(2);
    o.on_event = [&](const connpool::PoolEvent& e) {
        if (e.kind != connpool::PoolEventKind::acquired || !armed.exchange(false)) return;
        // A's worker came by the fast path and does not count as waiting; B's worker was
        // asleep in the queue and still counts while it is being handed the connection.
        const std::size_t others = std::this_thread::get_id() == a_thread.load() ? 1 : 2;
        const auto until = std::chrono::steady_clock::now() + 200ms;
        while (pool_ptr.load()->stats().waiting < others && std::chrono::steady_clock::now() < until)
            std::this_thread::yield();
    };
    FakePool pool{f, o};
    pool_ptr = &pool;
    auto held = pool.acquire(); // leaves one connection for the runner
    long wasted = 0;
    for (long round = 0; round < rounds; ++round) {
        const auto before = pool.stats().acquired;
        {
            Runner runner{pool};
            std::atomic<bool> a_started{false}, a_go{false};
            JobHandle a = runner.submit(FakeJob{"a", JobKind::backup, [&](FakeConnection&, ProgressReporter&) {
                                                    a_thread = std::this_thread::get_id();
                                                    a_started = true;
                                                    (void)spin_until(a_go);
                                                }});
            ASSERT_TRUE(spin_until(a_started));
            JobHandle b = runner.submit(FakeJob{"b", JobKind::backup, [](FakeConnection&, ProgressReporter&) {}});
            // B's worker is now asleep waiting for the connection A holds.
            const auto deadline = std::chrono::steady_clock::now() + kGuard;
            while (pool.stats().waiting == 0) {
                ASSERT_LT(std::chrono::steady_clock::now(), deadline);
                std::this_thread::yield();
            }
            armed = true;
            a_go = true;
            ASSERT_TRUE(a.wait_for(kGuard));
            ASSERT_TRUE(b.wait_for(kGuard));
            ASSERT_EQ(a.state(), JobState::succeeded);
            ASSERT_EQ(b.state(), JobState::succeeded);
        } // ~JobRunner: a worker still waiting gets the connection once B is done and returns it
        armed = false;
        const auto acquired = pool.stats().acquired - before;
        EXPECT_GE(acquired, 2u);
        wasted += static_cast<long>(acquired) - 2;
    }
    EXPECT_EQ(wasted, 0) << "leases taken and handed back unused, over " << rounds << " rounds of 2 jobs";
    EXPECT_EQ(pool.stats().in_use, 1u); // only `held`
}
