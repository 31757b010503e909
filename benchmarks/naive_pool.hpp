#pragma once

// The baseline connpool is measured against: the pool a competent engineer writes in an
// afternoon. One mutex guards a deque of idle connections and a count of open ones; acquire
// waits on a condition variable with a timeout (like connpool's acquire_timeout), creates a
// connection outside the lock when there is room, and returns an RAII handle whose destructor
// puts the connection back and wakes one waiter. LIFO reuse (push_back/pop_back), notify after
// unlocking. Deliberately nothing clever, and deliberately nothing slow.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace bench {

/// Thrown by NaivePool::acquire() when no connection came within the timeout.
struct NaiveTimeout : std::runtime_error {
    using std::runtime_error::runtime_error;
};

template <class Conn, class Factory>
class NaivePool {
public:
    /// Owns one connection; gives it back to the pool when destroyed.
    class Handle {
    public:
        Handle(NaivePool* pool, Conn conn) : pool_(pool), conn_(std::move(conn)) {}
        Handle(Handle&& other) noexcept
            : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}
        Handle(const Handle&) = delete;
        Handle& operator=(const Handle&) = delete;
        Handle& operator=(Handle&&) = delete;
        ~Handle() {
            if (pool_ != nullptr) pool_->release(std::move(conn_));
        }
        [[nodiscard]] Conn* get() noexcept { return &conn_; }

    private:
        NaivePool* pool_;
        Conn conn_;
    };

    NaivePool(Factory factory, std::size_t max_size, std::chrono::milliseconds timeout)
        : factory_(std::move(factory)), max_size_(max_size), timeout_(timeout) {}

    [[nodiscard]] Handle acquire() {
        std::unique_lock lock(mutex_);
        if (!cv_.wait_for(lock, timeout_, [this] { return !idle_.empty() || open_ < max_size_; })) {
            throw NaiveTimeout("NaivePool: acquire timed out");
        }
        if (!idle_.empty()) {
            Conn conn = std::move(idle_.back());
            idle_.pop_back();
            return Handle(this, std::move(conn));
        }
        ++open_; // room for one more: create it outside the lock
        lock.unlock();
        try {
            return Handle(this, factory_.create());
        } catch (...) {
            lock.lock();
            --open_;
            lock.unlock();
            cv_.notify_one();
            throw;
        }
    }

    [[nodiscard]] std::size_t open() const {
        std::lock_guard lock(mutex_);
        return open_;
    }

private:
    void release(Conn conn) {
        {
            std::lock_guard lock(mutex_);
            idle_.push_back(std::move(conn));
        }
        cv_.notify_one();
    }

    Factory factory_;
    const std::size_t max_size_;
    const std::chrono::milliseconds timeout_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<Conn> idle_;
    std::size_t open_ = 0;
};

} // namespace bench
