#pragma once

// Creation and back-off of a pool's connections (a base of PoolCore; see its design note).
//
// Acquirers never call create(): it can take as long as the server likes, and an acquire must
// return by its deadline. Waiters *request* creations instead (`pending_`), and creator threads
// (at most max_concurrent_creates, started when first needed) take requests while there is room
// under max_size. The request count follows the waiters: a waiter that registers asks for one
// unless those pending and in flight already match the waiters; one that leaves drops a request
// nobody waits for; a slot freed while waiters outnumber requests asks again. So
// pending_ + creating_ never exceeds the waiters for long, and a pool without waiters has no
// pending request: at rest means no creation will start on its own.
//
// Every count here is guarded by the core's `control_`, the one mutex of the slow path, which
// also guards capacity (occupied_, max_size_ writes, the vacant list): a slot freed while a
// waiter prepares to sleep is seen by one of them, because both take control_.
//
// A failing create() backs off exponentially (create_retry_initial doubling up to
// create_retry_max); the creators sleep until the back-off ends, and the first success clears
// it. min_idle top-ups (maintenance) are created on the maintenance thread within the same
// limits.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../pool_options.hpp"
#include "clock.hpp"
#include "durations.hpp"
#include "pool_params.hpp"
#include "slot.hpp"

namespace connpool::detail {

/// The creator threads, creation requests and back-off of a PoolCore (`Core`, which derives
/// from it). Not for users.
template <class Core, class Conn>
class PoolCreation {
    using Slot = detail::Slot<Conn>;
    using steady = std::chrono::steady_clock;

protected:
    PoolCreation() = default;
    ~PoolCreation() = default;

    // ---- requests (all require the core's control_) ----------------------------------------

    // A waiter registered (there are `waiters` now): one creation for it unless enough are
    // pending or in flight. Also asked when freed capacity may serve a waiter.
    void request_for_waiters_locked(std::size_t waiters) noexcept {
        if (waiters > pending_ + creating_) ++pending_;
        want_creation_locked();
    }

    // A waiter left (`waiters` remain): a request nobody waits for any more is dropped (one in
    // flight completes, and its connection goes idle).
    void drop_request_locked(std::size_t waiters) noexcept {
        if (pending_ > 0 && pending_ + creating_ > waiters) --pending_;
    }

    // create() calls in flight.
    [[nodiscard]] std::size_t creating_locked() const noexcept { return creating_; }

    // The last create() failure's message while creation is failing, else empty.
    [[nodiscard]] const std::string& last_create_error_locked() const noexcept { return last_create_error_; }

    // Wakes (or starts) a creator when there is demand.
    void want_creation_locked() noexcept {
        if (!demand_locked()) return;
        if (idle_creators_ > 0) {
            creator_cv_.notify_one();
            return;
        }
        if (creators_.size() < core().params_.max_concurrent_creates) {
            try {
                creators_.emplace_back([this] { creator_loop(); });
            } catch (...) {
                // No thread now: the next change of demand or capacity tries again.
            }
        }
    }

    // close(): creators exit once their create() returns; nothing new starts.
    void stop_creation_locked() noexcept {
        stopping_ = true;
        creator_cv_.notify_all();
    }

    // ---- threads -------------------------------------------------------------------------

    // Makes room so that the creator list is never reallocated while close() joins it.
    void reserve_creators(std::size_t n) { creators_.reserve(n); }

    // The creator threads, for join_threads(): the list is fixed once stopping_ is set.
    [[nodiscard]] std::vector<std::thread>& creators_locked() noexcept { return creators_; }

    // ---- creating ------------------------------------------------------------------------

    // Creates a connection into a reserved slot (counted in creating_). On failure the slot is
    // freed and the pool backs off; returns false.
    bool create_into(Slot& s) noexcept {
        Core& c = core();
        const auto t0 = steady::now();
        std::string error;
        // Nothing may escape from here: the slot is reserved and counted in creating_.
        auto describe = [&error](const char* what) noexcept {
            try {
                error = (what != nullptr && *what != '\0') ? what : "create() threw an exception with an empty message";
            } catch (...) {
                // Out of memory for the message: the slot and the counts matter more.
            }
        };
        try {
            s.conn.emplace(c.factory_.create());
        } catch (const std::exception& e) {
            describe(e.what());
        } catch (...) {
            describe("create() threw a non-standard exception");
        }
        const auto took = steady::now() - t0;
        if (!s.conn.has_value()) {
            c.create_failures_.fetch_add(1, std::memory_order_relaxed);
            {
                std::lock_guard lock(c.control_);
                --creating_; // free_slot() below asks again, after the back-off, for a waiter
                backoff_ = next_backoff(backoff_, c.params_.create_retry_initial, c.params_.create_retry_max);
                backoff_until_ = add_saturated(steady::now().time_since_epoch().count(), backoff_);
                try {
                    last_create_error_ = error;
                } catch (...) {
                    // Out of memory for the message: the counts and the slot matter more.
                }
            }
            c.emit(PoolEventKind::create_failed, s.index, std::chrono::nanoseconds{0}, {}, error);
            c.free_slot(s);
            return false;
        }
        const std::int64_t now = now_ns<typename Core::clock_type>();
        s.handed_out = false;
        s.acquired_at.store(now, std::memory_order_relaxed);
        s.expires_at.store(expiry(now), std::memory_order_relaxed);
        c.created_.fetch_add(1, std::memory_order_relaxed);
        {
            std::lock_guard lock(c.control_);
            // open_ moves with creating_, under one lock, so stats() never sees the new
            // connection in neither (a false "at rest": open == idle + in_use, creating 0).
            c.open_.fetch_add(1, std::memory_order_acq_rel);
            --creating_;
            if (backoff_ != 0) {
                last_create_error_.clear();
                backoff_ = 0;
                backoff_until_ = 0;
            }
        }
        c.emit(PoolEventKind::created, s.index, std::chrono::duration_cast<std::chrono::nanoseconds>(took));
        return true;
    }

