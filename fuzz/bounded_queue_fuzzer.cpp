// Model-based fuzz target for BoundedBlockingQueue (FIFO and LIFO): random operation
// sequences on one thread, each result compared with QueueModel after every step.
//
// Input: a set-up (order, capacity 1..64), then operations (see kOperations); read back to
// front, as FuzzedDataProvider hands out integers. fuzz/README.md says how to run it.
//
// A single thread must never block, so blocking members are called only when the model
// says they return at once (an element is stored, the queue is closed, or the timeout is
// zero, negative or tiny); otherwise the step is recorded as skipped.

#include "bounded_queue_model.hpp"
#include "support/check.hpp"
#include "support/operations.hpp"
#include "support/timeouts.hpp"
#include "support/tracked.hpp"

#include <connpool/bounded_queue.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <sys/prctl.h> // PR_SET_TIMERSLACK: tiny timeouts cost a microsecond, not 50

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio> // snprintf, for deadline labels
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <vector>

namespace connpool::fuzz {
namespace {

Trace trace;

// Members issue 7 adds to the queue; detected, so that this target builds (and skips those
// operations) with the queue from before them.
template <class Queue>
concept HasSetCapacity = requires(Queue& q, std::size_t n) { q.set_capacity(n); };
template <class Queue>
concept HasStoppablePops = requires(Queue& q, std::stop_token stop) {
    q.pop(stop);
    q.pop_for(std::chrono::nanoseconds{}, stop);
    q.pop_until(std::chrono::steady_clock::time_point{}, stop);
};

// Thrown by the predicate of extract_if_throwing, partway through the elements.
struct PredicateThrew {};

template <QueueOrder Order>
class QueueHarness {
public:
    using Queue = BoundedBlockingQueue<Tracked, Order>;

    QueueHarness(FuzzedDataProvider& input, std::size_t capacity)
        : input_(input), queue_(capacity), model_(capacity) {}

    // ---- operations: each decodes its arguments, runs on queue and model, compares ----

    void push() {
        Tracked value(next_id_++);
        trace.step("push(#%llu)", id_of(value));
        if (!model_.push_returns_at_once()) {
            trace.result(" skipped: full, would block");
            return;
        }
        check_push(value, queue_.push(std::move(value)));
    }

    void try_push() {
        Tracked value(next_id_++);
        trace.step("try_push(#%llu)", id_of(value));
        check_push(value, queue_.try_push(std::move(value)));
    }

    void try_pop() {
        trace.step("try_pop()");
        check_pop(queue_.try_pop(), model_.pop());
    }

    void pop() {
        trace.step("pop()");
        if (!model_.pop_returns_at_once()) {
            trace.result(" skipped: empty and open, would block");
            return;
        }
        check_pop(queue_.pop(), model_.pop());
    }

    void pop_for() {
        with_timeout(input_, [&](auto timeout, const TimeoutLabel& label) {
            trace.step("pop_for(%s)", label.text);
            if (!model_.pop_returns_at_once() && !ends_at_once(timeout)) {
                trace.result(" skipped: empty and open, would wait");
                return;
            }
            check_pop(queue_.pop_for(timeout), model_.pop());
        });
    }

    void pop_until() {
        const Deadline deadline = decode_deadline();
        trace.step("pop_until(%s)", deadline.label);
        if (!model_.pop_returns_at_once() && !deadline.ends_at_once) {
            trace.result(" skipped: empty and open, would wait");
            return;
        }
        check_pop(queue_.pop_until(deadline.at), model_.pop());
    }

    void close() {
        trace.step("close()");
        queue_.close();
        model_.close();
    }

    void extract_if() {
        const auto mask = input_.ConsumeIntegral<std::uint8_t>();
        trace.step("extract_if(id %% 8 in mask 0x%02x)", mask);
        auto selected = [mask](std::uint64_t id) { return ((mask >> (id % 8)) & 1U) != 0; };
        std::vector<Tracked> taken = queue_.extract_if([&](const Tracked& t) { return selected(t.id()); });
        check_extracted(taken, model_.extract_if(selected));
    }

