#pragma once

// A fake connection and factory that count everything, so tests can prove that every created
// connection is destroyed exactly once and never held by two threads at once.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

namespace connpool::testing {

/// Shared bookkeeping for the fake connections of one test.
struct Registry {
    std::atomic<std::uint64_t> created{0};
    std::atomic<std::uint64_t> destroyed{0};
    std::atomic<std::uint64_t> double_destroys{0};
    std::atomic<std::uint64_t> factory_destroy_calls{0};
    std::atomic<std::uint64_t> validate_calls{0};
    std::atomic<std::uint64_t> reset_calls{0};
    std::atomic<std::uint64_t> create_calls{0};
    std::atomic<int> creating_now{0};
    std::atomic<int> most_creating_at_once{0};

    std::mutex mutex;
    std::set<std::uint64_t> alive; // guarded by mutex

    [[nodiscard]] std::size_t alive_count() {
        std::lock_guard lock(mutex);
        return alive.size();
    }
};

/// A move-only fake connection. `holders` counts the threads using it right now (must be <= 1).
class FakeConnection {
public:
    FakeConnection(std::shared_ptr<Registry> registry, std::uint64_t id)
        : registry_(std::move(registry)), id_(id), holders_(std::make_unique<std::atomic<int>>(0)) {
        std::lock_guard lock(registry_->mutex);
        registry_->alive.insert(id_);
        registry_->created.fetch_add(1);
    }
    FakeConnection(FakeConnection&& other) noexcept = default;
    FakeConnection& operator=(FakeConnection&&) = delete;
    FakeConnection(const FakeConnection&) = delete;
    ~FakeConnection() {
        if (!registry_) return; // moved from
        std::lock_guard lock(registry_->mutex);
        if (registry_->alive.erase(id_) == 1) {
            registry_->destroyed.fetch_add(1);
        } else {
            registry_->double_destroys.fetch_add(1);
        }
    }

    [[nodiscard]] std::uint64_t id() const { return id_; }
    /// Marks this thread as a user; returns the number of users before it (0 if exclusive).
    int enter() { return holders_->fetch_add(1); }
    void leave() { holders_->fetch_sub(1); }

    bool healthy = true;     // validate() answers this
    bool resettable = true;  // reset() answers this
    int uses = 0;

private:
    std::shared_ptr<Registry> registry_;
    std::uint64_t id_;
    std::unique_ptr<std::atomic<int>> holders_;
};

/// A factory for FakeConnection with validate/reset/destroy and injectable failures.
struct FakeFactory {
    std::shared_ptr<Registry> registry = std::make_shared<Registry>();
    std::shared_ptr<std::atomic<std::uint64_t>> next_id = std::make_shared<std::atomic<std::uint64_t>>(0);
    /// create() throws while this is > 0, decrementing it.
    std::shared_ptr<std::atomic<int>> fail_next = std::make_shared<std::atomic<int>>(0);
    /// create() throws every Nth call when > 0.
    std::shared_ptr<std::atomic<int>> fail_every = std::make_shared<std::atomic<int>>(0);
    /// validate() answers false for everything while set.
    std::shared_ptr<std::atomic<bool>> all_unhealthy = std::make_shared<std::atomic<bool>>(false);
    std::chrono::microseconds create_delay{0};

    FakeConnection create() {
        const auto n = registry->create_calls.fetch_add(1) + 1;
        const int now = registry->creating_now.fetch_add(1) + 1;
        int seen = registry->most_creating_at_once.load();
        while (now > seen && !registry->most_creating_at_once.compare_exchange_weak(seen, now)) {
        }
        struct Done {
            Registry& r;
            ~Done() { r.creating_now.fetch_sub(1); }
        } done{*registry};
        if (create_delay.count() > 0) std::this_thread::sleep_for(create_delay);
        int f = fail_next->load();
        while (f > 0 && !fail_next->compare_exchange_weak(f, f - 1)) {
        }
        if (f > 0) throw std::runtime_error("database unreachable (injected failure)");
        const int every = fail_every->load();
        if (every > 0 && n % static_cast<std::uint64_t>(every) == 0) {
            throw std::runtime_error("flaky network (injected failure)");
        }
        return FakeConnection(registry, next_id->fetch_add(1) + 1);
    }
    bool validate(FakeConnection& c) {
        registry->validate_calls.fetch_add(1);
        return c.healthy && !all_unhealthy->load();
    }
    bool reset(FakeConnection& c) {
        registry->reset_calls.fetch_add(1);
        return c.resettable;
    }
    void destroy(FakeConnection&) { registry->factory_destroy_calls.fetch_add(1); }
};

} // namespace connpool::testing
