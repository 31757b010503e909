#pragma once

#include <atomic>             // lock-free size() and the empty fast path of try_pop()
#include <chrono>
#include <condition_variable> // one per blocked popper: FIFO hand-off without a thundering herd
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token> // pops a stop request can call off
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/durations.hpp" // saturating deadlines, shared with the pool

namespace connpool {

/// Which element pop() takes when several are stored: the oldest (fifo) or the newest (lifo).
enum class QueueOrder { fifo, lifo };

/// A bounded multi-producer multi-consumer blocking queue with FIFO hand-off to waiting poppers.
///
/// Design: one mutex guards the ring buffer, the list of blocked poppers, the bound and `closed_`.
/// A popper that finds the queue empty links a node on its own stack into `waiters_` and
/// sleeps on that node's condition variable; push() moves the element straight into the
/// oldest node and wakes only that thread. So waiting poppers are served strictly in arrival
/// order (nobody barges past them), a push wakes one thread, and nothing allocates after
/// construction. Invariant: elements are stored only while no popper waits.
/// `count_` mirrors the element count for lock-free size() and an early-out in try_pop().
/// A popper given a std::stop_token registers a std::stop_callback before it takes the lock
/// (the callback runs at once if a stop is already requested, and it takes the lock itself) and
/// destroys it after releasing the lock, so a stop never deadlocks with the popper it wakes.
///
/// T must be nothrow move-constructible, so that no element is lost or stranded half-way
/// through a hand-off. Every member may be called from any thread.
template <class T, QueueOrder Order = QueueOrder::fifo>
class BoundedBlockingQueue {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "BoundedBlockingQueue<T>: T must be nothrow move-constructible, because elements "
                  "are moved in and out of the queue under its lock and a throwing move would "
                  "lose an element or strand a waiting thread.");

public:
    /// Creates an empty queue holding at most `capacity` elements; allocates once, here.
    /// Throws std::invalid_argument if capacity is 0.
    explicit BoundedBlockingQueue(std::size_t capacity)
        : capacity_(checked_capacity(capacity)),
          ring_size_(capacity),
          ring_(std::make_unique<std::optional<T>[]>(capacity)) {}

    BoundedBlockingQueue(const BoundedBlockingQueue&) = delete;
    BoundedBlockingQueue& operator=(const BoundedBlockingQueue&) = delete;

    /// Destroys the queue; no thread may still be inside one of its members.
    ~BoundedBlockingQueue() = default;

    /// Adds `value`, blocking while the queue is full. Returns false (and leaves `value`
    /// untouched) if the queue is or becomes closed. Blocked pushers are not ordered among
    /// themselves (the pool never fills its queue, so it never blocks here).
    bool push(T&& value) { return push_impl(std::move(value), true); }
    /// Copying overload of push(T&&).
    bool push(const T& value) { return push_impl(T(value), true); }

    /// Adds `value` if there is room now; never blocks. Returns false if full or closed,
    /// leaving `value` untouched.
    bool try_push(T&& value) { return push_impl(std::move(value), false); }
    /// Copying overload of try_push(T&&).
    bool try_push(const T& value) { return push_impl(T(value), false); }

    /// Removes an element, blocking until one arrives. Returns std::nullopt only when the
    /// queue is closed and empty. Waiting poppers (of pop, pop_for and pop_until
    /// alike) are served in arrival order.
    std::optional<T> pop() { return pop_impl(std::nullopt, nullptr); }

    /// Like pop(), but also returns std::nullopt as soon as a stop is requested on `stop`
    /// (at once if it already was, unless an element is stored). A stopped popper takes nothing.
    std::optional<T> pop(std::stop_token stop) { return pop_impl(std::nullopt, &stop); }

    /// Removes an element if one is stored now; never blocks (and takes no lock when empty).
    std::optional<T> try_pop() {
        if (count_.load(std::memory_order_acquire) == 0) return std::nullopt;
        std::lock_guard lock(mutex_);
        if (count_.load(std::memory_order_relaxed) == 0) return std::nullopt;
        return take_locked();
    }

    /// Like pop(), but gives up after `timeout` and returns std::nullopt. A timeout too large
    /// for a steady_clock deadline waits forever; a zero or negative one (however large) still
    /// takes a stored element and never waits.
    template <class Rep, class Period>
    std::optional<T> pop_for(const std::chrono::duration<Rep, Period>& timeout) {
        return pop_impl(std::optional{detail::deadline_after(std::chrono::steady_clock::now(), timeout)}, nullptr);
    }