    void extract_if_throwing() {
        const auto mask = input_.ConsumeIntegral<std::uint8_t>();
        const auto throw_at = input_.ConsumeIntegralInRange<std::size_t>(0, 64);
        trace.step("extract_if(id %% 8 in mask 0x%02x, throws on call %zu)", mask, throw_at);
        auto selected = [mask](std::uint64_t id) { return ((mask >> (id % 8)) & 1U) != 0; };
        std::size_t calls = 0;
        bool threw = false;
        std::vector<Tracked> taken;
        try {
            taken = queue_.extract_if([&](const Tracked& t) {
                if (calls++ == throw_at) throw PredicateThrew{};
                return selected(t.id());
            });
        } catch (const PredicateThrew&) {
            threw = true;
        }
        if (throw_at < model_.size()) {
            // Every element must be asked about, so the throw must have happened; then
            // nothing may have moved (after_step checks the contents).
            CONNPOOL_FUZZ_CHECK(trace, threw, "a predicate throwing on call %zu of %zu did not propagate",
                                throw_at, model_.size());
            CONNPOOL_FUZZ_CHECK(trace, taken.empty(), "extract_if returned elements although it threw");
            trace.result(" -> threw");
            return;
        }
        CONNPOOL_FUZZ_CHECK(trace, !threw, "threw on call %zu with only %zu elements", throw_at, model_.size());
        check_extracted(taken, model_.extract_if(selected));
    }

    void set_capacity() {
        const auto capacity = input_.ConsumeIntegralInRange<std::size_t>(0, 64);
        trace.step("set_capacity(%zu)", capacity);
        if constexpr (!HasSetCapacity<Queue>) {
            trace.result(" skipped: this queue has no set_capacity");
        } else if (capacity == 0) {
            bool threw = false;
            try {
                queue_.set_capacity(0);
            } catch (const std::invalid_argument&) {
                threw = true;
            }
            CONNPOOL_FUZZ_CHECK(trace, threw, "set_capacity(0) did not throw std::invalid_argument");
        } else {
            queue_.set_capacity(capacity);
            model_.set_capacity(capacity);
        }
    }

    // pop(stop), pop_for(timeout, stop) or pop_until(deadline, stop), with a stop already
    // requested (returns at once: a stored element, else nothing, whatever the timeout), a
    // token that could be stopped but is not, or a default token (no stop possible).
    void pop_stoppable() {
        const int flavour = input_.ConsumeIntegralInRange<int>(0, 2);
        const int token = input_.ConsumeIntegralInRange<int>(0, 2);
        static constexpr const char* kTokens[] = {"stopped", "not stopped", "default"};
        if constexpr (!HasStoppablePops<Queue>) {
            trace.step("pop with a %s stop_token", kTokens[token]);
            trace.result(" skipped: this queue has no stoppable pops");
        } else {
            std::stop_source source;
            if (token == 0) source.request_stop();
            const std::stop_token stop = token == 2 ? std::stop_token{} : source.get_token();
            const bool stopped = token == 0;
            auto run = [&](const char* what, const char* argument, bool ends_at_once, auto pop) {
                trace.step("%s(%s%s%s stop_token)", what, argument, argument[0] != '\0' ? ", " : "",
                           kTokens[token]);
                if (!stopped && !model_.pop_returns_at_once() && !ends_at_once) {
                    trace.result(" skipped: empty and open, would wait");
                    return;
                }
                check_pop(pop(), model_.pop());
            };
            if (flavour == 0) {
                run("pop", "", false, [&] { return queue_.pop(stop); });
            } else if (flavour == 1) {
                with_timeout(input_, [&](auto timeout, const TimeoutLabel& label) {
                    run("pop_for", label.text, ends_at_once(timeout), [&] { return queue_.pop_for(timeout, stop); });
                });
            } else {
                const Deadline deadline = decode_deadline();
                run("pop_until", deadline.label, deadline.ends_at_once,
                    [&] { return queue_.pop_until(deadline.at, stop); });
            }
        }
    }

    void observe() {
        trace.step("size() capacity() closed()");
        trace.result(" -> %zu %zu %d", queue_.size(), queue_.capacity(), queue_.closed() ? 1 : 0);
    }

