#pragma once

// Maintenance of a pool (a base of PoolCore; see its design note): one pass retires idle
// connections past max_lifetime or idle_timeout (never below min_idle), flags leases past
// max_lifetime so their release retires them, reports leases held past leak_threshold, and tops
// the pool up to min_idle. The pass runs every maintenance_interval on a thread of its own
// (started only when an option needs it), or when the user calls Pool::maintain().
//
// Idle time is measured without a clock read at release (that read would cost a third of the
// fast path): from the slot's last hand-out, or from the last pass that saw that same lease
// still running. Never later than the true release, so idle ages err long by at most the hold
// time or one interval: connections are validated or retired early, never late.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "../pool_options.hpp"
#include "clock.hpp"
#include "durations.hpp"
#include "slot.hpp"

namespace connpool::detail {

/// The maintenance pass and thread of a PoolCore (`Core`, which derives from it). Not for users.
template <class Core, class Conn>
class PoolMaintenance {
    using Slot = detail::Slot<Conn>;

public:
    /// Runs one maintenance pass now; returns how many idle connections it retired.
    std::size_t maintain() {
        Core& c = core();
        if (c.closed_.load(std::memory_order_acquire)) return 0;
        const std::int64_t now = now_ns<typename Core::clock_type>();
        std::size_t retired = 0;
        const std::int64_t idle_limit = c.params_.idle_timeout;
        // Idle ones beyond min_idle may time out; leased ones never count towards min_idle.
        std::int64_t may_retire_idle =
            static_cast<std::int64_t>(c.idle_count()) - static_cast<std::int64_t>(c.params_.min_idle);

        auto verdict = [&](const Slot& s, std::uint32_t word) -> const char* {
            if (const char* why = c.refusal(word)) return why;
            const std::int64_t expires = s.expires_at.load(std::memory_order_relaxed);
            if (expires != 0 && now >= expires) return "max_lifetime reached";
            if (idle_limit > 0 && may_retire_idle > 0 && now - idle_since(s) >= idle_limit) {
                --may_retire_idle;
                return "idle_timeout reached";
            }
            return nullptr;
        };

        // Idle connections in the queue (oldest first, so the least recently used go first).
        std::vector<std::pair<Slot*, const char*>> doomed;
        // The reasons are collected beside: extract_if's result holds the same slots.
        (void)c.idle_.extract_if([&](Slot* const& s) {
            const std::uint32_t word = s->state.load(std::memory_order_acquire);
            if ((word & state_mask) != queued) return false;
            if (const char* why = verdict(*s, word)) {
                doomed.emplace_back(s, why);
                return true;
            }
            return false;
        });
        for (auto& [s, why] : doomed) {
            s->become(busy);
            c.destroy_owned(*s, why);
            ++retired;
        }
        // Idle connections parked in some thread's cache.
        const std::size_t n = c.slots_.size();
        for (std::size_t i = 0; i < n; ++i) {
            Slot& s = c.slots_[i];
            if (!s.take_parked_for_pool()) continue;
            if (const char* why = verdict(s, 0)) {
                c.destroy_owned(s, why);
                ++retired;
            } else {
                c.make_idle(s);
            }
        }
        // Leases: note that they are still running (for idle_since()), flag the ones past
        // max_lifetime so their release retires them, report the ones held too long. Slots
        // being validated are busy, not in_use: their previous lease is over and the next one
        // has not started, so they are neither leaks nor holders.
        for (std::size_t i = 0; i < n; ++i) {
            Slot& s = c.slots_[i];
            if (s.bare() != in_use) continue;
            s.seen_in_use_version.store(s.acquires.load(std::memory_order_relaxed), std::memory_order_relaxed);
            s.seen_in_use_at.store(now, std::memory_order_relaxed);
            const std::int64_t expires = s.expires_at.load(std::memory_order_relaxed);
            if (expires != 0 && now >= expires) s.flag_if(expired, states({in_use}));
            const std::int64_t held = now - s.acquired_at.load(std::memory_order_relaxed);
            const std::uint64_t lease = s.acquires.load(std::memory_order_relaxed);
            if (c.params_.leak_threshold > 0 && held >= c.params_.leak_threshold &&
                s.leak_reported.exchange(lease, std::memory_order_relaxed) != lease) {
                c.leaks_.fetch_add(1, std::memory_order_relaxed);
                c.emit(PoolEventKind::leak, s.index, std::chrono::nanoseconds{held}, Core::site_of(s));
            }
        }
        c.top_up();
        return retired;
    }

protected:
    PoolMaintenance() = default;
    ~PoolMaintenance() = default;

    // When an idle slot's connection was last in use (see above).
    static std::int64_t idle_since(const Slot& s) noexcept {
        std::int64_t since = s.acquired_at.load(std::memory_order_relaxed);
        if (s.seen_in_use_version.load(std::memory_order_relaxed) == s.acquires.load(std::memory_order_relaxed)) {
            since = std::max(since, s.seen_in_use_at.load(std::memory_order_relaxed));
        }
        return since;
    }

    // Starts the maintenance thread if the options need one.
    void start_maintenance() {
        const auto& params = core().params_;
        if (params.needs_maintenance && params.maintenance_interval > 0) {
            maintenance_ = std::thread([this] { maintenance_loop(); });
        }
    }

    // Tells the maintenance thread to stop (join_maintenance() waits for it).
    void stop_maintenance() {
        {
            std::lock_guard lock(maintenance_mutex_);
            stop_maintenance_ = true;
        }
        maintenance_cv_.notify_all();
    }

    // Whether `id` is the maintenance thread (which must not join itself).
    [[nodiscard]] bool is_maintenance_thread(std::thread::id id) const noexcept { return maintenance_.get_id() == id; }

    // Joins the maintenance thread once told to stop. The caller serialises joins.
    void join_maintenance() noexcept {
        if (maintenance_.joinable()) maintenance_.join();
    }

private:
    Core& core() noexcept { return static_cast<Core&>(*this); }

    void maintenance_loop() {
        const std::int64_t interval = core().params_.maintenance_interval;
        std::unique_lock lock(maintenance_mutex_);
        while (!stop_maintenance_) {
            if (interval >= to_ns(forever)) {
                maintenance_cv_.wait(lock); // an interval too long to mean anything: never
            } else {
                maintenance_cv_.wait_for(lock, std::chrono::nanoseconds(interval));
            }
            if (stop_maintenance_) break;
            lock.unlock();
            try {
                maintain();
            } catch (...) {
                // Maintenance is best effort; the next pass tries again.
            }
            lock.lock();
        }
    }

    std::mutex maintenance_mutex_;
    std::condition_variable maintenance_cv_;
    bool stop_maintenance_ = false; // guarded by maintenance_mutex_
    std::thread maintenance_;
};

} // namespace connpool::detail