    /// Like pop_for(timeout), and also gives up as soon as a stop is requested on `stop`.
    template <class Rep, class Period>
    std::optional<T> pop_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token stop) {
        return pop_impl(std::optional{detail::deadline_after(std::chrono::steady_clock::now(), timeout)}, &stop);
    }

    /// Like pop(), but gives up at `deadline` (a steady_clock time) and returns std::nullopt.
    std::optional<T> pop_until(std::chrono::steady_clock::time_point deadline) {
        return pop_impl(std::optional{deadline}, nullptr);
    }

    /// Like pop_until(deadline), and also gives up as soon as a stop is requested on `stop`.
    std::optional<T> pop_until(std::chrono::steady_clock::time_point deadline, std::stop_token stop) {
        return pop_impl(std::optional{deadline}, &stop);
    }

    /// Closes the queue: pushes fail from now on, blocked poppers and pushers wake up.
    /// Elements already stored can still be popped. Idempotent.
    void close() {
        std::lock_guard lock(mutex_);
        if (closed_) return;
        closed_ = true;
        for (Waiter* w = waiters_head_; w != nullptr; w = w->next) w->cv.notify_one();
        not_full_.notify_all();
    }

    /// Returns whether close() has been called.
    [[nodiscard]] bool closed() const {
        std::lock_guard lock(mutex_);
        return closed_;
    }

    /// Returns the number of stored elements: a snapshot, possibly stale by the time it is read.
    [[nodiscard]] std::size_t size() const noexcept { return count_.load(std::memory_order_acquire); }

    /// Returns the maximum number of elements the queue stores.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_.load(std::memory_order_acquire); }

    /// Changes the bound to `capacity` (at least 1, else std::invalid_argument). Growing wakes
    /// blocked pushers and may allocate; shrinking below size() keeps every stored element, and
    /// pushes fail (or block) until there is room under the new bound.
    void set_capacity(std::size_t capacity) {
        checked_capacity(capacity);
        std::lock_guard lock(mutex_);
        if (capacity > ring_size_) {
            auto bigger = std::make_unique<std::optional<T>[]>(capacity);
            const std::size_t n = count_.load(std::memory_order_relaxed);
            for (std::size_t i = 0; i < n; ++i) {
                auto& cell = ring_[(head_ + i) % ring_size_];
                bigger[i].emplace(std::move(*cell));
                cell.reset();
            }
            ring_ = std::move(bigger);
            ring_size_ = capacity;
            head_ = 0;
        }
        capacity_.store(capacity, std::memory_order_release);
        not_full_.notify_all();
    }

    /// Removes every stored element for which `pred(const T&)` is true and returns them, oldest
    /// first; the others keep their order. Holds the lock throughout, so `pred` must be quick
    /// and must not call back into the queue. If `pred` throws, the queue is left unchanged.
    /// Allocates the returned vector.
    template <class Pred>
    std::vector<T> extract_if(Pred pred) {
        std::lock_guard lock(mutex_);
        const std::size_t n = count_.load(std::memory_order_relaxed);
        // Ask first, move afterwards: a throwing pred then leaves nothing half-moved.
        std::vector<bool> match(n);
        std::size_t matches = 0;
        for (std::size_t i = 0; i < n; ++i) {
            match[i] = static_cast<bool>(pred(std::as_const(*ring_[(head_ + i) % ring_size_])));
            matches += match[i] ? 1 : 0;
        }
        std::vector<T> taken;
        taken.reserve(matches);
        std::size_t kept = 0;
        for (std::size_t i = 0; i < n; ++i) {
            auto& cell = ring_[(head_ + i) % ring_size_];
            if (match[i]) {
                taken.push_back(std::move(*cell));
                cell.reset();
            } else {
                if (kept != i) {
                    ring_[(head_ + kept) % ring_size_].emplace(std::move(*cell));
                    cell.reset();
                }
                ++kept;
            }
        }
        count_.store(kept, std::memory_order_release);
        if (!taken.empty()) not_full_.notify_all();
        return taken;
    }

