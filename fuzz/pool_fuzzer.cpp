// Model-based fuzz target for Pool: one driver thread runs random operations on a
// Pool<FuzzConn, FuzzFactory, FuzzClock> whose factory injects faults (create/validate/reset/
// destroy fail or throw, creations are slow, the event hook throws) and whose clock moves only
// when the input says so; after every step it waits for the pool to be at rest (no create() in
// flight, open == idle + in_use) and compares it with the reference model: the counts, the
// invariants, and which connection each lease holds.
//
// Input: a set-up (sizes, limits, lifetimes, hook, how the input ends), then operations (see
// kOperations); read back to front, as FuzzedDataProvider hands out integers. Deadlines are
// short (at most a few ms), except the acquires the model says must succeed (1 s), so an
// input runs for a few ms. fuzz/README.md says how to run it.
//
// The model (pool_model.hpp holds its ground truth: live connections, their creation times,
// the driver's leases, the factory's calls) predicts exactly: every counter (created,
// destroyed, acquired, timeouts, cancelled, create_failures, validation_failures, discarded,
// retirements), whether a released connection is kept or destroyed, what resize() leaves
// open, that retire_all() and close() leave no idle connection, what a paused or closed pool
// does, and when an acquire must succeed. What it does not predict (which idle connection an
// acquire gets, whether a short acquire beats a background creation) it checks for soundness
// only: the connection was idle, is alive and is held by nobody else.

#include "pool_model.hpp"
#include "support/check.hpp"
#include "support/operations.hpp"