    // Creates connections (on this thread) until min_idle are idle, within the creation limits.
    void top_up() {
        Core& c = core();
        while (!c.closed_.load(std::memory_order_acquire) && !c.paused_.load(std::memory_order_acquire) &&
               c.idle_count() < c.params_.min_idle) {
            Slot* s = nullptr;
            {
                std::lock_guard lock(c.control_);
                if (!may_create_locked() || steady::now().time_since_epoch().count() < backoff_until_) {
                    return;
                }
                s = &reserve_locked();
            }
            if (!create_into(*s)) return;
            c.publish_new(*s);
        }
    }

private:
    Core& core() noexcept { return static_cast<Core&>(*this); }
    const Core& core() const noexcept { return static_cast<const Core&>(*this); }

    // Whether the limits let one more create() start now (requested or for min_idle alike, so
    // the top-up cannot bypass max_concurrent_creates). Requires control_.
    bool may_create_locked() const noexcept {
        const Core& c = core();
        return !stopping_ && !c.paused_.load(std::memory_order_relaxed) &&
               creating_ < c.params_.max_concurrent_creates && c.has_room_locked();
    }

    // Whether a requested creation may start now. Requires control_.
    bool demand_locked() const noexcept { return pending_ > 0 && may_create_locked(); }

    void creator_loop() noexcept {
        Core& c = core();
        std::unique_lock lock(c.control_);
        while (!stopping_) {
            if (demand_locked()) {
                const auto until = steady::time_point(steady::duration(backoff_until_));
                if (steady::now() < until) { // a failing create(): wait until the back-off ends
                    ++idle_creators_;
                    creator_cv_.wait_until(lock, until);
                    --idle_creators_;
                    continue;
                }
                Slot* s = nullptr;
                try {
                    s = &reserve_locked();
                } catch (...) { // out of memory for a new segment of slots
                    break;
                }
                --pending_;
                want_creation_locked(); // more requests: another creator
                lock.unlock();
                if (create_into(*s)) c.publish_new(*s);
                lock.lock();
                continue;
            }
            ++idle_creators_;
            creator_cv_.wait(lock);
            --idle_creators_;
        }
    }

    // Claims a vacant slot (or a new one) and counts the creation about to run into it.
    // Requires control_; the caller then calls create_into().
    Slot& reserve_locked() {
        Slot& s = core().claim_vacant_locked();
        ++creating_;
        return s;
    }

    // When a connection created at `now` retires: 0 = never (no lifetime, or one too long).
    std::int64_t expiry(std::int64_t now) {
        const std::int64_t lifetime = core().params_.max_lifetime;
        if (lifetime <= 0 || lifetime >= to_ns(forever)) return 0;
        std::int64_t jitter = 0;
        if (lifetime >= 10'000'000'000) { // HikariCP's rule: no jitter under 10 s
            std::lock_guard lock(core().control_);
            jitter = std::uniform_int_distribution<std::int64_t>(0, lifetime / 40)(rng_);
        }
        const std::int64_t at = add_saturated(now, lifetime - jitter);
        return at == never_ns ? 0 : at;
    }

    // Guarded by the core's control_.
    std::condition_variable creator_cv_; // creators wait for demand (or the back-off's end)
    std::size_t pending_ = 0;            // creations requested for waiters, not yet started
    std::size_t creating_ = 0;           // create() calls in flight
    std::size_t idle_creators_ = 0;      // creator threads asleep
    bool stopping_ = false;              // close() ran: creators exit
    std::vector<std::thread> creators_;
    std::int64_t backoff_ = 0;           // ns; 0 = creation is not failing
    std::int64_t backoff_until_ = 0;     // steady_clock ticks
    std::string last_create_error_;
    std::mt19937_64 rng_{std::random_device{}()};
};

} // namespace connpool::detail