    static constexpr std::array<Operation<QueueHarness>, 12> kOperations{{
        {"push", &QueueHarness::push},                               // 0
        {"try_push", &QueueHarness::try_push},                       // 1
        {"try_pop", &QueueHarness::try_pop},                         // 2
        {"pop", &QueueHarness::pop},                                 // 3
        {"pop_for", &QueueHarness::pop_for},                         // 4
        {"pop_until", &QueueHarness::pop_until},                     // 5
        {"close", &QueueHarness::close},                             // 6
        {"extract_if", &QueueHarness::extract_if},                   // 7
        {"extract_if_throwing", &QueueHarness::extract_if_throwing}, // 8
        {"observe", &QueueHarness::observe},                         // 9
        {"set_capacity", &QueueHarness::set_capacity},               // 10
        {"pop_stoppable", &QueueHarness::pop_stoppable},             // 11
        // Append new operations here: the opcodes above keep their meaning, and so does
        // the committed corpus.
    }};

    // ---- checks after every step ---------------------------------------------------

    void after_step() {
        CONNPOOL_FUZZ_CHECK(trace, queue_.size() == model_.size(), "size() is %zu, the model holds %zu",
                            queue_.size(), model_.size());
        CONNPOOL_FUZZ_CHECK(trace, queue_.capacity() == model_.capacity(), "capacity() is %zu, not %zu",
                            queue_.capacity(), model_.capacity());
        CONNPOOL_FUZZ_CHECK(trace, queue_.closed() == model_.closed(), "closed() is %d, the model says %d",
                            queue_.closed() ? 1 : 0, model_.closed() ? 1 : 0);
        // Every element exists once, in the queue: none lost, none duplicated, none leaked.
        CONNPOOL_FUZZ_CHECK(trace, Tracked::live() == static_cast<long>(model_.size()),
                            "%ld elements exist, the model holds %zu", Tracked::live(), model_.size());
        // The stored ids, seen through a predicate that selects nothing (so the queue is not
        // changed); compared as a set, since the order of the calls is not promised.
        seen_.clear();
        bool all_intact = true;
        const std::vector<Tracked> none = queue_.extract_if([&](const Tracked& t) {
            all_intact = all_intact && t.intact();
            seen_.push_back(t.id());
            return false;
        });
        CONNPOOL_FUZZ_CHECK(trace, none.empty(), "extract_if with a predicate that is always false returned %zu",
                            none.size());
        CONNPOOL_FUZZ_CHECK(trace, all_intact, "a stored element is moved-from or its payload is wrong");
        expected_.assign(model_.ids().begin(), model_.ids().end());
        std::sort(seen_.begin(), seen_.end());
        std::sort(expected_.begin(), expected_.end());
        CONNPOOL_FUZZ_CHECK(trace, seen_ == expected_, "the queue stores other ids than the model (%zu vs %zu)",
                            seen_.size(), expected_.size());
    }

    // At the end of the input: everything still stored comes out in the model's order.
    void finish() {
        trace.step("drain with try_pop()");
        while (auto want = model_.pop()) check_pop(queue_.try_pop(), want);
        check_pop(queue_.try_pop(), std::nullopt);
        after_step();
    }

private:
    // A pop_until deadline decoded from the input: past, now, tiny, far or the extremes.
    struct Deadline {
        std::chrono::steady_clock::time_point at;
        bool ends_at_once; // within a microsecond from now (or earlier)
        char label[64];
    };

    Deadline decode_deadline() {
        using steady = std::chrono::steady_clock;
        using std::chrono::nanoseconds;
        const steady::time_point now = steady::now();
        const nanoseconds to_max = steady::time_point::max() - now;
        Deadline d{};
        auto relative = [&](std::int64_t offset) {
            d.at = now + nanoseconds(offset); // no overflow: offset is within [-max, max - now]
            std::snprintf(d.label, sizeof d.label, "now %+lldns", static_cast<long long>(offset));
        };
        switch (input_.ConsumeIntegralInRange<int>(0, 6)) {
        case 0: d.at = steady::time_point::min(); std::snprintf(d.label, sizeof d.label, "time_point::min()"); break;
        case 1: d.at = steady::time_point{}; std::snprintf(d.label, sizeof d.label, "the clock's epoch"); break;
        case 2: relative(-input_.ConsumeIntegralInRange<std::int64_t>(0, nanoseconds::max().count())); break;
        case 3: relative(0); break;
        case 4: relative(input_.ConsumeIntegralInRange<std::int64_t>(1, 1000)); break;
        case 5: d.at = steady::time_point::max(); std::snprintf(d.label, sizeof d.label, "time_point::max()"); break;
        default: relative(input_.ConsumeIntegralInRange<std::int64_t>(0, to_max.count())); break;
        }
        d.ends_at_once = d.at <= now + std::chrono::microseconds(1);
        return d;
    }