#include <connpool/pool.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <sys/prctl.h> // PR_SET_TIMERSLACK: short waits cost what they say

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace connpool::fuzz {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

Trace trace;

using FuzzPool = Pool<FuzzConn, FuzzFactory, FuzzClock>;
using FuzzLease = Lease<FuzzConn>;

// The set-up decoded from the start of the input.
struct Setup {
    std::size_t max_size = 1;
    std::size_t min_idle = 0;
    std::size_t max_concurrent_creates = 1;
    milliseconds validate_after_idle{0};
    milliseconds max_lifetime{0}; // under 10 s: no jitter, so the model knows each expiry
    milliseconds idle_timeout{0};
    bool hook = false;
    bool close_before_leases = false; // at the end: destroy the pool while leases are out
};

// A lease the driver holds, and what the model knows about it.
struct Held {
    FuzzLease lease;
    std::uint64_t id = 0;
    bool doomed = false;  // held across retire_all() or close(): destroyed when given back
    bool expired = false; // maintain() saw it past max_lifetime: destroyed when given back
};

// What the model knows of a live connection's idle time, measured as the pool measures it
// (the design note: from its creation or last hand-out, or the last maintain() that saw its
// lease running; never later than the true release, so it errs towards early).
struct ConnInfo {
    bool handed_out = false;      // handed out since its creation
    std::int64_t since = 0;       // creation or last hand-out (FuzzClock ns)
    std::int64_t seen_in_use = 0; // the last maintain() that saw its current lease (0: none)
    [[nodiscard]] std::int64_t idle_since() const noexcept { return std::max(since, seen_in_use); }
};

// How an acquire ended.
enum class Outcome { lease, timeout, cancelled, closed, other };
constexpr const char* kOutcomes[] = {"a lease", "AcquireTimeout", "AcquireCancelled", "PoolClosed",
                                     "another exception"};

// What an acquire's outcome may be, as the model sees it.
enum class Expect { any, lease, timeout, cancelled, closed };

class PoolHarness {
public:
    static constexpr std::size_t kMaxHeld = 12;
    static constexpr milliseconds kMustSucceed{1000};
    static constexpr auto kQuiescenceLimit = std::chrono::seconds(2);

    PoolHarness(FuzzedDataProvider& input, const Setup& setup) : input_(input), setup_(setup) {
        state_ = std::make_shared<FactoryState>();
        PoolOptions o;
        o.max_size = setup.max_size;
        o.min_idle = setup.min_idle;
        o.acquire_timeout = 2ms;
        o.idle_timeout = setup.idle_timeout;
        o.max_lifetime = setup.max_lifetime;
        o.validate_after_idle = setup.validate_after_idle;
        o.max_concurrent_creates = setup.max_concurrent_creates;
        o.create_retry_initial = 1ms;
        o.create_retry_max = 1ms;
        o.maintenance_interval = 0ms;
        if (setup.hook) {
            o.on_event = [state = state_](const PoolEvent&) {
                state->events.fetch_add(1, std::memory_order_relaxed);
                if (state->hook_throws.load(std::memory_order_relaxed)) throw InjectedFault("hook (injected)");
            };
        }
        pool_ = std::make_unique<FuzzPool>(FuzzFactory{state_}, std::move(o));
        max_size_ = setup.max_size;
    }

    PoolHarness(const PoolHarness&) = delete;
    PoolHarness& operator=(const PoolHarness&) = delete;

    // ---- operations ------------------------------------------------------------------------

    // acquire_for with a short deadline (the outcome is checked when the model knows it), or
    // with a long one when the model says it must succeed (or must fail at once).
    void acquire_for() {
        const int shape = input_.ConsumeIntegralInRange<int>(0, 7);
        milliseconds d{0};
        switch (shape) {
        case 0: d = 0ms; break;
        case 1: d = -1ms; break;
        case 2: d = milliseconds::min(); break;
        case 3: d = 1ms; break;
        case 4: d = 3ms; break;
        default: d = kMustSucceed; break; // only when the outcome is known at once or a lease
        }
        const Expect expect = expect_acquire(d);
        if (d == kMustSucceed && expect != Expect::lease && expect != Expect::closed && expect != Expect::timeout) {
            d = 2ms;
        }
        if (d == kMustSucceed && expect == Expect::timeout) d = 1ms; // paused: don't wait a second
        trace.step("acquire_for(%lldms)", static_cast<long long>(d.count() == milliseconds::min().count() ? -1 : d.count()));
        if (d.count() == milliseconds::min().count()) trace.result(" (milliseconds::min())");
        if (held_.size() >= kMaxHeld) {
            trace.result(" skipped: the driver holds %zu leases", held_.size());
            return;
        }
        std::optional<FuzzLease> got;
        const Outcome out = run_acquire([&] { got.emplace(pool_->acquire_for(d)); });
        check_acquire(out, expect_acquire(d), std::move(got));
    }

    void try_acquire() {
        trace.step("try_acquire()");
        if (held_.size() >= kMaxHeld) {
            trace.result(" skipped: the driver holds %zu leases", held_.size());
            return;
        }
        Expect expect = Expect::any;
        if (closed_) {
            expect = Expect::closed;
        } else if (paused_) {
            expect = Expect::timeout; // "nothing": try_acquire returns nullopt
        } else if (healthy_idle() > 0) {
            expect = Expect::lease;
        }
        std::optional<FuzzLease> got;
        const Outcome out = run_acquire([&] {
            auto lease = pool_->try_acquire();
            if (lease) {
                got.emplace(std::move(*lease));
            } else {
                // Not a timeout: try_acquire() never counts one. Reported as "timeout" to
                // the outcome check, and the counter is left alone.
                throw NothingReady{};
            }
        });
        check_acquire(out, expect, std::move(got), /*counts_timeout=*/false);
    }

    // acquire_for(d, token) with a token already stopped (AcquireCancelled, unless a
    // connection is ready at once) or one never stopped (as acquire_for).
    void acquire_stoppable() {
        const bool stopped = input_.ConsumeBool();
        const int shape = input_.ConsumeIntegralInRange<int>(0, 2);
        const milliseconds d = shape == 0 ? 0ms : shape == 1 ? 2ms : kMustSucceed;
        std::stop_source source;
        if (stopped) source.request_stop();
        Expect expect = Expect::any;
        milliseconds wait = d;
        if (stopped) {
            if (closed_) {
                expect = Expect::closed;
            } else if (paused_) {
                expect = Expect::cancelled;
            }
        } else {
            expect = expect_acquire(d);
            if (d == kMustSucceed && expect != Expect::lease && expect != Expect::closed) wait = 2ms;
        }
        trace.step("acquire_for(%lldms, %s stop_token)", static_cast<long long>(wait.count()),
                   stopped ? "stopped" : "unstopped");
        if (held_.size() >= kMaxHeld) {
            trace.result(" skipped: the driver holds %zu leases", held_.size());
            return;
        }
        if (!stopped) expect = expect_acquire(wait);
        std::optional<FuzzLease> got;
        const Outcome out = run_acquire([&] { got.emplace(pool_->acquire_for(wait, source.get_token())); });
        check_acquire(out, expect, std::move(got));
    }

    // Gives a lease back: release(), its destructor, discard(), or a move-assignment onto
    // another held lease (which gives that one back).
    void give_back() {
        const auto pick = input_.ConsumeIntegral<std::uint8_t>();
        const int how = input_.ConsumeIntegralInRange<int>(0, 3);
        const auto other = input_.ConsumeIntegral<std::uint8_t>();
        static constexpr const char* kHow[] = {"release()", "~Lease()", "discard()", "move-assigned over"};
        if (held_.empty()) {
            trace.step("give back: skipped, no lease held");
            return;
        }
        const std::size_t i = pick % held_.size();
        if (how == 3) {
            if (held_.size() < 2) {
                trace.step("lease %zu move-assigned over itself: skipped, one lease held", i);
                return;
            }
            std::size_t j = other % (held_.size() - 1);
            if (j >= i) ++j;
            // held_[j] = std::move(held_[i]): j's connection goes back, i's moves into j.
            trace.step("lease %zu (#%llu) move-assigned over lease %zu (#%llu)", i, ull(held_[i].id), j,
                       ull(held_[j].id));
            const bool destroyed = expect_destroyed_on_release(held_[j], false);
            const std::uint64_t released = held_[j].id;
            const std::uint64_t resets = reset_calls();
            begin_release(released);
            held_[j].lease = std::move(held_[i].lease);
            end_release();
            CONNPOOL_FUZZ_CHECK(trace, !held_[i].lease && held_[i].lease.get() == nullptr,
                                "a moved-from lease still holds a connection");
            held_[j].id = held_[i].id;
            held_[j].doomed = held_[i].doomed;
            held_[j].expired = held_[i].expired;
            held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
            check_released(released, destroyed, false, resets);
            return;
        }
        trace.step("lease %zu (#%llu): %s", i, ull(held_[i].id), kHow[how]);
        const bool discard = how == 2;
        const bool destroyed = expect_destroyed_on_release(held_[i], discard);
        const std::uint64_t released = held_[i].id;
        const std::uint64_t resets = reset_calls();
        begin_release(released);
        if (how == 0) {
            held_[i].lease.release();
            CONNPOOL_FUZZ_CHECK(trace, !held_[i].lease, "a released lease still holds a connection");
            held_[i].lease.release(); // a second release gives back nothing
        } else if (how == 2) {
            held_[i].lease.discard();
            CONNPOOL_FUZZ_CHECK(trace, !held_[i].lease, "a discarded lease still holds a connection");
            held_[i].lease.discard();
            ++discarded_;
        }
        held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i)); // runs ~Lease()
        end_release();
        check_released(released, destroyed, discard, resets);
    }

    // Uses a lease: it must hold the connection the model says, through every accessor.
    void use() {
        const auto pick = input_.ConsumeIntegral<std::uint8_t>();
        if (held_.empty()) {
            trace.step("use: skipped, no lease held");
            return;
        }
        const std::size_t i = pick % held_.size();
        trace.step("use lease %zu (#%llu)", i, ull(held_[i].id));
        check_lease(i);
    }

    void advance() {
        static constexpr milliseconds kSteps[] = {1ms, 100ms, 499ms, 500ms, 501ms, 1000ms, 4000ms, 660'000ms};
        const int k = input_.ConsumeIntegralInRange<int>(0, 8);
        const milliseconds d =
            k < 8 ? kSteps[k] : milliseconds(input_.ConsumeIntegralInRange<int>(0, 10'000));
        trace.step("advance the clock by %lldms", static_cast<long long>(d.count()));
        FuzzClock::advance(d);
    }

    void set_plan() {
        FaultPlan p;
        p.create = static_cast<FaultPlan::Create>(input_.ConsumeIntegralInRange<int>(0, 4));
        p.fail_next = input_.ConsumeIntegralInRange<int>(1, 3);
        p.delay = std::chrono::microseconds(input_.ConsumeIntegralInRange<int>(50, 500));
        p.validate = static_cast<FaultPlan::Verdict>(input_.ConsumeIntegralInRange<int>(0, 3));
        p.reset = static_cast<FaultPlan::Verdict>(input_.ConsumeIntegralInRange<int>(0, 3));
        const auto bits = input_.ConsumeIntegral<std::uint8_t>();
        p.destroy_throws = (bits & 1U) != 0;
        p.hook_throws = (bits & 2U) != 0;
        static constexpr const char* kCreate[] = {"ok", "slow", "fail always", "fail next", "fail every other"};
        static constexpr const char* kVerdict[] = {"ok", "false", "throws", "false for odd ids"};
        trace.step("plan: create %s (%d, %lldus), validate %s, reset %s, destroy %s, hook %s", kCreate[int(p.create)],
                   p.fail_next, static_cast<long long>(p.delay.count()), kVerdict[int(p.validate)],
                   kVerdict[int(p.reset)], p.destroy_throws ? "throws" : "ok", p.hook_throws ? "throws" : "ok");
        std::lock_guard lock(state_->mutex);
        state_->plan = p;
        state_->hook_throws.store(p.hook_throws);
    }

    void maintain() {
        trace.step("maintain()");
        const auto before = pool_->stats();
        const std::int64_t now = FuzzClock::now_ns();
        std::size_t expired_idle = 0;
        for (const auto& [id, created_at] : idle_ids()) {
            if (past_lifetime(created_at, now)) ++expired_idle;
        }
        // Expected retirements: every idle one past max_lifetime, and of the others idle for
        // idle_timeout or longer as many as leaves min_idle idle.
        sync_info();
        const auto idle_before = idle_ids();
        const std::int64_t idle_limit = std::chrono::nanoseconds(setup_.idle_timeout).count();
        std::size_t timed_out = 0;
        std::set<std::uint64_t> may_go;
        for (const auto& [id, at] : idle_before) {
            if (past_lifetime(at, now)) {
                may_go.insert(id);
            } else if (idle_limit > 0 && now - info_.at(id).idle_since() >= idle_limit) {
                may_go.insert(id);
                ++timed_out;
            }
        }
        const std::size_t beyond_min =
            idle_before.size() > setup_.min_idle ? idle_before.size() - setup_.min_idle : 0;
        const std::size_t want_retired = expired_idle + std::min(timed_out, beyond_min);
        const std::size_t retired = pool_->maintain();
        quiesce();
        const auto after = pool_->stats();
        trace.result(" -> retired %zu; open %zu idle %zu", retired, after.open, after.idle);
        if (closed_) {
            CONNPOOL_FUZZ_CHECK(trace, retired == 0 && after.destroyed == before.destroyed && after.created == before.created,
                                "maintain() on a closed pool retired %zu, created %llu, destroyed %llu", retired,
                                ull(after.created - before.created), ull(after.destroyed - before.destroyed));
            return;
        }
        CONNPOOL_FUZZ_CHECK(trace, after.destroyed - before.destroyed == retired,
                            "maintain() returned %zu but %llu connections were destroyed", retired,
                            ull(after.destroyed - before.destroyed));
        CONNPOOL_FUZZ_CHECK(trace, retired == want_retired,
                            "maintain() retired %zu, the model says %zu (%zu of %zu idle past max_lifetime, %zu idle "
                            "for idle_timeout, min_idle %zu)",
                            retired, want_retired, expired_idle, idle_before.size(), timed_out, setup_.min_idle);
        for (const auto& [id, at] : idle_before) {
            CONNPOOL_FUZZ_CHECK(trace, state_->is_alive(id) || may_go.count(id) != 0,
                                "maintain() retired #%llu, idle %lldms, within its lifetime", ull(id),
                                static_cast<long long>(idle_ms(id)));
        }
        for (const auto& [id, created_at] : idle_ids()) {
            CONNPOOL_FUZZ_CHECK(trace, !past_lifetime(created_at, now),
                                "idle #%llu is past max_lifetime after maintain()", ull(id));
        }
        for (Held& h : held_) {
            if (past_lifetime(created_at(h.id), now)) h.expired = true;
            info_[h.id].seen_in_use = now;
        }
        // min_idle top-up, on this thread: with a healthy factory and no back-off pending,
        // min_idle are idle afterwards unless the pool is full (or paused).
        const FaultPlan plan = state_->current_plan();
        const bool healthy = plan.create == FaultPlan::Create::ok || plan.create == FaultPlan::Create::slow;
        if (!paused_ && healthy && !backoff_may_be_pending()) {
            CONNPOOL_FUZZ_CHECK(trace, after.idle >= setup_.min_idle || after.open >= max_size_,
                                "maintain() left %zu idle (min_idle %zu) with %zu open of %zu", after.idle,
                                setup_.min_idle, after.open, max_size_);
        }
    }

    void pause() {
        trace.step("pause()");
        pool_->pause();
        paused_ = true;
    }

    void resume() {
        trace.step("resume()");
        pool_->resume();
        paused_ = false;
    }

    void resize() {
        const int k = input_.ConsumeIntegralInRange<int>(0, 11);
        std::size_t n = 0;
        switch (k) {
        case 0: n = 0; break;
        case 1: n = setup_.min_idle > 0 ? setup_.min_idle - 1 : 0; break;
        case 2: n = 1'048'577; break;
        case 3: n = std::numeric_limits<std::size_t>::max(); break;
        default: n = static_cast<std::size_t>(k - 3); break; // 1..8
        }
        const bool valid = n >= 1 && n <= 1'048'576 && n >= setup_.min_idle;
        trace.step("resize(%zu)%s", n, valid ? "" : ", invalid");
        const auto before = pool_->stats();
        bool threw = false;
        try {
            pool_->resize(n);
        } catch (const std::invalid_argument&) {
            threw = true;
        }
        quiesce();
        const auto after = pool_->stats();
        trace.result(" -> open %zu -> %zu", before.open, after.open);
        if (!valid) {
            CONNPOOL_FUZZ_CHECK(trace, threw, "resize(%zu) did not throw std::invalid_argument", n);
            CONNPOOL_FUZZ_CHECK(trace, after.max_size == before.max_size && after.open == before.open &&
                                           after.destroyed == before.destroyed,
                                "an invalid resize(%zu) changed the pool (max %zu -> %zu, open %zu -> %zu)", n,
                                before.max_size, after.max_size, before.open, after.open);
            return;
        }
        CONNPOOL_FUZZ_CHECK(trace, !threw, "resize(%zu) threw std::invalid_argument", n);
        max_size_ = n;
        // Surplus idle connections go at once; leases are never taken; growing creates
        // nothing when nobody waits.
        const std::size_t want = before.open > n ? std::max(n, held_.size()) : before.open;
        CONNPOOL_FUZZ_CHECK(trace, after.open == want, "resize(%zu) left %zu open (%zu before, %zu held), expected %zu",
                            n, after.open, before.open, held_.size(), want);
    }

    void retire_all() {
        trace.step("retire_all()");
        pool_->retire_all();
        ++retirements_;
        for (Held& h : held_) h.doomed = true;
        quiesce();
        const auto st = pool_->stats();
        trace.result(" -> open %zu idle %zu", st.open, st.idle);
        CONNPOOL_FUZZ_CHECK(trace, st.idle == 0, "%zu idle connections survived retire_all()", st.idle);
    }

    void close() {
        trace.step("close()%s", closed_ ? " again" : "");
        pool_->close();
        closed_ = true;
        for (Held& h : held_) h.doomed = true;
        quiesce();
        const auto st = pool_->stats();
        CONNPOOL_FUZZ_CHECK(trace, st.idle == 0, "%zu idle connections survived close()", st.idle);
        CONNPOOL_FUZZ_CHECK(trace, pool_->closed(), "closed() is false after close()");
    }

    void observe() {
        const auto st = pool_->stats();
        trace.step("stats()");
        trace.result(" -> max %zu open %zu idle %zu in_use %zu created %llu destroyed %llu paused %d closed %d",
                     st.max_size, st.open, st.idle, st.in_use, ull(st.created), ull(st.destroyed), st.paused ? 1 : 0,
                     pool_->closed() ? 1 : 0);
    }

    // Runs an acquire or a give-back on a new thread, joined before the next step: a lease
    // then moves between threads, and releases park connections in the caches of threads
    // that end, which other threads must find (steal) and close() and retire_all() destroy.
    void on_helper_thread() {
        static constexpr void (PoolHarness::*kInner[])() = {&PoolHarness::acquire_for, &PoolHarness::try_acquire,
                                                            &PoolHarness::give_back, &PoolHarness::acquire_stoppable};
        const int k = input_.ConsumeIntegralInRange<int>(0, 3);
        trace.step("on a helper thread:");
        std::thread([this, k] { (this->*kInner[k])(); }).join();
    }

    // A waiter served by a release: with the pool full and nothing idle, a helper thread
    // waits in acquire_for(1 s) while the driver gives back a lease whose connection is kept
    // (reset, validate and lifetime all fine): the waiter must get that very connection.
    void served_waiter() {
        const auto pick = input_.ConsumeIntegral<std::uint8_t>();
        trace.step("a waiter on a helper thread, served by a release");
        const PoolStats st = pool_->stats();
        if (held_.empty() || closed_ || paused_ || st.idle != 0 || st.open < max_size_ || st.open > max_size_) {
            trace.result(" skipped: not a full pool with nothing idle (or closed, paused, shrunk)");
            return;
        }
        const std::size_t i = pick % held_.size();
        const Held& h = held_[i];
        const FaultPlan plan = state_->current_plan();
        if (h.doomed || h.expired || !FaultPlan::passes(plan.reset, h.id) || !FaultPlan::passes(plan.validate, h.id) ||
            past_lifetime(created_at(h.id), FuzzClock::now_ns())) {
            trace.result(" skipped: lease %zu's connection would not be kept", i);
            return;
        }
        const std::uint64_t id = h.id;
        trace.result(" (lease %zu, #%llu)", i, ull(id));
        sync_info();
        {
            std::lock_guard lock(state_->mutex);
            state_->validated.clear();
        }
        std::optional<FuzzLease> got;
        Outcome out = Outcome::other;
        std::thread waiter([&] {
            try {
                got.emplace(pool_->acquire_for(kMustSucceed));
                out = Outcome::lease;
            } catch (const AcquireTimeout&) {
                out = Outcome::timeout;
            } catch (...) {
                out = Outcome::other;
            }
        });
        const auto give_up = std::chrono::steady_clock::now() + kQuiescenceLimit;
        while (pool_->stats().waiting == 0 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
        const bool waited = pool_->stats().waiting == 1;
        begin_release(id);
        held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
        end_release();
        waiter.join();
        CONNPOOL_FUZZ_CHECK(trace, waited, "the acquire on the helper thread never showed as waiting");
        CONNPOOL_FUZZ_CHECK(trace, out == Outcome::lease && got && got->get() != nullptr && got->get()->id() == id,
                            "the waiter got %s #%llu, not the released #%llu", kOutcomes[int(out)],
                            ull(out == Outcome::lease && got && got->get() != nullptr ? got->get()->id() : 0), ull(id));
        check_acquire(out, Expect::lease, std::move(got));
    }

    static constexpr std::array<Operation<PoolHarness>, 16> kOperations{{
        {"acquire_for", &PoolHarness::acquire_for},             // 0
        {"try_acquire", &PoolHarness::try_acquire},             // 1
        {"acquire_stoppable", &PoolHarness::acquire_stoppable}, // 2
        {"give_back", &PoolHarness::give_back},                 // 3
        {"use", &PoolHarness::use},                             // 4
        {"advance", &PoolHarness::advance},                     // 5
        {"set_plan", &PoolHarness::set_plan},                   // 6
        {"maintain", &PoolHarness::maintain},                   // 7
        {"pause", &PoolHarness::pause},                         // 8
        {"resume", &PoolHarness::resume},                       // 9
        {"resize", &PoolHarness::resize},                       // 10
        {"retire_all", &PoolHarness::retire_all},               // 11
        {"close", &PoolHarness::close},                         // 12
        {"observe", &PoolHarness::observe},                     // 13
        {"on_helper_thread", &PoolHarness::on_helper_thread},   // 14
        {"served_waiter", &PoolHarness::served_waiter},         // 15
        // Append new operations here: the opcodes above keep their meaning, and so does
        // the committed corpus.
    }};

    // ---- checks after every step -------------------------------------------------------------

    void after_step() {
        quiesce();
        const PoolStats st = pool_->stats();
        check_stats(st);
        prev_ = st;
    }

    // At the end of the input: give every lease back (before or after destroying the pool),
    // then every connection ever created must have been destroyed exactly once.
    void finish() {
        if (setup_.close_before_leases) {
            trace.step("destroy the pool with %zu leases out", held_.size());
            for (Held& h : held_) h.doomed = true;
            pool_.reset();
            CONNPOOL_FUZZ_CHECK(trace, state_->alive_count() == held_.size(),
                                "%zu connections alive after ~Pool with %zu leases out", state_->alive_count(),
                                held_.size());
            for (std::size_t i = 0; i < held_.size(); ++i) check_lease(i);
            while (!held_.empty()) {
                const std::uint64_t id = held_.back().id;
                begin_release(id);
                held_.pop_back();
                end_release();
                CONNPOOL_FUZZ_CHECK(trace, !state_->is_alive(id), "#%llu survived its release after ~Pool", ull(id));
            }
        } else {
            trace.step("give back %zu leases, destroy the pool", held_.size());
            while (!held_.empty()) {
                const std::uint64_t id = held_.back().id;
                begin_release(id);
                held_.pop_back();
                end_release();
            }
            pool_.reset();
        }
        std::lock_guard lock(state_->mutex);
        CONNPOOL_FUZZ_CHECK(trace, state_->alive.empty(), "%zu connections outlived the pool and its leases",
                            state_->alive.size());
        CONNPOOL_FUZZ_CHECK(trace, state_->destructions == state_->created && state_->double_destructions == 0,
                            "%llu created, %llu destroyed (%llu twice)", ull(state_->created), ull(state_->destructions),
                            ull(state_->double_destructions));
        CONNPOOL_FUZZ_CHECK(trace, state_->destroy_calls == state_->created,
                            "factory.destroy() ran %llu times for %llu connections", ull(state_->destroy_calls),
                            ull(state_->created));
    }

private:
    struct NothingReady {};

    static unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

    // Waits until no create() is in flight and every open connection is idle or in use. The
    // stats are a sign of rest on their own: stats() counts as idle only what an acquire can take
    // (the finding kept in regressions/pool/at_rest_idle_not_yet_queued), and takes `open` and
    // `creating` together (a creation ending between the two reads once looked like rest).
    void quiesce() {
        const auto start = std::chrono::steady_clock::now();
        for (int round = 0;; ++round) {
            const PoolStats st = pool_->stats();
            if (st.creating == 0 && st.open == st.idle + st.in_use && state_->creating_now.load() == 0) {
                return;
            }
            if (std::chrono::steady_clock::now() - start > kQuiescenceLimit) {
                CONNPOOL_FUZZ_CHECK(trace, false,
                                    "the pool did not come to rest in 2 s: creating %zu, open %zu, idle %zu, in_use %zu",
                                    st.creating, st.open, st.idle, st.in_use);
            }
            if (round < 32) {
                std::this_thread::yield();
            } else {
                std::this_thread::sleep_for(50us);
            }
        }
    }

    // An AcquireTimeout's message states the pool's size and use, the failing creation, and
    // who holds the connections (this file's call sites).
    void check_timeout_message(const char* what) {
        const std::string_view m(what);
        char want[64];
        std::snprintf(want, sizeof want, "max_size %zu, ", max_size_);
        CONNPOOL_FUZZ_CHECK(trace, m.find(want) != m.npos, "the timeout message lacks \"%s\": %s", want, what);
        std::snprintf(want, sizeof want, "in use %zu, ", held_.size());
        CONNPOOL_FUZZ_CHECK(trace, m.find(want) != m.npos, "the timeout message lacks \"%s\": %s", want, what);
        if (!held_.empty()) {
            CONNPOOL_FUZZ_CHECK(trace, m.find("held by: ") != m.npos && m.find(__FILE_NAME__) != m.npos,
                                "the timeout message does not say who holds the %zu leases: %s", held_.size(), what);
        }
        if (creation_failing_) {
            CONNPOOL_FUZZ_CHECK(trace, m.find("database unreachable (injected)") != m.npos,
                                "the timeout message does not give create()'s last error: %s", what);
        }
    }

    // Adds the connections created since the last call to info_, drops the destroyed ones.
    void sync_info() {
        std::lock_guard lock(state_->mutex);
        for (auto it = info_.begin(); it != info_.end();) {
            it = state_->alive.count(it->first) == 0 ? info_.erase(it) : std::next(it);
        }
        for (const auto& [id, at] : state_->alive) info_.try_emplace(id, ConnInfo{false, at, 0});
    }

    // Whether handing out `id` now must validate it: idle (as the pool measures it) at least
    // validate_after_idle, and handed out before or created at least 500 ms ago.
    [[nodiscard]] bool must_validate(std::uint64_t id) const {
        const auto it = info_.find(id);
        if (it == info_.end()) return false; // created during this acquire: fresh
        const std::int64_t idle = FuzzClock::now_ns() - it->second.idle_since();
        return idle >= std::chrono::nanoseconds(setup_.validate_after_idle).count() &&
               (it->second.handed_out || idle >= 500'000'000);
    }

    // validate() ran exactly on the connections the rule says: every one it ran on had to be,
    // and the one handed out (`got`, 0 if none) was, if it had to be.
    void check_validations(std::uint64_t got) {
        std::vector<std::uint64_t> validated;
        {
            std::lock_guard lock(state_->mutex);
            validated.swap(state_->validated);
        }
        for (const std::uint64_t id : validated) {
            CONNPOOL_FUZZ_CHECK(trace, must_validate(id), "validate() ran on #%llu, idle %lldms (validate_after_idle %lldms, %s)",
                                ull(id), static_cast<long long>(idle_ms(id)),
                                static_cast<long long>(setup_.validate_after_idle.count()),
                                info_.count(id) != 0 && info_.at(id).handed_out ? "handed out before" : "never handed out");
        }
        if (got != 0 && must_validate(got)) {
            CONNPOOL_FUZZ_CHECK(trace, std::find(validated.begin(), validated.end(), got) != validated.end(),
                                "#%llu was handed out without validate(), idle %lldms (validate_after_idle %lldms)",
                                ull(got), static_cast<long long>(idle_ms(got)),
                                static_cast<long long>(setup_.validate_after_idle.count()));
        }
    }

    [[nodiscard]] std::int64_t idle_ms(std::uint64_t id) const {
        const auto it = info_.find(id);
        return it == info_.end() ? -1 : (FuzzClock::now_ns() - it->second.idle_since()) / 1'000'000;
    }

    [[nodiscard]] std::int64_t created_at(std::uint64_t id) const {
        std::lock_guard lock(state_->mutex);
        const auto it = state_->alive.find(id);
        return it == state_->alive.end() ? 0 : it->second;
    }

    [[nodiscard]] bool past_lifetime(std::int64_t created_at, std::int64_t now) const {
        const std::int64_t lifetime = std::chrono::nanoseconds(setup_.max_lifetime).count();
        return lifetime > 0 && now - created_at >= lifetime;
    }

    // The idle connections: alive and held by no lease (id, creation time).
    [[nodiscard]] std::vector<std::pair<std::uint64_t, std::int64_t>> idle_ids() const {
        std::vector<std::pair<std::uint64_t, std::int64_t>> out;
        std::lock_guard lock(state_->mutex);
        for (const auto& [id, at] : state_->alive) {
            if (state_->held.count(id) == 0) out.emplace_back(id, at);
        }
        return out;
    }

    // Idle connections an acquire may be handed at once: within max_lifetime and passing
    // validate() if it is asked.
    [[nodiscard]] std::size_t healthy_idle() const {
        const FaultPlan plan = state_->current_plan();
        const std::int64_t now = FuzzClock::now_ns();
        std::size_t n = 0;
        for (const auto& [id, at] : idle_ids()) {
            if (!past_lifetime(at, now) && FaultPlan::passes(plan.validate, id)) ++n;
        }
        return n;
    }

    [[nodiscard]] bool backoff_may_be_pending() const {
        const std::int64_t last = state_->last_create_throw_ns.load();
        const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
        return last != 0 && now - last < std::chrono::nanoseconds(20ms).count();
    }

    // What acquire_for(d) must do: PoolClosed once closed; time out while paused; succeed
    // with a long deadline when there is room and creations succeed, or a healthy idle one.
    [[nodiscard]] Expect expect_acquire(milliseconds d) const {
        if (closed_) return Expect::closed;
        if (paused_) return Expect::timeout;
        if (d < kMustSucceed) return Expect::any;
        const bool room = held_.size() < max_size_ && state_->current_plan().creates_eventually();
        return room || healthy_idle() > 0 ? Expect::lease : Expect::any;
    }

    template <class F>
    Outcome run_acquire(F&& acquire) {
        sync_info();
        {
            std::lock_guard lock(state_->mutex);
            state_->validated.clear();
            // create() has failed since the last success, and fails on: the timeout message
            // must say so (the failure was recorded: the pool came to rest after it).
            creation_failing_ = state_->create_throws > 0 && state_->created == state_->created_at_last_throw &&
                                state_->plan.create == FaultPlan::Create::fail_always;
        }
        try {
            acquire();
            return Outcome::lease;
        } catch (const AcquireTimeout& e) {
            check_timeout_message(e.what());
            return Outcome::timeout;
        } catch (const AcquireCancelled&) {
            return Outcome::cancelled;
        } catch (const PoolClosed&) {
            return Outcome::closed;
        } catch (const NothingReady&) {
            return Outcome::timeout;
        } catch (const std::exception& e) {
            trace.result(" threw %s", e.what());
            return Outcome::other;
        } catch (...) {
            return Outcome::other;
        }
    }

    void check_acquire(Outcome out, Expect expect, std::optional<FuzzLease> got, bool counts_timeout = true) {
        if (out == Outcome::lease) {
            trace.result(" -> #%llu", ull(got->get() != nullptr ? got->get()->id() : 0));
        } else {
            trace.result(" -> %s", !counts_timeout && out == Outcome::timeout ? "nothing" : kOutcomes[int(out)]);
        }
        CONNPOOL_FUZZ_CHECK(trace, out != Outcome::other, "an acquire threw something else than the contract's errors");
        switch (expect) {
        case Expect::any: break;
        case Expect::lease:
            CONNPOOL_FUZZ_CHECK(trace, out == Outcome::lease, "must hand out a connection (%zu healthy idle, %zu held of %zu), got %s",
                                healthy_idle(), held_.size(), max_size_, kOutcomes[int(out)]);
            break;
        case Expect::timeout:
            CONNPOOL_FUZZ_CHECK(trace, out == Outcome::timeout, "a paused pool must hand out nothing, got %s",
                                kOutcomes[int(out)]);
            break;
        case Expect::cancelled:
            CONNPOOL_FUZZ_CHECK(trace, out == Outcome::cancelled, "a stopped acquire on a paused pool must be cancelled, got %s",
                                kOutcomes[int(out)]);
            break;
        case Expect::closed:
            CONNPOOL_FUZZ_CHECK(trace, out == Outcome::closed, "a closed pool must throw PoolClosed, got %s",
                                kOutcomes[int(out)]);
            break;
        }
        check_validations(out == Outcome::lease && got->get() != nullptr ? got->get()->id() : 0);
        if (out == Outcome::timeout && counts_timeout) ++timeouts_;
        if (out == Outcome::cancelled) ++cancelled_;
        if (out != Outcome::lease) return;
        CONNPOOL_FUZZ_CHECK(trace, static_cast<bool>(*got) && got->get() != nullptr, "an acquire returned an empty lease");
        const std::uint64_t id = got->get()->id();
        CONNPOOL_FUZZ_CHECK(trace, id != 0, "an acquire handed out a moved-from connection");
        {
            std::lock_guard lock(state_->mutex);
            CONNPOOL_FUZZ_CHECK(trace, state_->alive.count(id) == 1, "handed out #%llu, which is not alive", ull(id));
            CONNPOOL_FUZZ_CHECK(trace, state_->held.insert(id).second, "handed out #%llu, which a lease holds", ull(id));
            if (past_lifetime(state_->alive[id], FuzzClock::now_ns())) {
                CONNPOOL_FUZZ_CHECK(trace, false, "handed out #%llu past its max_lifetime", ull(id));
            }
        }
        ++acquired_;
        info_[id] = ConnInfo{true, FuzzClock::now_ns(), 0};
        held_.push_back(Held{std::move(*got), id, false, false});
    }

    void check_lease(std::size_t i) {
        const Held& h = held_[i];
        CONNPOOL_FUZZ_CHECK(trace, static_cast<bool>(h.lease) && h.lease.get() != nullptr, "lease %zu is empty", i);
        CONNPOOL_FUZZ_CHECK(trace, h.lease.get()->id() == h.id && (*h.lease).id() == h.id && h.lease->id() == h.id,
                            "lease %zu holds #%llu, the model says #%llu", i, ull(h.lease.get()->id()), ull(h.id));
        CONNPOOL_FUZZ_CHECK(trace, h.lease.held_for().count() >= 0, "lease %zu held for a negative time", i);
    }

    // Whether giving `h` back must destroy its connection.
    [[nodiscard]] bool expect_destroyed_on_release(const Held& h, bool discard) const {
        if (discard || h.doomed || h.expired || closed_) return true;
        if (!FaultPlan::passes(state_->current_plan().reset, h.id)) return true;
        return pool_->stats().open > max_size_; // shrunk by resize()
    }

    [[nodiscard]] std::uint64_t reset_calls() const {
        std::lock_guard lock(state_->mutex);
        return state_->reset_calls;
    }

    void begin_release(std::uint64_t id) {
        std::lock_guard lock(state_->mutex);
        state_->held.erase(id);
        state_->releasing = id;
    }

    void end_release() {
        std::lock_guard lock(state_->mutex);
        state_->releasing = 0;
    }

    void check_released(std::uint64_t id, bool destroyed, bool discard, std::uint64_t resets_before) {
        quiesce();
        const bool alive = state_->is_alive(id);
        trace.result(" -> %s", alive ? "kept" : "destroyed");
        CONNPOOL_FUZZ_CHECK(trace, alive != destroyed, "#%llu was %s, the model says %s", ull(id),
                            alive ? "kept" : "destroyed", destroyed ? "destroy it" : "keep it");
        const std::uint64_t resets = reset_calls() - resets_before;
        CONNPOOL_FUZZ_CHECK(trace, resets == (discard ? 0U : 1U), "reset() ran %llu times for one %s", ull(resets),
                            discard ? "discard" : "release");
    }

    void check_stats(const PoolStats& st) {
        CONNPOOL_FUZZ_CHECK(trace, st.open == st.idle + st.in_use, "open %zu != idle %zu + in_use %zu", st.open, st.idle,
                            st.in_use);
        CONNPOOL_FUZZ_CHECK(trace, st.created - st.destroyed == st.open, "created %llu - destroyed %llu != open %zu",
                            ull(st.created), ull(st.destroyed), st.open);
        CONNPOOL_FUZZ_CHECK(trace, st.in_use == held_.size(), "in_use %zu, the driver holds %zu leases", st.in_use,
                            held_.size());
        CONNPOOL_FUZZ_CHECK(trace, st.open <= std::max(max_size_, st.in_use), "open %zu over max_size %zu (in_use %zu)",
                            st.open, max_size_, st.in_use);
        CONNPOOL_FUZZ_CHECK(trace, st.waiting == 0, "waiting %zu with no acquire running", st.waiting);
        CONNPOOL_FUZZ_CHECK(trace, st.max_size == max_size_, "max_size %zu, the model says %zu", st.max_size, max_size_);
        CONNPOOL_FUZZ_CHECK(trace, st.paused == paused_ && pool_->paused() == paused_, "paused %d, the model says %d",
                            st.paused ? 1 : 0, paused_ ? 1 : 0);
        CONNPOOL_FUZZ_CHECK(trace, pool_->closed() == closed_, "closed() %d, the model says %d", pool_->closed() ? 1 : 0,
                            closed_ ? 1 : 0);
        if (closed_) CONNPOOL_FUZZ_CHECK(trace, st.idle == 0, "%zu idle on a closed pool", st.idle);
        CONNPOOL_FUZZ_CHECK(trace, st.acquired == acquired_, "acquired %llu, the model counted %llu", ull(st.acquired),
                            ull(acquired_));
        CONNPOOL_FUZZ_CHECK(trace, st.timeouts == timeouts_, "timeouts %llu, the model counted %llu", ull(st.timeouts),
                            ull(timeouts_));
        CONNPOOL_FUZZ_CHECK(trace, st.cancelled == cancelled_, "cancelled %llu, the model counted %llu",
                            ull(st.cancelled), ull(cancelled_));
        CONNPOOL_FUZZ_CHECK(trace, st.discarded == discarded_, "discarded %llu, the model counted %llu",
                            ull(st.discarded), ull(discarded_));
        CONNPOOL_FUZZ_CHECK(trace, st.retirements == retirements_, "retirements %llu, the model counted %llu",
                            ull(st.retirements), ull(retirements_));
        CONNPOOL_FUZZ_CHECK(trace, st.leaks == 0, "leaks %llu with leak_threshold off", ull(st.leaks));
        {
            std::lock_guard lock(state_->mutex);
            CONNPOOL_FUZZ_CHECK(trace, state_->alive.size() == st.open, "%zu connections alive, open is %zu",
                                state_->alive.size(), st.open);
            CONNPOOL_FUZZ_CHECK(trace, st.created == state_->created, "created %llu, the factory made %llu",
                                ull(st.created), ull(state_->created));
            CONNPOOL_FUZZ_CHECK(trace, st.destroyed == state_->destructions, "destroyed %llu, %llu were freed",
                                ull(st.destroyed), ull(state_->destructions));
            CONNPOOL_FUZZ_CHECK(trace, st.create_failures == state_->create_throws,
                                "create_failures %llu, create() threw %llu times", ull(st.create_failures),
                                ull(state_->create_throws));
            CONNPOOL_FUZZ_CHECK(trace, st.validation_failures == state_->validate_rejections,
                                "validation_failures %llu, validate() rejected %llu", ull(st.validation_failures),
                                ull(state_->validate_rejections));
            CONNPOOL_FUZZ_CHECK(trace, state_->double_destructions == 0, "a connection was destroyed twice");
            CONNPOOL_FUZZ_CHECK(trace, state_->destroy_calls == state_->destructions,
                                "factory.destroy() ran %llu times for %llu destroyed connections",
                                ull(state_->destroy_calls), ull(state_->destructions));
            CONNPOOL_FUZZ_CHECK(trace, state_->validate_on_held == 0, "validate() ran on a connection a lease holds");
            CONNPOOL_FUZZ_CHECK(trace, state_->reset_on_unheld == 0, "reset() ran on a connection not being released");
            CONNPOOL_FUZZ_CHECK(trace, state_->destroy_on_held == 0, "destroy() ran on a connection a lease holds");
            for (const Held& h : held_) {
                CONNPOOL_FUZZ_CHECK(trace, state_->alive.count(h.id) == 1 && state_->held.count(h.id) == 1,
                                    "held #%llu is not alive", ull(h.id));
            }
            CONNPOOL_FUZZ_CHECK(trace, state_->held.size() == held_.size(), "two leases hold one connection");
        }
        for (std::size_t i = 0; i < held_.size(); ++i) {
            CONNPOOL_FUZZ_CHECK(trace, held_[i].lease.get() != nullptr && held_[i].lease.get()->id() == held_[i].id,
                                "lease %zu does not hold #%llu", i, ull(held_[i].id));
        }
        // Counters never go back.
        CONNPOOL_FUZZ_CHECK(trace, st.created >= prev_.created && st.destroyed >= prev_.destroyed &&
                                       st.create_failures >= prev_.create_failures &&
                                       st.validation_failures >= prev_.validation_failures,
                            "a counter went back");
    }

    FuzzedDataProvider& input_;
    Setup setup_;
    std::shared_ptr<FactoryState> state_;
    std::unique_ptr<FuzzPool> pool_;
    std::vector<Held> held_;
    std::map<std::uint64_t, ConnInfo> info_; // every live connection the model has seen
    std::size_t max_size_ = 1;
    bool paused_ = false;
    bool closed_ = false;
    std::uint64_t acquired_ = 0;
    std::uint64_t timeouts_ = 0;
    std::uint64_t cancelled_ = 0;
    std::uint64_t discarded_ = 0;
    std::uint64_t retirements_ = 0;
    PoolStats prev_{};
    bool creation_failing_ = false;
};

Setup decode_setup(FuzzedDataProvider& input) {
    static constexpr milliseconds kValidate[] = {0ms, 1ms, 500ms, 600'000ms};
    static constexpr milliseconds kLifetime[] = {0ms, 1000ms, 5000ms, 9000ms};
    static constexpr milliseconds kIdle[] = {0ms, 1000ms, 600'000ms, 0ms};
    Setup s;
    s.max_size = input.ConsumeIntegralInRange<std::size_t>(1, 6);
    s.min_idle = input.ConsumeIntegralInRange<std::size_t>(0, std::min<std::size_t>(2, s.max_size));
    s.max_concurrent_creates = input.ConsumeIntegralInRange<std::size_t>(1, 3);
    s.validate_after_idle = kValidate[input.ConsumeIntegralInRange<int>(0, 3)];
    s.max_lifetime = kLifetime[input.ConsumeIntegralInRange<int>(0, 3)];
    s.idle_timeout = kIdle[input.ConsumeIntegralInRange<int>(0, 3)];
    const auto bits = input.ConsumeIntegral<std::uint8_t>();
    s.hook = (bits & 1U) != 0;
    s.close_before_leases = (bits & 2U) != 0;
    return s;
}

} // namespace
} // namespace connpool::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    prctl(PR_SET_TIMERSLACK, 1UL);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace connpool::fuzz;
    constexpr std::size_t kMaxPoolSteps = 64;
    FuzzedDataProvider input(data, size);
    FuzzClock::reset();
    const Setup s = decode_setup(input);
    trace.begin("max_size %zu, min_idle %zu, creates %zu, validate_after_idle %lldms, max_lifetime %lldms, "
                "idle_timeout %lldms, hook %d, %s, %zu bytes",
                s.max_size, s.min_idle, s.max_concurrent_creates, static_cast<long long>(s.validate_after_idle.count()),
                static_cast<long long>(s.max_lifetime.count()), static_cast<long long>(s.idle_timeout.count()),
                s.hook ? 1 : 0, s.close_before_leases ? "pool destroyed first" : "leases given back first", size);
    PoolHarness harness(input, s);
    for (std::size_t step = 0; step < kMaxPoolSteps && input.remaining_bytes() > 0; ++step) {
        const std::size_t opcode = input.ConsumeIntegral<std::uint8_t>() % kOpcodeSpace;
        if (opcode < PoolHarness::kOperations.size()) {
            (harness.*PoolHarness::kOperations[opcode].run)();
        } else {
            harness.observe();
        }
        harness.after_step();
    }
    harness.finish();
    return 0;
}