private:
    // A blocked popper, living on that popper's stack.
    struct Waiter {
        std::condition_variable cv;
        std::optional<T> item;
        Waiter* prev = nullptr;
        Waiter* next = nullptr;
        bool linked = false;
        bool stopped = false; // a stop was requested on the popper's token
    };

    // The stop_callback of a popper with a token: marks it stopped and wakes it, under the lock.
    struct Waker {
        BoundedBlockingQueue* queue;
        Waiter* waiter;
        void operator()() const noexcept {
            std::lock_guard lock(queue->mutex_);
            waiter->stopped = true;
            waiter->cv.notify_one();
        }
    };

    static std::size_t checked_capacity(std::size_t capacity) {
        if (capacity == 0) throw std::invalid_argument("BoundedBlockingQueue: capacity must be at least 1, got 0");
        return capacity;
    }

    bool push_impl(T&& value, bool block) {
        std::unique_lock lock(mutex_);
        if (block) {
            not_full_.wait(lock, [&] {
                return closed_ || count_.load(std::memory_order_relaxed) < capacity_.load(std::memory_order_relaxed);
            });
        }
        if (closed_) return false;
        if (count_.load(std::memory_order_relaxed) >= capacity_.load(std::memory_order_relaxed)) return false;
        deliver(lock, std::move(value));
        return true;
    }

    // Hands `value` to the oldest waiting popper, or stores it. Requires the lock and room.
    void deliver(std::unique_lock<std::mutex>&, T&& value) {
        if (Waiter* w = waiters_head_) {
            w->item.emplace(std::move(value));
            unlink(*w);
            // Notify while holding the lock: once it is released the waiter may return and
            // destroy its condition variable.
            w->cv.notify_one();
            return;
        }
        const std::size_t n = count_.load(std::memory_order_relaxed);
        ring_[(head_ + n) % ring_size_].emplace(std::move(value));
        count_.store(n + 1, std::memory_order_release);
    }

    // Takes the element pop() owes, per Order. Requires the lock and a non-empty queue.
    std::optional<T> take_locked() {
        const std::size_t n = count_.load(std::memory_order_relaxed);
        const std::size_t index = Order == QueueOrder::lifo ? (head_ + n - 1) % ring_size_ : head_;
        std::optional<T> out(std::move(*ring_[index]));
        ring_[index].reset();
        if constexpr (Order == QueueOrder::fifo) head_ = (head_ + 1) % ring_size_;
        count_.store(n - 1, std::memory_order_release);
        not_full_.notify_one();
        return out;
    }

    std::optional<T> pop_impl(std::optional<std::chrono::steady_clock::time_point> deadline,
                              const std::stop_token* stop) {
        if (stop == nullptr || !stop->stop_possible()) {
            std::unique_lock lock(mutex_);
            if (count_.load(std::memory_order_relaxed) > 0) return take_locked();
            if (closed_) return std::nullopt;
            Waiter self;
            return wait_locked(lock, self, deadline);
        }
        Waiter self;
        // Registered before the lock is taken and destroyed after it is released: see Design.
        std::stop_callback<Waker> waker(*stop, Waker{this, &self});
        std::unique_lock lock(mutex_);
        if (count_.load(std::memory_order_relaxed) > 0) return take_locked();
        if (closed_ || self.stopped) return std::nullopt;
        std::optional<T> out = wait_locked(lock, self, deadline);
        lock.unlock();
        return out;
    }

    // Sleeps as `self` until an element is handed over, the queue closes, the deadline passes or
    // a stop is requested. Requires the lock and an empty queue.
    std::optional<T> wait_locked(std::unique_lock<std::mutex>& lock, Waiter& self,
                                 std::optional<std::chrono::steady_clock::time_point> deadline) {
        link(self);
        while (!self.item && !closed_ && !self.stopped) {
            if (!deadline) {
                self.cv.wait(lock);
            } else if (self.cv.wait_until(lock, *deadline) == std::cv_status::timeout) {
                break;
            }
        }
        if (self.linked) unlink(self);
        return std::move(self.item);
    }

    void link(Waiter& w) {
        w.prev = waiters_tail_;
        w.next = nullptr;
        if (waiters_tail_ != nullptr) {
            waiters_tail_->next = &w;
        } else {
            waiters_head_ = &w;
        }
        waiters_tail_ = &w;
        w.linked = true;
    }

    void unlink(Waiter& w) {
        (w.prev != nullptr ? w.prev->next : waiters_head_) = w.next;
        (w.next != nullptr ? w.next->prev : waiters_tail_) = w.prev;
        w.prev = w.next = nullptr;
        w.linked = false;
    }

    std::atomic<std::size_t> capacity_;        // the bound; written under mutex_
    std::size_t ring_size_;                    // guarded by mutex_; at least capacity_ and count_
    mutable std::mutex mutex_;
    std::condition_variable not_full_; // pushers blocked on a full queue
    std::unique_ptr<std::optional<T>[]> ring_; // guarded by mutex_
    std::size_t head_ = 0;                     // guarded by mutex_
    std::atomic<std::size_t> count_{0};        // written under mutex_, read anywhere
    Waiter* waiters_head_ = nullptr;           // guarded by mutex_; oldest first
    Waiter* waiters_tail_ = nullptr;           // guarded by mutex_
    bool closed_ = false;                      // guarded by mutex_
};

} // namespace connpool