    static unsigned long long id_of(const Tracked& t) { return t.id(); }

    // `value` is the pushed variable after the call; `pushed` what the call returned.
    void check_push(const Tracked& value, bool pushed) {
        const std::uint64_t id = next_id_ - 1;
        const bool want = model_.push(id);
        trace.result(" -> %s", pushed ? "true" : "false");
        CONNPOOL_FUZZ_CHECK(trace, pushed == want, "returned %d, the model says %d (size %zu of %zu, %s)",
                            pushed ? 1 : 0, want ? 1 : 0, model_.size(), model_.capacity(),
                            model_.closed() ? "closed" : "open");
        if (pushed) {
            CONNPOOL_FUZZ_CHECK(trace, value.payload() == nullptr, "a successful push left the value in place");
        } else {
            CONNPOOL_FUZZ_CHECK(trace, value.intact() && value.id() == id,
                                "a failed push did not leave the value untouched (id %llu)", id_of(value));
        }
    }

    void check_pop(const std::optional<Tracked>& got, std::optional<std::uint64_t> want) {
        if (got) {
            trace.result(" -> #%llu", id_of(*got));
        } else {
            trace.result(" -> nothing");
        }
        if (!want) {
            CONNPOOL_FUZZ_CHECK(trace, !got, "returned #%llu, the model is empty (%s)", id_of(*got),
                                model_.closed() ? "closed" : "open");
            return;
        }
        CONNPOOL_FUZZ_CHECK(trace, got.has_value(), "returned nothing, the model says #%llu",
                            static_cast<unsigned long long>(*want));
        CONNPOOL_FUZZ_CHECK(trace, got->intact(), "returned a moved-from or corrupt element");
        CONNPOOL_FUZZ_CHECK(trace, got->id() == *want, "returned #%llu, %s order says #%llu", id_of(*got),
                            Order == QueueOrder::fifo ? "FIFO" : "LIFO", static_cast<unsigned long long>(*want));
    }

    void check_extracted(const std::vector<Tracked>& taken, const std::vector<std::uint64_t>& want) {
        trace.result(" -> %zu elements", taken.size());
        CONNPOOL_FUZZ_CHECK(trace, taken.size() == want.size(), "returned %zu elements, the model says %zu",
                            taken.size(), want.size());
        for (std::size_t i = 0; i < want.size(); ++i) {
            CONNPOOL_FUZZ_CHECK(trace, taken[i].intact() && taken[i].id() == want[i],
                                "element %zu is #%llu, oldest-first order says #%llu", i, id_of(taken[i]),
                                static_cast<unsigned long long>(want[i]));
        }
    }

    FuzzedDataProvider& input_;
    Queue queue_;
    QueueModel<Order> model_;
    std::uint64_t next_id_ = 0;
    std::vector<std::uint64_t> seen_;     // after_step's scratch space, kept to save allocations
    std::vector<std::uint64_t> expected_;
};

template <QueueOrder Order>
void run(FuzzedDataProvider& input, std::size_t capacity) {
    {
        QueueHarness<Order> harness(input, capacity);
        run_operations(harness, input, QueueHarness<Order>::kOperations);
        harness.finish();
    }
    CONNPOOL_FUZZ_CHECK(trace, Tracked::live() == 0, "%ld elements outlived the queue", Tracked::live());
}

} // namespace
} // namespace connpool::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // Timed waits that end within a microsecond are common here (pop_for with a tiny
    // timeout on an empty queue); Linux's default 50 us timer slack would make each of
    // them cost 50 us and the whole target several times slower.
    prctl(PR_SET_TIMERSLACK, 1UL);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace connpool::fuzz;
    FuzzedDataProvider input(data, size);
    const bool lifo = input.ConsumeBool();
    const auto capacity = input.ConsumeIntegralInRange<std::size_t>(1, 64);
    trace.begin("%s queue of capacity %zu, %zu bytes", lifo ? "LIFO" : "FIFO", capacity, size);
    if (lifo) {
        run<connpool::QueueOrder::lifo>(input, capacity);
    } else {
        run<connpool::QueueOrder::fifo>(input, capacity);
    }
    return 0;
}
