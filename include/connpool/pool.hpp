#pragma once

// Pool<Conn, Factory>: the facade. How it works is in detail/pool_core.hpp (the design note),
// built from detail/slot.hpp (the state machine), slot_table.hpp, thread_cache.hpp,
// pool_params.hpp (options and back-off) and diagnostics.hpp (the timeout report).

#include <chrono>
#include <cstddef>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "detail/clock.hpp"
#include "detail/pool_core.hpp"
#include "detail/source_location.hpp"
#include "errors.hpp"
#include "factory.hpp"
#include "lease.hpp"
#include "pool_options.hpp"

namespace connpool {

/// A thread-safe pool of connections made by `Factory`, handed out as RAII Lease<Conn>s.
///
/// Every member may be called from any thread. Destroying the pool closes it; leases still out
/// stay usable and destroy their connections when they come back. `Clock` times idle timeouts,
/// lifetimes, leaks and hold times (tests inject a manual one); waits always use steady_clock.
/// Connections are created on background creator threads (at most max_concurrent_creates), so
/// no acquire waits past its deadline for a slow create().
template <class Conn, class Factory, class Clock = detail::coarse_clock>
class Pool {
    static_assert(std::is_move_constructible_v<Conn>,
                  "connpool::Pool<Conn, Factory>: Conn must be move-constructible, because the "
                  "pool moves each new connection from create() into its slot.");
    static_assert(detail::check_factory<Factory, Conn>());

public:
    /// The type of the connections this pool hands out (what a Lease<Conn> holds).
    using connection_type = Conn;
    /// The factory type that creates them.
    using factory_type = Factory;

    /// Creates a pool that makes connections with `factory`. Creates none yet (min_idle ones
    /// come from the maintenance thread). Throws std::invalid_argument for invalid options.
    explicit Pool(Factory factory, PoolOptions options = {})
        : core_(new detail::PoolCore<Conn, Factory, Clock>(std::move(factory), std::move(options))) {}

    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    /// Closes the pool (see close()); leases still out keep what they need alive.
    ~Pool() {
        core_->close();
        core_->release_pool_reference();
    }

    /// Returns a lease on a connection, waiting up to options().acquire_timeout. Throws
    /// AcquireTimeout at the deadline, PoolClosed if the pool is or gets closed. Records the
    /// call site for leak and timeout reports. Does not allocate once the pool is warm.
    [[nodiscard]] Lease<Conn> acquire(source_location loc = source_location::current()) {
        return core_->acquire(core_->options().acquire_timeout, nullptr, loc);
    }

    /// Like acquire(), and a stop request on `stop` wakes the waiter at once with
    /// AcquireCancelled (a connection that is ready at once is still handed out).
    [[nodiscard]] Lease<Conn> acquire(std::stop_token stop, source_location loc = source_location::current()) {
        return core_->acquire(core_->options().acquire_timeout, &stop, loc);
    }

    /// Like acquire(), with its own deadline `timeout` from now (zero or negative: no wait;
    /// too large to add to a clock: forever).
    [[nodiscard]] Lease<Conn> acquire_for(std::chrono::milliseconds timeout,
                                          source_location loc = source_location::current()) {
        return core_->acquire(timeout, nullptr, loc);
    }

    /// Like acquire_for(timeout), and a stop request on `stop` wakes the waiter at once with
    /// AcquireCancelled.
    [[nodiscard]] Lease<Conn> acquire_for(std::chrono::milliseconds timeout, std::stop_token stop,
                                          source_location loc = source_location::current()) {
        return core_->acquire(timeout, &stop, loc);
    }

    /// Returns a lease on an idle connection if one is ready now, else std::nullopt (also while
    /// paused). Never blocks: it neither waits, nor creates, nor spins on another thread's
    /// progress. Throws PoolClosed after close().
    [[nodiscard]] std::optional<Lease<Conn>> try_acquire(source_location loc = source_location::current()) {
        return core_->try_acquire(loc);
    }

    /// Changes max_size at run time (1 to 1048576, at least min_idle; else std::invalid_argument).
    /// Growing serves waiters at once; shrinking destroys surplus idle connections now and
    /// surplus leased ones when they come back. It never takes a connection from a lease.
    void resize(std::size_t max_size) { core_->resize(max_size); }

    /// Suspends hand-outs (HikariCP's suspend): acquires wait (and time out as usual),
    /// try_acquire returns nothing, leases keep working and their connections stay idle.
    /// Idempotent; acquires that got a connection before it returned may still complete.
    void pause() { core_->pause(); }

    /// Ends a pause(): waiting acquires are served. Idempotent.
    void resume() { core_->resume(); }

    /// Returns whether the pool is paused.
    [[nodiscard]] bool paused() const noexcept { return core_->paused(); }

    /// Replaces every connection (failover, DNS change, credential rotation): idle ones are
    /// destroyed now, leased ones when they come back, ones being created when they are ready.
    /// New ones are created as acquires need them.
    void retire_all() { core_->retire_all(); }

    /// Returns a snapshot of the pool's gauges, counters and acquire-wait percentiles.
    [[nodiscard]] PoolStats stats() const { return core_->stats(); }

    /// Closes the pool: acquires throw PoolClosed from now on (waiters wake with it), idle
    /// connections are destroyed, outstanding leases stay usable and their connections are
    /// destroyed when they come back; the maintenance and creator threads stop (it waits for a
    /// create() in flight). Idempotent, and safe to call from several threads at once.
    void close() { core_->close(); }

    /// Returns whether close() has been called.
    [[nodiscard]] bool closed() const noexcept { return core_->closed(); }

    /// Runs one maintenance pass now (retire expired and long-idle connections, report leaks,
    /// top up min_idle on this thread) and returns how many connections it retired. The
    /// maintenance thread calls it every maintenance_interval; call it yourself when that is 0.
    std::size_t maintain() { return core_->maintain(); }

    /// Returns the options the pool was built with (stats().max_size has the current size).
    [[nodiscard]] const PoolOptions& options() const noexcept { return core_->options(); }

    /// Returns the factory the pool creates its connections with (for an operation that needs
    /// a connection of its own beside the pool's, e.g. one that kills a running statement).
    /// The factory must be safe to use from several threads while the pool runs.
    [[nodiscard]] const Factory& factory() const noexcept { return core_->factory(); }

private:
    detail::PoolCore<Conn, Factory, Clock>* core_; // deleted by its last reference
};

/// Deduces Pool<Conn, Factory> from the factory: `connpool::Pool pool{factory, options};`
template <class Factory>
Pool(Factory, PoolOptions) -> Pool<detail::connection_t<Factory>, Factory>;

/// Deduces Pool<Conn, Factory> from the factory alone: `connpool::Pool pool{factory};`
template <class Factory>
Pool(Factory) -> Pool<detail::connection_t<Factory>, Factory>;

} // namespace connpool
