#pragma once

// The runner's queue of jobs waiting for a lease. Intrusive, so that a job cancelled while
// queued leaves it at once, in O(1) and without allocating: the job itself tells the queue's
// owner (QueueWithdrawal), which then knows how many queued jobs still need a lease and can
// call off the acquires it no longer needs.

#include <cstddef>
#include <memory>
#include <utility>

namespace connpool::detail {

/// Where a node sits in an IntrusiveQueue. Guarded by the queue owner's mutex, not the node's.
template <class Node>
struct QueueLink {
    Node* prev = nullptr;
    Node* next = nullptr;
    std::shared_ptr<Node> self; // the queue's reference: set while linked, so a queued node lives
};

/// Told that a queued node is being cancelled, so that it leaves the queue before anyone else
/// can take it. Called with the node's own lock held; the implementation may take its own
/// lock (the order is always node, then queue owner).
template <class Node>
class QueueWithdrawal {
public:
    /// Removes `node` from the queue if it is still there; does nothing otherwise.
    virtual void withdraw(Node& node) noexcept = 0;

protected:
    // Virtual, though nobody deletes through this base: JobRunner derives from it, and a
    // class with virtual functions and a non-virtual destructor is one clang warns about
    // whenever a user deletes it (std::unique_ptr, std::optional).
    virtual ~QueueWithdrawal() = default;
};

/// A FIFO of Nodes linked through `Node::queue_link()`, holding a reference to each. Not
/// thread-safe: its owner's mutex guards it. Never allocates; every operation is O(1).
template <class Node>
class IntrusiveQueue {
public:
    IntrusiveQueue() = default;
    IntrusiveQueue(const IntrusiveQueue&) = delete;
    IntrusiveQueue& operator=(const IntrusiveQueue&) = delete;
    ~IntrusiveQueue() {
        while (!empty()) static_cast<void>(pop_front());
    }

    /// Appends `node`, which must not be in a queue.
    void push_back(std::shared_ptr<Node> node) noexcept {
        Node* raw = node.get();
        QueueLink<Node>& link = raw->queue_link();
        link.prev = tail_;
        link.next = nullptr;
        link.self = std::move(node);
        if (tail_ != nullptr) {
            tail_->queue_link().next = raw;
        } else {
            head_ = raw;
        }
        tail_ = raw;
        ++size_;
    }

    /// Removes and returns the oldest node, or nullptr when empty.
    [[nodiscard]] std::shared_ptr<Node> pop_front() noexcept {
        if (head_ == nullptr) return nullptr;
        return remove(*head_);
    }

    /// Removes `node`, which must be in this queue, and returns the queue's reference to it.
    std::shared_ptr<Node> remove(Node& node) noexcept {
        QueueLink<Node>& link = node.queue_link();
        if (link.prev != nullptr) {
            link.prev->queue_link().next = link.next;
        } else {
            head_ = link.next;
        }
        if (link.next != nullptr) {
            link.next->queue_link().prev = link.prev;
        } else {
            tail_ = link.prev;
        }
        link.prev = link.next = nullptr;
        --size_;
        return std::move(link.self);
    }

    /// Returns whether `node` is in a queue (this one, as a node is only ever in its runner's).
    [[nodiscard]] static bool contains(Node& node) noexcept { return node.queue_link().self != nullptr; }

    /// Calls `f(node)` for every node, oldest first; `f` must not change the queue.
    template <class F>
    void for_each(F f) const {
        for (Node* n = head_; n != nullptr; n = n->queue_link().next) f(*n);
    }

    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

private:
    Node* head_ = nullptr;
    Node* tail_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace connpool::detail
