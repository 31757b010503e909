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
#include <optional>
#include <vector>

namespace connpool::fuzz {
namespace {

Trace trace;

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
        using steady = std::chrono::steady_clock;
        using std::chrono::nanoseconds;
        const steady::time_point now = steady::now();
        const nanoseconds to_max = steady::time_point::max() - now;
        steady::time_point deadline;
        const char* label = "";     // an absolute deadline's name
        bool relative = false;      // deadline is now + offset
        long long offset = 0;       // in ns
        switch (input_.ConsumeIntegralInRange<int>(0, 6)) {
        case 0: label = "time_point::min()"; deadline = steady::time_point::min(); break;
        case 1: label = "the clock's epoch"; deadline = steady::time_point{}; break;
        case 2: relative = true; offset = -input_.ConsumeIntegralInRange<std::int64_t>(0, nanoseconds::max().count()); break;
        case 3: relative = true; break;
        case 4: relative = true; offset = input_.ConsumeIntegralInRange<std::int64_t>(1, 1000); break;
        case 5: label = "time_point::max()"; deadline = steady::time_point::max(); break;
        default: relative = true; offset = input_.ConsumeIntegralInRange<std::int64_t>(0, to_max.count()); break;
        }
        if (relative) deadline = now + nanoseconds(offset);
        if (relative) {
            trace.step("pop_until(now %+lldns)", offset);
        } else {
            trace.step("pop_until(%s)", label);
        }
        if (!model_.pop_returns_at_once() && deadline > now + std::chrono::microseconds(1)) {
            trace.result(" skipped: empty and open, would wait");
            return;
        }
        check_pop(queue_.pop_until(deadline), model_.pop());
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

    void observe() {
        trace.step("size() capacity() closed()");
        trace.result(" -> %zu %zu %d", queue_.size(), queue_.capacity(), queue_.closed() ? 1 : 0);
    }

    static constexpr std::array<Operation<QueueHarness>, 10> kOperations{{
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
        // Append new operations here (pop_until with a stop_token, set_capacity): the
        // opcodes above keep their meaning, and so does the committed corpus.
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
